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
        for (i, e) in errs.iter().enumerate() {
            if i > 0 {
                write!(f, "\nerror: ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
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
}
