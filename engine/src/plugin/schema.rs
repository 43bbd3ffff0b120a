//! Parameter checking against a node type's JSON Schema, and filling in defaults.
//!
//! Implements the subset of JSON Schema that plugin schemas use: `type` (one or several),
//! `properties`, `required`, `additionalProperties: false`, `minimum`/`maximum` (and the
//! exclusive forms), `enum`, `const`, `items`, `minItems`/`maxItems`, `minLength`, `anyOf` /
//! `oneOf`, and `default`. Every error names the parameter path and what is allowed.

use crate::error::did_you_mean;
use serde_json::{Map, Value};

/// Fill in top-level defaults from the schema (nested objects keep what the user gave).
pub fn with_defaults(schema: &Value, params: &Map<String, Value>) -> Map<String, Value> {
    let mut out = params.clone();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            if !out.contains_key(k) {
                if let Some(d) = s.get("default") {
                    out.insert(k.clone(), d.clone());
                }
            }
        }
    }
    out
}

/// Validate `value` against `schema`; returns every problem as `(path, message)`.
pub fn validate(schema: &Value, value: &Value) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    check(schema, value, "", &mut errs);
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => type_name(v) == other,
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Check `v` against `schema` at `path`, adding every problem to `errs`.
fn check(schema: &Value, v: &Value, path: &str, errs: &mut Vec<(String, String)>) {
    let Some(s) = schema.as_object() else { return };
    let at = At { s, v, path };
    if !at.type_matches(errs) || !at.some_alternative_matches(errs) {
        return;
    }
    at.check_enum_const(errs);
    if let Some(x) = v.as_f64() {
        at.check_bounds(x, errs);
    }
    if let (Some(st), Some(min)) = (v.as_str(), s.get("minLength").and_then(Value::as_u64)) {
        if (st.chars().count() as u64) < min {
            errs.push((
                path.into(),
                format!("{} must have at least {min} characters", at.shown()),
            ));
        }
    }
    if let Some(a) = v.as_array() {
        at.check_array(a, errs);
    }
    if let Some(o) = v.as_object() {
        at.check_object(o, errs);
    }
}

/// A value checked against one schema object, at a parameter path.
struct At<'a> {
    s: &'a Map<String, Value>,
    v: &'a Value,
    path: &'a str,
}

impl At<'_> {
    /// The value's name in a message: `` `path` ``, or `parameters` at the top.
    fn shown(&self) -> String {
        if self.path.is_empty() {
            "parameters".to_string()
        } else {
            format!("`{}`", self.path)
        }
    }

    /// Report `message` at this path.
    fn report(&self, errs: &mut Vec<(String, String)>, message: String) {
        errs.push((self.path.into(), message));
    }

    /// `type` (one or several); false (reported) when the value has none of them.
    fn type_matches(&self, errs: &mut Vec<(String, String)>) -> bool {
        let (s, v) = (self.s, self.v);
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(x) => vec![x.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
                self.report(
                    errs,
                    format!(
                        "{} must be {}, got {} `{v}`",
                        self.shown(),
                        types.join(" or "),
                        type_name(v)
                    ),
                );
                return false;
            }
        }
        true
    }

    /// `anyOf` / `oneOf`; false (reported) when the value matches none of the alternatives.
    fn some_alternative_matches(&self, errs: &mut Vec<(String, String)>) -> bool {
        let (s, v, path) = (self.s, self.v, self.path);
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = s.get(key).and_then(Value::as_array) {
                let results: Vec<Vec<(String, String)>> =
                    alts.iter().map(|a| validate_at(a, v, path)).collect();
                if !results.iter().any(|r| r.is_empty()) {
                    let allowed: Vec<String> = alts.iter().map(describe).collect();
                    self.report(
                        errs,
                        format!(
                            "{} = `{v}` matches none of: {}",
                            self.shown(),
                            allowed.join("; ")
                        ),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// `enum` and `const`.
    fn check_enum_const(&self, errs: &mut Vec<(String, String)>) {
        let (s, v) = (self.s, self.v);
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                let allowed: Vec<String> = e.iter().map(|x| x.to_string()).collect();
                let hint = v
                    .as_str()
                    .map(|w| did_you_mean(w, e.iter().filter_map(Value::as_str)))
                    .unwrap_or_default();
                self.report(
                    errs,
                    format!(
                        "{} = {v} is not allowed{hint}; allowed: {}",
                        self.shown(),
                        allowed.join(", ")
                    ),
                );
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                self.report(errs, format!("{} must be {c}", self.shown()));
            }
        }
    }

    /// `minimum`, `maximum` and their exclusive forms, for the number `x`.
    fn check_bounds(&self, x: f64, errs: &mut Vec<(String, String)>) {
        let v = self.v;
        let bound = |k: &str| self.s.get(k).and_then(Value::as_f64);
        if let Some(m) = bound("minimum").filter(|m| x < *m) {
            self.report(
                errs,
                format!("{} = {v} is below the minimum {m}", self.shown()),
            );
        }
        if let Some(m) = bound("maximum").filter(|m| x > *m) {
            self.report(
                errs,
                format!("{} = {v} is above the maximum {m}", self.shown()),
            );
        }
        if let Some(m) = bound("exclusiveMinimum").filter(|m| x <= *m) {
            self.report(
                errs,
                format!("{} = {v} must be greater than {m}", self.shown()),
            );
        }
        if let Some(m) = bound("exclusiveMaximum").filter(|m| x >= *m) {
            self.report(
                errs,
                format!("{} = {v} must be less than {m}", self.shown()),
            );
        }
    }

    /// `minItems`, `maxItems`, and `items` / `prefixItems` for each element.
    fn check_array(&self, a: &[Value], errs: &mut Vec<(String, String)>) {
        let (s, path) = (self.s, self.path);
        if let Some(min) = s
            .get("minItems")
            .and_then(Value::as_u64)
            .filter(|m| (a.len() as u64) < *m)
        {
            self.report(
                errs,
                format!(
                    "{} needs at least {min} items, got {}",
                    self.shown(),
                    a.len()
                ),
            );
        }
        if let Some(max) = s
            .get("maxItems")
            .and_then(Value::as_u64)
            .filter(|m| (a.len() as u64) > *m)
        {
            self.report(
                errs,
                format!(
                    "{} takes at most {max} items, got {}",
                    self.shown(),
                    a.len()
                ),
            );
        }
        match s.get("items") {
            Some(Value::Array(tuple)) => {
                for (i, (x, sch)) in a.iter().zip(tuple).enumerate() {
                    check(sch, x, &join(path, &i.to_string()), errs);
                }
            }
            Some(items) => {
                for (i, x) in a.iter().enumerate() {
                    check(items, x, &join(path, &i.to_string()), errs);
                }
            }
            None => {}
        }
        if let Some(Value::Array(tuple)) = s.get("prefixItems") {
            for (i, (x, sch)) in a.iter().zip(tuple).enumerate() {
                check(sch, x, &join(path, &i.to_string()), errs);
            }
        }
    }

    /// `required`, then each property against its schema (`additionalProperties: false`
    /// refuses unknown ones).
    fn check_object(&self, o: &Map<String, Value>, errs: &mut Vec<(String, String)>) {
        let (s, path) = (self.s, self.path);
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    let doc = props
                        .and_then(|p| p.get(r))
                        .and_then(|p| p.get("description"))
                        .and_then(Value::as_str)
                        .map(|d| format!(" ({})", d.lines().next().unwrap_or("")))
                        .unwrap_or_default();
                    errs.push((
                        join(path, r),
                        format!("missing required parameter `{}`{doc}", join(path, r)),
                    ));
                }
            }
        }
        let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(sch) => check(sch, x, &join(path, k), errs),
                None if closed => {
                    let names: Vec<&str> = props
                        .map(|p| p.keys().map(|s| s.as_str()).collect())
                        .unwrap_or_default();
                    errs.push((
                        join(path, k),
                        format!(
                            "unknown parameter `{}`{}; allowed: {}",
                            join(path, k),
                            did_you_mean(k, names.iter().copied()),
                            names.join(", ")
                        ),
                    ));
                }
                None => {}
            }
        }
    }
}

fn validate_at(schema: &Value, v: &Value, path: &str) -> Vec<(String, String)> {
    let mut e = Vec::new();
    check(schema, v, path, &mut e);
    e
}

fn describe(schema: &Value) -> String {
    if let Some(c) = schema.get("const") {
        return c.to_string();
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ");
    }
    match schema.get("type") {
        Some(t) => t.to_string().replace('"', ""),
        None => "any".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["shape"],
            "properties": {
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "maxItems": 3,
                          "description": "volume shape (z, y, x)"},
                "voxel_size": {"type": "number", "exclusiveMinimum": 0, "default": 10.0},
                "mode": {"enum": ["wbp", "sirt"], "default": "wbp"},
                "note": {"type": ["string", "null"]}
            }
        })
    }

    #[test]
    fn accepts_valid_and_fills_defaults() {
        let p = json!({"shape": [4, 4, 4], "note": null});
        assert!(validate(&schema(), &p).is_empty());
        let d = with_defaults(&schema(), p.as_object().unwrap());
        assert_eq!(d["voxel_size"], 10.0);
        assert_eq!(d["mode"], "wbp");
    }

    #[test]
    fn reports_each_problem_with_its_path() {
        let e = validate(
            &schema(),
            &json!({"shap": [1], "voxel_size": 0, "mode": "sirtt"}),
        );
        let text: Vec<String> = e.iter().map(|(_, m)| m.clone()).collect();
        let all = text.join("\n");
        assert!(
            all.contains("missing required parameter `shape` (volume shape (z, y, x))"),
            "{all}"
        );
        assert!(
            all.contains("unknown parameter `shap` (did you mean `shape`?)"),
            "{all}"
        );
        assert!(
            all.contains("`voxel_size` = 0 must be greater than 0"),
            "{all}"
        );
        assert!(all.contains("did you mean `sirt`"), "{all}");
        let e = validate(&schema(), &json!({"shape": [1, 0, "x"]}));
        let all: Vec<String> = e.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all[0].starts_with("shape.1: `shape.1` = 0 is below the minimum 1"),
            "{all:?}"
        );
    }
}
