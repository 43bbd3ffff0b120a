//! Where each key of a YAML document sits, so that errors can name file:line:column.
//!
//! A light line scanner for block-style YAML (what workflow files are): it records the position
//! of every block-mapping key under its dotted path (`nodes.place.params.shape`, list items as
//! `exports.0`) and notices keys defined twice in the same mapping. Flow-style values
//! (`{a: 1}`) are located at their parent key. serde_yaml remains the parser of record.

use std::collections::HashMap;

/// Positions of keys by dotted path.
#[derive(Debug, Default, Clone)]
pub struct KeyIndex {
    positions: HashMap<String, (usize, usize)>,
    children: HashMap<String, Vec<String>>,
    /// Keys that appear twice in one mapping: (path, first line, second line).
    pub duplicates: Vec<(String, usize, usize, usize)>,
}

impl KeyIndex {
    /// Scan a YAML text.
    pub fn scan(text: &str) -> KeyIndex {
        let mut idx = KeyIndex::default();
        // Stack of (indent, path segment, whether the segment is a list item).
        let mut stack: Vec<(usize, String, bool)> = Vec::new();
        let mut list_counters: HashMap<String, usize> = HashMap::new();
        let mut in_block_scalar: Option<usize> = None;
        for (lineno, raw) in text.lines().enumerate() {
            let line_no = lineno + 1;
            let content = strip_comment(raw);
            if content.trim().is_empty() {
                continue;
            }
            let mut indent = content.len() - content.trim_start().len();
            if let Some(bi) = in_block_scalar {
                if indent > bi {
                    continue;
                }
                in_block_scalar = None;
            }
            let mut rest = content.trim_start();
            if rest.starts_with("---") || rest.starts_with("...") {
                continue;
            }
            // List items: "- key: value" or "- value".
            while let Some(after) =
                rest.strip_prefix("- ")
                    .or_else(|| if rest == "-" { Some("") } else { None })
            {
                // A list may sit at the indent of its parent key (`exports:\n- from: ...`, as
                // many YAML writers emit it): only deeper entries and sibling items end here.
                while stack
                    .last()
                    .is_some_and(|(i, _, item)| *i > indent || (*i == indent && *item))
                {
                    stack.pop();
                }
                let parent = join(&stack);
                let counter = list_counters.entry(parent.clone()).or_insert(0);
                let item = counter.to_string();
                *counter += 1;
                let item_path = if parent.is_empty() {
                    item.clone()
                } else {
                    format!("{parent}.{item}")
                };
                if let std::collections::hash_map::Entry::Vacant(e) = idx.positions.entry(item_path)
                {
                    e.insert((line_no, indent + 1));
                    idx.children
                        .entry(parent.clone())
                        .or_default()
                        .push(item.clone());
                }
                stack.push((indent, item, true));
                let consumed = rest.len() - after.len();
                indent += consumed;
                rest = after.trim_start();
                if rest.is_empty() {
                    break;
                }
            }
            if let Some((key, after)) = split_key(rest) {
                while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
                    stack.pop();
                }
                let parent = join(&stack);
                let path = if parent.is_empty() {
                    key.clone()
                } else {
                    format!("{parent}.{key}")
                };
                let inside_dup = idx
                    .duplicates
                    .iter()
                    .any(|d| path.starts_with(&format!("{}.", d.0)));
                if let Some(&(l, _)) = idx.positions.get(&path) {
                    if !inside_dup {
                        idx.duplicates.push((path.clone(), l, line_no, indent + 1));
                    }
                } else {
                    idx.positions.insert(path.clone(), (line_no, indent + 1));
                    idx.children
                        .entry(parent.clone())
                        .or_default()
                        .push(key.clone());
                }
                list_counters.remove(&path);
                let a = after.trim();
                if a.starts_with('|') || a.starts_with('>') {
                    in_block_scalar = Some(indent);
                }
                stack.push((indent, key, false));
            }
        }
        idx
    }

    /// Position of `path`, or of its closest located ancestor.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path.to_string();
        loop {
            if let Some(&pos) = self.positions.get(&p) {
                return Some(pos);
            }
            match p.rfind('.') {
                Some(i) => p.truncate(i),
                None => return None,
            }
        }
    }

    /// Keys directly under `path` (`""` for the top level), in file order.
    pub fn children(&self, path: &str) -> Vec<String> {
        self.children.get(path).cloned().unwrap_or_default()
    }
}

fn join(stack: &[(usize, String, bool)]) -> String {
    stack
        .iter()
        .map(|(_, s, _)| s.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn strip_comment(line: &str) -> &str {
    let mut in_s = false;
    let mut in_d = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !in_d => in_s = !in_s,
            b'"' if !in_s => in_d = !in_d,
            b'#' if !in_s && !in_d && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') => {
                return &line[..i]
            }
            _ => {}
        }
    }
    line
}

/// Split `key: value` (or `key:`), with plain or quoted keys.
fn split_key(s: &str) -> Option<(String, &str)> {
    if s.starts_with('{') || s.starts_with('[') {
        return None;
    }
    if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = s[1..].find(q)? + 1;
        let key = s[1..end].to_string();
        let after = s[end + 1..].strip_prefix(':')?;
        return Some((key, after));
    }
    let bytes = s.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b':'
            && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t')
        {
            return Some((s[..i].trim().to_string(), &s[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1\nname: x   # comment\nnodes:\n  a:\n    plugin: phantom\n    params: {shape: [1, 2, 3]}\n  b:\n    plugin: volume-stats\n    inputs:\n      volume: a.volume\nexports:\n  - {from: b.metrics, to: x.json}\n  - from: a.volume\n    to: a.mrc\n";

    #[test]
    fn locates_nested_keys_and_list_items() {
        let k = KeyIndex::scan(DOC);
        assert_eq!(k.find("name"), Some((2, 1)));
        assert_eq!(k.find("nodes.a.plugin"), Some((5, 5)));
        assert_eq!(k.find("nodes.b.inputs.volume"), Some((10, 7)));
        assert_eq!(
            k.find("nodes.a.params.shape"),
            Some((6, 5)),
            "flow values fall back to the parent"
        );
        assert_eq!(k.find("exports.0"), Some((12, 3)));
        assert_eq!(k.find("exports.1.to"), Some((14, 5)));
        let mut c = k.children("nodes");
        c.sort();
        assert_eq!(c, vec!["a", "b"]);
    }

    /// Found by the hostile-parameter test: serde_yaml (and many other writers) put a block
    /// list at the indent of its key; its items were taken for top-level keys.
    #[test]
    fn lists_at_the_indent_of_their_key() {
        let k = KeyIndex::scan(
            "exports:\n- from: a.volume\n  to: a.mrc\n- from: b.x\n  to: b.json\nnodes:\n  a:\n    plugin: x\n",
        );
        assert_eq!(k.children(""), vec!["exports", "nodes"]);
        assert_eq!(k.find("exports.1.to"), Some((5, 3)));
        assert_eq!(k.find("nodes.a.plugin"), Some((8, 5)));
    }

    #[test]
    fn finds_duplicate_keys() {
        let k = KeyIndex::scan("nodes:\n  a:\n    plugin: x\n  a:\n    plugin: y\n");
        assert_eq!(k.duplicates.len(), 1);
        assert_eq!(k.duplicates[0].0, "nodes.a");
        assert_eq!((k.duplicates[0].1, k.duplicates[0].2), (2, 4));
    }
}
