//! Configuration errors, and the source text that turns byte spans into
//! the line numbers they name.

use std::fmt;
use std::ops::Range;

/// A configuration error: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line of the offending value (0 if the file itself is the problem).
    pub line: usize,
    /// What is wrong, in one line.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A value from the file with the line it was written on, so the load
/// step can say where a file it failed to read was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value as written.
    pub value: T,
    /// Its 1-based line.
    pub line: usize,
}

/// The text being parsed and the name it goes by in errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source<'a> {
    /// The file, as given.
    pub file: &'a str,
    /// Its whole text: spans index into it.
    pub text: &'a str,
}

impl Source<'_> {
    /// 1-based line of the byte span's start.
    pub fn line(&self, span: &Range<usize>) -> usize {
        self.text.as_bytes()[..span.start.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error naming the line where `span` starts.
    pub fn error(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: self.line(&span),
            reason: reason.into(),
        }
    }

    /// Adds `item` to `list`, refusing one that is there already: a value
    /// given twice is a slip that would otherwise go unseen.
    pub fn push_unique<T: PartialEq + fmt::Display>(
        &self,
        list: &mut Vec<T>,
        item: T,
        span: Range<usize>,
        what: &str,
    ) -> Result<(), ConfigError> {
        if list.contains(&item) {
            return Err(self.error(span, format!("{what} {item} is given twice")));
        }
        list.push(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one_and_clamp_past_the_end() {
        let src = Source {
            file: "f.toml",
            text: "a\nb\nc",
        };
        assert_eq!(src.line(&(0..1)), 1);
        assert_eq!(src.line(&(2..3)), 2);
        assert_eq!(src.line(&(4..5)), 3);
        assert_eq!(src.line(&(99..100)), 3);
        assert_eq!(src.error(2..3, "bad").to_string(), "f.toml:2: bad");
        let whole = ConfigError {
            file: "f.toml".into(),
            line: 0,
            reason: "cannot read: gone".into(),
        };
        assert_eq!(whole.to_string(), "f.toml: cannot read: gone");
    }
}
