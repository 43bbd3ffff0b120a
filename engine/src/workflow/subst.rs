//! `${...}` substitution: the references in a string, and the variables one instance sees
//! (`params.NAME`, `sweep.AXIS`, `instance`, `node`, `repeat`, `workflow.name`, `workflow.dir`).

use super::expand::Coord;
use crate::error::did_you_mean;
use indexmap::IndexMap;
use serde_json::Value;

/// Render a JSON value for a label or string substitution.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// All `${...}` references in a string.
pub fn references(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(after[..j].trim().to_string());
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Call `f` on every string inside `v`.
pub(super) fn walk_strings<'a>(v: &'a Value, f: &mut dyn FnMut(&'a str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

/// Variables available to `${...}` in one instance.
pub(super) struct Scope<'a> {
    pub params: &'a IndexMap<String, Value>,
    pub coords: &'a [Coord],
    pub node: &'a str,
    pub label: &'a str,
    pub workflow_name: &'a str,
    pub workflow_dir: &'a str,
    pub workflow_seed: u64,
}

impl Scope<'_> {
    /// The value of variable `var`.
    fn lookup(&self, var: &str) -> Result<Value, String> {
        if let Some(p) = var.strip_prefix("params.") {
            let mut parts = p.split('.');
            let first = parts.next().unwrap_or("");
            let mut v = self.params.get(first).ok_or_else(|| {
                format!(
                    "`${{{var}}}` refers to no parameter{}; workflow params: {}",
                    did_you_mean(first, self.params.keys().map(|s| s.as_str())),
                    list(self.params.keys())
                )
            })?;
            for part in parts {
                v = v.get(part).ok_or_else(|| {
                    format!("`${{{var}}}`: `{part}` is not a key of params.{first}")
                })?;
            }
            return Ok(v.clone());
        }
        if let Some(expr) = var.strip_prefix("draw.") {
            return super::draw::evaluate(
                expr,
                &super::draw::DrawContext {
                    workflow_seed: self.workflow_seed,
                    coords: self.coords,
                },
            );
        }
        if let Some(axis) = var.strip_prefix("sweep.") {
            return self
                .coords
                .iter()
                .find(|(a, _)| a == axis)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("`${{{var}}}` refers to no sweep axis"));
        }
        match var {
            "instance" => Ok(Value::String(self.label.to_string())),
            "node" => Ok(Value::String(self.node.to_string())),
            "repeat" => {
                // The node's own replicate index; else the one it inherits, if exactly one.
                let own = format!("repeat.{}", self.node);
                let inherited: Vec<&Value> = self
                    .coords
                    .iter()
                    .filter(|(a, _)| a.starts_with("repeat."))
                    .map(|(_, v)| v)
                    .collect();
                Ok(match self.coords.iter().find(|(a, _)| a == &own) {
                    Some((_, v)) => v.clone(),
                    None if inherited.len() == 1 => inherited[0].clone(),
                    None if inherited.is_empty() => Value::from(0),
                    None => {
                        return Err(format!(
                            "`${{repeat}}` is ambiguous: this node inherits {} replicate axes; use `${{repeat.NODE}}`",
                            inherited.len()
                        ))
                    }
                })
            }
            v if v.starts_with("repeat.") => self
                .coords
                .iter()
                .find(|(a, _)| a == v)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("`${{{v}}}`: this node does not descend from a replicated node `{}`", &v["repeat.".len()..])),
            "workflow.name" => Ok(Value::String(self.workflow_name.to_string())),
            "workflow.dir" => Ok(Value::String(self.workflow_dir.to_string())),
            _ => Err(format!(
                "`${{{var}}}` refers to nothing; use params.NAME, sweep.AXIS, draw.NAME.FN(...), instance, node, repeat, workflow.name or workflow.dir"
            )),
        }
    }

    /// `v` with every `${...}` replaced; a string that is one whole reference takes the
    /// variable's value (and type), else references are spliced in as text.
    pub fn subst(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => {
                let t = s.trim();
                if t.starts_with("${")
                    && t.ends_with('}')
                    && references(t).len() == 1
                    && t.matches("${").count() == 1
                {
                    self.lookup(references(t)[0].as_str())?
                } else if s.contains("${") {
                    let mut out = String::new();
                    let mut rest = s.as_str();
                    while let Some(i) = rest.find("${") {
                        out.push_str(&rest[..i]);
                        let after = &rest[i + 2..];
                        let j = after
                            .find('}')
                            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
                        out.push_str(&value_text(&self.lookup(after[..j].trim())?));
                        rest = &after[j + 1..];
                    }
                    out.push_str(rest);
                    Value::String(out)
                } else {
                    v.clone()
                }
            }
            Value::Array(a) => {
                Value::Array(a.iter().map(|x| self.subst(x)).collect::<Result<_, _>>()?)
            }
            Value::Object(o) => {
                let mut m = serde_json::Map::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.subst(x)?);
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
    }
}

/// Names for an error message, `(none)` when there are none.
pub(super) fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}
