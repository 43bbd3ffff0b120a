//! Where each key of a YAML document sits, so that errors can name file:line:column.
//!
//! A light line scanner for block-style YAML (what workflow files are): it records the position
//! of every block-mapping key under its dotted path (`nodes.place.params.shape`, list items as
//! `exports.0`) and notices keys defined twice in the same mapping. Flow-style values
//! (`{a: 1}`) are located at their parent key. serde_yaml remains the parser of record.

use std::collections::HashMap;

/// Deepest nesting of block collections (mappings and list items) the scanner follows; past it,
/// [`KeyIndex::too_deep`] says where, and the scan stops.
pub const MAX_DEPTH: usize = super::guard::MAX_DEPTH;

/// Duplicate keys recorded at most (each names its full path).
const MAX_DUPLICATES: usize = 20;

/// One located key: a node of the key tree.
#[derive(Debug, Default, Clone)]
struct Entry {
    /// Line and column of the key (1-based).
    pos: (usize, usize),
    /// Children in file order.
    children: Vec<usize>,
    /// Children by name.
    by_name: HashMap<String, usize>,
    /// The key's name.
    name: String,
    /// The parent entry (0, the document, for top-level keys).
    parent: usize,
    /// List items seen under this key since it was (last) defined.
    items: usize,
}

/// Positions of keys by dotted path: a tree of keys, each stored once, so that time and memory
/// grow linearly with the file whatever its nesting.
#[derive(Debug, Clone)]
pub struct KeyIndex {
    /// Entry 0 is the document.
    entries: Vec<Entry>,
    /// Keys that appear twice in one mapping: (path, first line, second line, column); the
    /// first [`MAX_DUPLICATES`].
    pub duplicates: Vec<(String, usize, usize, usize)>,
    /// Where the nesting first goes deeper than [`MAX_DEPTH`] (line, column, depth): block
    /// collections by indentation, flow collections (`[`, `{`) by brackets. Nothing after it
    /// is indexed.
    pub too_deep: Option<(usize, usize, usize)>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            entries: vec![Entry::default()],
            duplicates: Vec::new(),
            too_deep: None,
        }
    }
}

/// One open block collection: its indent, its entry, whether it is a list item, and whether it
/// lies inside a duplicated key (whose repeats are not reported again).
struct Open {
    indent: usize,
    entry: usize,
    item: bool,
    in_dup: bool,
}

impl KeyIndex {
    /// Scan a YAML text.
    pub fn scan(text: &str) -> KeyIndex {
        let mut idx = KeyIndex::default();
        let mut stack: Vec<Open> = Vec::new();
        let mut in_block_scalar: Option<usize> = None;
        idx.too_deep = flow_too_deep(text);
        let stop_line = idx.too_deep.map_or(usize::MAX, |(l, _, _)| l);
        for (lineno, raw) in text.lines().enumerate() {
            let line_no = lineno + 1;
            if line_no >= stop_line {
                break;
            }
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
                    .is_some_and(|o| o.indent > indent || (o.indent == indent && o.item))
                {
                    stack.pop();
                }
                if stack.len() >= MAX_DEPTH {
                    idx.too_deep = Some((line_no, indent + 1, stack.len() + 1));
                    return idx;
                }
                let (parent, in_dup) = stack.last().map_or((0, false), |o| (o.entry, o.in_dup));
                let item = idx.entries[parent].items.to_string();
                idx.entries[parent].items += 1;
                let entry = match idx.entries[parent].by_name.get(&item) {
                    Some(&e) => e,
                    None => idx.add(parent, item, (line_no, indent + 1)),
                };
                stack.push(Open {
                    indent,
                    entry,
                    item: true,
                    in_dup,
                });
                let consumed = rest.len() - after.len();
                indent += consumed;
                rest = after.trim_start();
                if rest.is_empty() {
                    break;
                }
            }
            if let Some((key, after)) = split_key(rest) {
                while stack.last().is_some_and(|o| o.indent >= indent) {
                    stack.pop();
                }
                if stack.len() >= MAX_DEPTH {
                    idx.too_deep = Some((line_no, indent + 1, stack.len() + 1));
                    return idx;
                }
                let (parent, in_dup) = stack.last().map_or((0, false), |o| (o.entry, o.in_dup));
                let (entry, dup) = match idx.entries[parent].by_name.get(&key) {
                    Some(&e) => {
                        if !in_dup && idx.duplicates.len() < MAX_DUPLICATES {
                            let path = idx.path_of(e);
                            let first = idx.entries[e].pos.0;
                            idx.duplicates.push((path, first, line_no, indent + 1));
                        }
                        (e, true)
                    }
                    None => (idx.add(parent, key, (line_no, indent + 1)), false),
                };
                idx.entries[entry].items = 0;
                let a = after.trim();
                if a.starts_with('|') || a.starts_with('>') {
                    in_block_scalar = Some(indent);
                }
                stack.push(Open {
                    indent,
                    entry,
                    item: false,
                    in_dup: in_dup || dup,
                });
            }
        }
        idx
    }

    /// Add a child entry `name` under `parent`; returns its index.
    fn add(&mut self, parent: usize, name: String, pos: (usize, usize)) -> usize {
        let e = self.entries.len();
        self.entries.push(Entry {
            pos,
            name: name.clone(),
            parent,
            ..Default::default()
        });
        self.entries[parent].children.push(e);
        self.entries[parent].by_name.insert(name, e);
        e
    }

    /// The dotted path of entry `e`.
    fn path_of(&self, mut e: usize) -> String {
        let mut chain = Vec::new();
        while e != 0 {
            chain.push(self.entries[e].name.as_str());
            e = self.entries[e].parent;
        }
        chain.reverse();
        chain.join(".")
    }

    /// The entry at dotted `path` and how much of the path it covers; a key holding a dot
    /// (`a.b`) is found too.
    fn walk(&self, path: &str) -> (usize, bool) {
        let segs: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('.').collect()
        };
        let (mut cur, mut i) = (0usize, 0usize);
        'outer: while i < segs.len() {
            for j in i + 1..=segs.len() {
                if let Some(&e) = self.entries[cur].by_name.get(&segs[i..j].join(".")) {
                    cur = e;
                    i = j;
                    continue 'outer;
                }
            }
            return (cur, false);
        }
        (cur, true)
    }

    /// Position of `path`, or of its closest located ancestor.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        match self.walk(path).0 {
            0 => None,
            e => Some(self.entries[e].pos),
        }
    }

    /// Keys directly under `path` (`""` for the top level), in file order.
    pub fn children(&self, path: &str) -> Vec<String> {
        match self.walk(path) {
            (e, true) => self.entries[e]
                .children
                .iter()
                .map(|&c| self.entries[c].name.clone())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Where flow collections (`[`, `{`) first nest deeper than [`MAX_DEPTH`]: (line, column,
/// depth). Quoted strings and comments are skipped; one pass over the text.
fn flow_too_deep(text: &str) -> Option<(usize, usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            prev = c;
            continue;
        }
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
                col += 1;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if matches!(prev, ' ' | '\t' | '\n' | '[' | '{' | ',' | ':' | '-') => {
                    quote = Some(c)
                }
                '#' if matches!(prev, ' ' | '\t' | '\n') => {
                    while chars.peek().is_some_and(|&n| n != '\n') {
                        chars.next();
                    }
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some((line, col, depth));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
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

    /// 40,000 nested `- ` in 80 KB took 6.3 GB (every item stored its whole path), 100,000
    /// nested `[` 29 s in the YAML parser: both now stop at the depth limit, located.
    #[test]
    fn deep_nesting_is_refused_in_linear_time() {
        let t0 = std::time::Instant::now();
        let k = KeyIndex::scan(&format!("a:\n  {}x\n", "- ".repeat(40_000)));
        assert_eq!(k.too_deep, Some((2, 2 * MAX_DEPTH + 1, MAX_DEPTH + 1)));
        let k = KeyIndex::scan(&format!("a: {}", "[".repeat(100_000)));
        assert_eq!(k.too_deep, Some((1, 4 + MAX_DEPTH, MAX_DEPTH + 1)));
        let k = KeyIndex::scan(&format!(
            "a: \"{}\"  # {}\nb: 1\n",
            "[".repeat(500),
            "{".repeat(500)
        ));
        assert_eq!(
            k.too_deep, None,
            "quoted and commented brackets do not count"
        );
        assert_eq!(k.find("b"), Some((2, 1)));
        // Indented mappings as deep as allowed are indexed; one more level is refused.
        let nested = |n: usize| {
            (0..n)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                .collect::<String>()
        };
        assert_eq!(KeyIndex::scan(&nested(MAX_DEPTH)).too_deep, None);
        assert_eq!(
            KeyIndex::scan(&nested(MAX_DEPTH + 1)).too_deep.map(|t| t.0),
            Some(MAX_DEPTH + 1)
        );
        // Many keys under long ancestors: every key is stored once.
        let wide = format!("{}:\n{}", "k".repeat(40_000), "  a: 1\n".repeat(20_000));
        assert_eq!(KeyIndex::scan(&wide).children(&"k".repeat(40_000)).len(), 1);
        assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
    }

    #[test]
    fn keys_with_dots_are_found() {
        let k = KeyIndex::scan("params:\n  a.b: 1\n  c: 2\n");
        assert_eq!(k.find("params.a.b"), Some((2, 3)));
        assert_eq!(k.find("params.c.d"), Some((3, 3)));
        assert_eq!(k.children("params"), vec!["a.b", "c"]);
    }

    #[test]
    fn finds_duplicate_keys() {
        let k = KeyIndex::scan("nodes:\n  a:\n    plugin: x\n  a:\n    plugin: y\n");
        assert_eq!(k.duplicates.len(), 1);
        assert_eq!(k.duplicates[0].0, "nodes.a");
        assert_eq!((k.duplicates[0].1, k.duplicates[0].2), (2, 4));
    }
}
