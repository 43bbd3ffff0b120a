//! A reader for STAR files as RELION, Warp and cryoCAT write them: `data_` blocks holding
//! `_name value` pairs and `loop_` tables. Errors name the file, the line and what was expected.

use anyhow::{bail, Result};

/// One `loop_` table: column names (without the leading `_`) and rows of raw tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StarLoop {
    /// Column names in order, e.g. `rlnCoordinateX`.
    pub columns: Vec<String>,
    /// Rows; every row has one token per column.
    pub rows: Vec<Vec<String>>,
}

impl StarLoop {
    /// Index of a column by name (with or without the leading `_`).
    pub fn column(&self, name: &str) -> Option<usize> {
        let name = name.trim_start_matches('_');
        self.columns.iter().position(|c| c == name)
    }

    /// A column parsed as numbers; `None` if the column is absent. `what` names the file in
    /// errors.
    pub fn numbers(&self, name: &str, what: &str) -> Result<Option<Vec<f64>>> {
        let Some(i) = self.column(name) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(self.rows.len());
        for (r, row) in self.rows.iter().enumerate() {
            match row[i].parse::<f64>() {
                Ok(v) if v.is_finite() => out.push(v),
                _ => bail!(
                    "{what}: row {} of the loop: _{name} = {:?} is not a finite number",
                    r + 1,
                    row[i]
                ),
            }
        }
        Ok(Some(out))
    }
}

/// One `data_` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StarBlock {
    /// The block name after `data_` (may be empty).
    pub name: String,
    /// `_name value` pairs outside loops, in file order.
    pub pairs: Vec<(String, String)>,
    /// The block's loops, in file order.
    pub loops: Vec<StarLoop>,
}

impl StarBlock {
    /// Value of a pair by name (with or without the leading `_`).
    pub fn value(&self, name: &str) -> Option<&str> {
        let name = name.trim_start_matches('_');
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first loop that has a column `name`.
    pub fn loop_with(&self, name: &str) -> Option<&StarLoop> {
        self.loops.iter().find(|l| l.column(name).is_some())
    }
}

/// Split a line into tokens: whitespace-separated, `'…'` and `"…"` quoted, `#` to the end of
/// the line is a comment where a token would start.
fn tokens(line: &str, what: &str, ln: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut it = line.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        if c == '#' {
            break;
        }
        if c == '\'' || c == '"' {
            it.next();
            let start = i + 1;
            let mut end = None;
            for (j, d) in it.by_ref() {
                if d == c {
                    end = Some(j);
                    break;
                }
            }
            let Some(end) = end else {
                bail!("{what}:{ln}: unterminated {c}quoted{c} value");
            };
            out.push(line[start..end].to_string());
            continue;
        }
        let start = i;
        let mut end = line.len();
        while let Some(&(j, d)) = it.peek() {
            if d.is_whitespace() {
                end = j;
                break;
            }
            it.next();
        }
        out.push(line[start..end].to_string());
    }
    Ok(out)
}

/// Parse STAR text; `what` (usually the path) names the source in errors.
pub fn parse(text: &str, what: &str) -> Result<Vec<StarBlock>> {
    #[derive(PartialEq)]
    enum State {
        Pairs,
        Header,
        Rows,
    }
    let mut blocks: Vec<StarBlock> = Vec::new();
    let mut state = State::Pairs;
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        let t = tokens(line, what, ln)?;
        let Some(first) = t.first() else {
            // A blank line ends a loop's rows.
            if state == State::Rows {
                state = State::Pairs;
            }
            continue;
        };
        if let Some(name) = first.strip_prefix("data_") {
            blocks.push(StarBlock {
                name: name.to_string(),
                ..Default::default()
            });
            state = State::Pairs;
            continue;
        }
        let Some(block) = blocks.last_mut() else {
            bail!("{what}:{ln}: {first:?} before the first data_ block: not a STAR file");
        };
        if first == "loop_" {
            block.loops.push(StarLoop::default());
            state = State::Header;
            continue;
        }
        if let Some(name) = first.strip_prefix('_') {
            match state {
                State::Header => {
                    let l = block.loops.last_mut().expect("a loop_ was opened");
                    l.columns.push(name.to_string());
                }
                State::Pairs | State::Rows => {
                    state = State::Pairs;
                    let v = t.get(1).cloned().unwrap_or_default();
                    block.pairs.push((name.to_string(), v));
                }
            }
            continue;
        }
        match state {
            State::Header | State::Rows => {
                let l = block.loops.last_mut().expect("a loop_ was opened");
                if l.columns.is_empty() {
                    bail!("{what}:{ln}: a loop_ row before any _column name");
                }
                if t.len() != l.columns.len() {
                    bail!(
                        "{what}:{ln}: {} values in a row of a loop with {} columns ({})",
                        t.len(),
                        l.columns.len(),
                        l.columns.join(", ")
                    );
                }
                l.rows.push(t);
                state = State::Rows;
            }
            State::Pairs => {
                bail!("{what}:{ln}: {first:?} is neither data_, loop_ nor a _name: not STAR syntax")
            }
        }
    }
    if blocks.is_empty() {
        bail!("{what}: no data_ block: not a STAR file");
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_pairs_loops_and_quotes() {
        let text = "\n# version 50001\n\ndata_general\n\n_rlnTomoSizeX   4000\n_rlnName 'a b'\n\ndata_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnMicrographName #3\n1.5 2 \"tomo 1\"\n3 4 t2\n\n";
        let b = parse(text, "t.star").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].value("rlnTomoSizeX"), Some("4000"));
        assert_eq!(b[0].value("_rlnName"), Some("a b"));
        let l = b[1].loop_with("rlnCoordinateY").unwrap();
        assert_eq!(l.columns.len(), 3);
        assert_eq!(l.rows[0][2], "tomo 1");
        assert_eq!(
            l.numbers("rlnCoordinateX", "t").unwrap(),
            Some(vec![1.5, 3.0])
        );
        assert_eq!(l.numbers("rlnAngleRot", "t").unwrap(), None);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("data_\nloop_\n_a\n_b\n1 2\n3\n", "x.star").unwrap_err();
        assert!(e.to_string().contains("x.star:6"), "{e}");
        let e = parse("hello\n", "x.star").unwrap_err();
        assert!(e.to_string().contains("not a STAR file"), "{e}");
        let e = parse("data_\n_a 'open\n", "x.star").unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        let l = &parse("data_\nloop_\n_a\nnan\n", "x").unwrap()[0].loops[0];
        assert!(l.numbers("a", "x.star").is_err());
    }

    #[test]
    fn reads_the_files_particles_tables_write() {
        use crate::particles::StarFlavour;
        let t = crate::particles::tests::table();
        for f in [StarFlavour::Relion4, StarFlavour::Relion5] {
            let b = parse(&t.to_star(f), "picks.star").unwrap();
            assert!(
                b.iter().any(|b| b.loop_with("rlnClassNumber").is_some()),
                "{f:?}"
            );
        }
    }
}
