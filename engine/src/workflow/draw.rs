//! Random parameter values drawn per instance: `${draw.NAME.FN(ARGS)}`.
//!
//! A study that randomises its inputs (one setting per replicate, drawn from a range) writes
//! `${draw.NAME.uniform(1.5, 5.0)}` where a value goes. The value is a pure function of the
//! workflow seed, the draw's `NAME` and the instance's coordinates (sweep axes and replicate
//! indices), so it is the same on every run and on resume, and two nodes of the same replicate
//! that draw the same `NAME` get the same value (two views of one replicate share a setting).
//! Different names give independent values.
//!
//! | function | value |
//! |---|---|
//! | `uniform(LO, HI)` | a number in `[LO, HI)` |
//! | `loguniform(LO, HI)` | a number in `[LO, HI)`, uniform in log (LO, HI > 0) |
//! | `int(LO, HI)` | an integer in `[LO, HI]` |
//! | `choice(A, B, ...)` | one of the items: numbers, `true`/`false`, `"quoted"` or bare text |
//!
//! Numbers are rounded to 6 significant digits so that plans and cache keys stay readable.

use serde_json::Value;

/// What a draw is keyed by besides its text: the workflow seed and the instance's coordinates.
pub struct DrawContext<'a> {
    /// The workflow's seed (after `--set seed=...`).
    pub workflow_seed: u64,
    /// The instance's coordinates, `(axis, value)`: sweep axes and `repeat.NODE` indices.
    pub coords: &'a [(String, Value)],
}

/// Evaluate `expr`, the text after `draw.` (e.g. `rate.uniform(1.5, 5)`).
pub fn evaluate(expr: &str, ctx: &DrawContext) -> Result<Value, String> {
    let usage = "use draw.NAME.uniform(LO, HI), draw.NAME.loguniform(LO, HI), \
                 draw.NAME.int(LO, HI) or draw.NAME.choice(A, B, ...)";
    let (name, call) = expr
        .split_once('.')
        .ok_or_else(|| format!("`${{draw.{expr}}}`: a draw needs a name; {usage}"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`${{draw.{expr}}}`: the draw's name `{name}` must be letters, digits, `_` or `-`"
        ));
    }
    let open = call
        .find('(')
        .filter(|_| call.ends_with(')'))
        .ok_or_else(|| format!("`${{draw.{expr}}}`: expected FN(ARGS); {usage}"))?;
    let func = call[..open].trim();
    let args: Vec<&str> = call[open + 1..call.len() - 1]
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let u = unit(ctx, name);
    let numbers = || -> Result<(f64, f64), String> {
        let parse = |a: &str| {
            a.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("`${{draw.{expr}}}`: `{a}` is not a finite number"))
        };
        match args.as_slice() {
            [lo, hi] => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(format!("`${{draw.{expr}}}`: LO {lo} is above HI {hi}"));
                }
                Ok((lo, hi))
            }
            _ => Err(format!(
                "`${{draw.{expr}}}`: {func} takes two numbers, LO and HI (got {})",
                args.len()
            )),
        }
    };
    match func {
        "uniform" => {
            let (lo, hi) = numbers()?;
            Ok(number(lo + (hi - lo) * u))
        }
        "loguniform" => {
            let (lo, hi) = numbers()?;
            if lo <= 0.0 {
                return Err(format!("`${{draw.{expr}}}`: loguniform needs LO > 0"));
            }
            Ok(number((lo.ln() + (hi.ln() - lo.ln()) * u).exp()))
        }
        "int" => {
            let (lo, hi) = numbers()?;
            if lo.fract() != 0.0 || hi.fract() != 0.0 || hi - lo > 1e15 {
                return Err(format!(
                    "`${{draw.{expr}}}`: int takes whole numbers LO and HI"
                ));
            }
            let n = (hi - lo + 1.0) as u64;
            Ok(Value::from(
                lo as i64 + ((u * n as f64) as u64).min(n - 1) as i64,
            ))
        }
        "choice" => {
            if args.is_empty() {
                return Err(format!(
                    "`${{draw.{expr}}}`: choice needs at least one item"
                ));
            }
            let i = ((u * args.len() as f64) as usize).min(args.len() - 1);
            Ok(item(args[i]))
        }
        other => Err(format!(
            "`${{draw.{expr}}}`: unknown function `{other}`; {usage}"
        )),
    }
}

/// A number in [0, 1) from the workflow seed, the draw's name and the coordinates.
fn unit(ctx: &DrawContext, name: &str) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(b"tomoflow.draw.v1\0");
    h.update(&ctx.workflow_seed.to_le_bytes());
    h.update(name.as_bytes());
    let mut coords: Vec<&(String, Value)> = ctx.coords.iter().collect();
    coords.sort_by(|a, b| a.0.cmp(&b.0));
    for (a, v) in coords {
        h.update(b"\0");
        h.update(a.as_bytes());
        h.update(b"=");
        h.update(v.to_string().as_bytes());
    }
    let bits = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// `x` rounded to 6 significant digits, as an integer when it is whole.
fn number(x: f64) -> Value {
    let r: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    if r.fract() == 0.0 && r.abs() < 1e15 {
        Value::from(r as i64)
    } else {
        Value::from(r)
    }
}

/// A `choice` item: JSON where it parses (numbers, booleans, quoted text), else bare text.
fn item(a: &str) -> Value {
    serde_json::from_str::<Value>(a).unwrap_or_else(|_| Value::String(a.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coords(rep: i64) -> Vec<(String, Value)> {
        vec![("rep".to_string(), Value::from(rep))]
    }

    fn draw(expr: &str, seed: u64, rep: i64) -> Result<Value, String> {
        evaluate(
            expr,
            &DrawContext {
                workflow_seed: seed,
                coords: &coords(rep),
            },
        )
    }

    #[test]
    fn values_are_in_range_and_cover_it() {
        let xs: Vec<f64> = (0..400)
            .map(|r| draw("d.uniform(1.5, 5)", 7, r).unwrap().as_f64().unwrap())
            .collect();
        assert!(xs.iter().all(|&x| (1.5..5.0).contains(&x)), "{xs:?}");
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 3.25).abs() < 0.15, "mean {mean}");
        assert!(xs.iter().any(|&x| x < 1.7) && xs.iter().any(|&x| x > 4.8));
        let ints: Vec<i64> = (0..200)
            .map(|r| draw("n.int(3, 5)", 7, r).unwrap().as_i64().unwrap())
            .collect();
        for k in 3..=5 {
            assert!(ints.contains(&k), "{k} never drawn");
        }
        assert!(ints.iter().all(|k| (3..=5).contains(k)));
        let logs: Vec<f64> = (0..400)
            .map(|r| {
                draw("s.loguniform(0.1, 10)", 7, r)
                    .unwrap()
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let below_one = logs.iter().filter(|&&x| x < 1.0).count();
        assert!(
            (150..250).contains(&below_one),
            "{below_one} of 400 below 1"
        );
    }

    #[test]
    fn same_name_and_coordinates_give_the_same_value_others_differ() {
        let a = draw("defocus.uniform(1, 6)", 3, 0).unwrap();
        assert_eq!(a, draw("defocus.uniform(1, 6)", 3, 0).unwrap());
        assert_ne!(a, draw("defocus.uniform(1, 6)", 3, 1).unwrap());
        assert_ne!(a, draw("defocus.uniform(1, 6)", 4, 0).unwrap());
        assert_ne!(a, draw("dose.uniform(1, 6)", 3, 0).unwrap());
        // The coordinates' order does not matter.
        let c1 = vec![
            ("a".to_string(), Value::from(1)),
            ("b".to_string(), Value::from("x")),
        ];
        let c2 = vec![c1[1].clone(), c1[0].clone()];
        let e = |c: &[(String, Value)]| {
            evaluate(
                "x.uniform(0, 1)",
                &DrawContext {
                    workflow_seed: 1,
                    coords: c,
                },
            )
            .unwrap()
        };
        assert_eq!(e(&c1), e(&c2));
    }

    #[test]
    fn choice_items_keep_their_types() {
        let mut seen = std::collections::BTreeSet::new();
        for r in 0..100 {
            seen.insert(
                draw("m.choice(1.5, true, \"q\", tilt-multislice)", 1, r)
                    .unwrap()
                    .to_string(),
            );
        }
        let want: std::collections::BTreeSet<String> =
            ["1.5", "true", "\"q\"", "\"tilt-multislice\""]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_workflow_draws_per_replicate_and_shares_a_name_across_nodes() {
        let text = r#"
version: 1
name: t
params: {seed: 5}
sweep:
  matrix:
    rep: [0, 1, 2, 3]
nodes:
  sample:
    plugin: phantom
    params: {shape: [4, 4, 4], tag: "${sweep.rep}"}
  clean:
    plugin: "${draw.physics.choice(tilt-a, tilt-b)}"
    inputs: {volume: sample.volume}
    params: {defocus: "${draw.defocus.uniform(1.5, 5)}", n: "${draw.n.int(1, 3)}"}
  noisy:
    plugin: "${draw.physics.choice(tilt-a, tilt-b)}"
    inputs: {volume: sample.volume}
    params: {defocus: "${draw.defocus.uniform(1.5, 5)}", label: "d=${draw.defocus.uniform(1.5, 5)}"}
"#;
        let w = crate::workflow::Workflow::parse(text, std::path::Path::new("wf.yaml")).unwrap();
        let e = crate::workflow::expand(&w, &[]).unwrap();
        let of = |node: &str| -> Vec<&crate::workflow::Instance> {
            e.instances.iter().filter(|i| i.node == node).collect()
        };
        let (clean, noisy) = (of("clean"), of("noisy"));
        assert_eq!(clean.len(), 4);
        let mut values = Vec::new();
        for (c, n) in clean.iter().zip(&noisy) {
            assert_eq!(c.coords, n.coords);
            assert_eq!(
                c.params["defocus"], n.params["defocus"],
                "one draw per replicate"
            );
            assert_eq!(c.node_type, n.node_type);
            let d = c.params["defocus"].as_f64().unwrap();
            assert!((1.5..5.0).contains(&d));
            assert_eq!(n.params["label"], format!("d={d}"));
            values.push(d);
        }
        values.dedup();
        assert_eq!(values.len(), 4, "each replicate draws its own value");
        // The same seed gives the same plan; another seed another one.
        let again = crate::workflow::expand(&w, &[]).unwrap();
        assert_eq!(again.instances[5].params, e.instances[5].params);
        let other = crate::workflow::expand(&w, &[("seed".into(), serde_json::json!(6))]).unwrap();
        let d = |x: &crate::workflow::Expanded| -> Vec<serde_json::Value> {
            x.instances
                .iter()
                .filter(|i| i.node == "clean")
                .map(|i| i.params["defocus"].clone())
                .collect()
        };
        assert_ne!(d(&other), d(&e));
    }

    #[test]
    fn mistakes_are_explained() {
        for (expr, want) in [
            ("uniform(1, 2)", "needs a name"),
            ("d.uniform(2, 1)", "above HI"),
            ("d.uniform(1)", "takes two numbers"),
            ("d.uniform(1, x)", "not a finite number"),
            ("d.gauss(1, 2)", "unknown function `gauss`"),
            ("d.loguniform(0, 2)", "LO > 0"),
            ("d.int(1.5, 3)", "whole numbers"),
            ("d.choice()", "at least one item"),
            ("d.uniform", "expected FN(ARGS)"),
        ] {
            let e = draw(expr, 1, 0).unwrap_err();
            assert!(e.contains(want), "{expr}: {e}");
        }
    }
}
