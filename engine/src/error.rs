//! User-facing errors: one paragraph, located in the workflow file where possible.

use std::fmt;
use std::path::PathBuf;

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An error caused by the user's input, with a location when it comes from a file.
#[derive(Debug, Clone)]
pub struct UserError {
    /// Where it is, if known.
    pub location: Option<Location>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl UserError {
    /// An error without location.
    pub fn new(message: impl Into<String>) -> UserError {
        UserError {
            location: None,
            message: message.into(),
        }
    }

    /// An error at a location.
    pub fn at(location: Option<Location>, message: impl Into<String>) -> UserError {
        UserError {
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for UserError {}

/// Several user errors reported together (validation collects all it can find).
#[derive(Debug, Clone)]
pub struct UserErrors(pub Vec<UserError>);

impl fmt::Display for UserErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In file order, so that the first error in the file comes first.
        let mut errs: Vec<&UserError> = self.0.iter().collect();
        errs.sort_by_key(|e| {
            e.location
                .as_ref()
                .map(|l| (l.file.clone(), l.line, l.column))
        });
        // One mistake in a swept node is one error, naming the instances it affects.
        let mut groups: Vec<Group> = Vec::new();
        for e in errs {
            let split = split_instance(&e.message);
            let same = groups.iter_mut().find(|(g, gs, _)| {
                g.location == e.location
                    && match (gs, split) {
                        (Some((gn, gr)), Some((n, _, r))) => *gn == n && *gr == r,
                        (None, None) => g.message == e.message,
                        _ => false,
                    }
            });
            match (same, split) {
                (Some((_, _, labels)), Some((_, l, _))) => labels.push(l),
                (Some(_), None) => {}
                (None, Some((n, l, r))) => groups.push((e, Some((n, r)), vec![l])),
                (None, None) => groups.push((e, None, Vec::new())),
            }
        }
        for (i, (e, split, labels)) in groups.iter().enumerate() {
            if i > 0 {
                write!(f, "\nerror: ")?;
            }
            match split {
                Some((node, rest)) if labels.len() > 1 => {
                    if let Some(l) = &e.location {
                        write!(f, "{l}: ")?;
                    }
                    let shown: Vec<&str> = labels.iter().take(3).copied().collect();
                    let more = match labels.len() - shown.len() {
                        0 => String::new(),
                        n => format!(" and {n} more"),
                    };
                    write!(
                        f,
                        "{node} ({} instances: {}{more}): {rest}",
                        labels.len(),
                        shown.join(", ")
                    )?;
                }
                _ => write!(f, "{e}")?,
            }
        }
        Ok(())
    }
}

/// Errors printed as one: the first, its (node, message) when it is about one instance, and
/// the labels of the instances it is about.
type Group<'a> = (&'a UserError, Option<(&'a str, &'a str)>, Vec<&'a str>);

/// `node[a=1]: message` as (`node`, `[a=1]`, `message`), for messages about one instance.
fn split_instance(message: &str) -> Option<(&str, &str, &str)> {
    let (head, rest) = message.split_once("]: ")?;
    let open = head.find('[')?;
    let node = &head[..open];
    (!node.is_empty() && !node.contains(char::is_whitespace))
        .then(|| (node, &message[open..head.len() + 1], rest))
}

impl std::error::Error for UserErrors {}

/// A " (did you mean `x`?)" suffix when one candidate is close to `word`, else "".
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(
            did_you_mean("plugn", ["plugin", "params"]),
            " (did you mean `plugin`?)"
        );
        assert_eq!(did_you_mean("zzz", ["plugin", "params"]), "");
    }

    #[test]
    fn one_mistake_in_a_swept_node_is_one_error() {
        let at = |line| {
            Some(Location {
                file: "wf.yaml".into(),
                line,
                column: 5,
            })
        };
        let mut errs: Vec<UserError> = (1..=5)
            .map(|a| UserError::at(at(9), format!("p[a={a}]: unknown parameter `bogus`")))
            .collect();
        errs.push(UserError::at(at(9), "p[a=1]: `shape` must be > 0"));
        errs.push(UserError::at(at(3), "q[a=1]: unknown parameter `x`"));
        errs.push(UserError::new("no nodes"));
        errs.push(UserError::new("no nodes"));
        let text = UserErrors(errs).to_string();
        assert_eq!(
            text,
            "no nodes\nerror: wf.yaml:3:5: q[a=1]: unknown parameter `x`\n\
             error: wf.yaml:9:5: p (5 instances: [a=1], [a=2], [a=3] and 2 more): unknown parameter `bogus`\n\
             error: wf.yaml:9:5: p[a=1]: `shape` must be > 0"
        );
    }
}
