//! Cache keys: a blake3 Merkle hash of everything that determines a node's output.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// What a key is made of; recorded so that `plan` can say which part changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    /// Plugin name and version.
    pub plugin: String,
    /// Plugin build id.
    pub build: String,
    /// Node type.
    pub node_type: String,
    /// Canonical parameters.
    pub params: Value,
    /// Derived seed.
    pub seed: u64,
    /// Input port -> `upstream key:port`.
    pub inputs: BTreeMap<String, String>,
    /// Input-file parameter -> content hash.
    pub files: BTreeMap<String, String>,
}

impl KeyComponents {
    /// The key: 32 hex digits of blake3 over the canonical JSON of the components.
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"tomoflow.key.v1\0");
        h.update(&tomoflow_sdk::abi::TF_ABI_MAJOR.to_le_bytes());
        let v = serde_json::to_value(self).expect("serialisable");
        h.update(canonical(&v).to_string().as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    /// Human-readable reasons why `self` differs from `old`.
    pub fn diff(&self, old: &KeyComponents) -> Vec<String> {
        let mut out = Vec::new();
        if self.node_type != old.node_type {
            out.push(format!(
                "node type changed: {} -> {}",
                old.node_type, self.node_type
            ));
        }
        if self.plugin != old.plugin {
            out.push(format!("plugin changed: {} -> {}", old.plugin, self.plugin));
        } else if self.build != old.build {
            out.push(format!(
                "plugin build changed: {} -> {}",
                old.build, self.build
            ));
        }
        if self.params != old.params {
            let (a, b) = (self.params.as_object(), old.params.as_object());
            let mut keys: Vec<&String> = a.into_iter().chain(b).flat_map(|m| m.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let new = a.and_then(|m| m.get(k));
                let was = b.and_then(|m| m.get(k));
                if new != was {
                    let show = |v: Option<&Value>| v.map(short).unwrap_or_else(|| "(unset)".into());
                    out.push(format!("param {k}: {} -> {}", show(was), show(new)));
                }
            }
        }
        if self.seed != old.seed {
            out.push("seed changed".into());
        }
        for (k, v) in &self.files {
            if old.files.get(k) != Some(v) {
                out.push(format!("input file `{k}` changed"));
            }
        }
        for (port, v) in &self.inputs {
            if old.inputs.get(port) != Some(v) {
                out.push(format!("upstream of input `{port}` changed"));
            }
        }
        if out.is_empty() && self != old {
            out.push("key components changed".into());
        }
        out
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// Canonical JSON: object keys sorted, integral floats written as integers (`10.0` == `10`).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let mut m = Map::new();
            for k in keys {
                m.insert(k.clone(), canonical(&o[k]));
            }
            Value::Object(m)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Value::from(f as i64)
            }
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

/// Content hash of a file, or of a directory tree (names and contents, sorted).
pub fn hash_path(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    hash_into(path, &mut h)?;
    Ok(h.finalize().to_hex()[..32].to_string())
}

fn hash_into(path: &Path, h: &mut blake3::Hasher) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            h.update(
                e.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            h.update(b"\0");
            hash_into(&e, h)?;
        }
        return Ok(());
    }
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_is_order_and_float_insensitive() {
        let a = canonical(&json!({"b": 10.0, "a": [1, {"y": 2, "x": 1}]}));
        let b = canonical(&json!({"a": [1, {"x": 1, "y": 2.0}], "b": 10}));
        assert_eq!(a.to_string(), b.to_string());
        assert_ne!(canonical(&json!({"b": 10.5})), canonical(&json!({"b": 10})));
    }

    #[test]
    fn diff_names_the_changed_param() {
        let a = KeyComponents {
            params: json!({"shape": [1, 2], "v": 1}),
            ..Default::default()
        };
        let b = KeyComponents {
            params: json!({"shape": [1, 2], "v": 2}),
            ..Default::default()
        };
        assert_eq!(b.diff(&a), vec!["param v: 1 -> 2".to_string()]);
        assert_ne!(a.key(), b.key());
    }
}
