//! Shell-style globs over agent names, for an operator's `agents` filter.
//!
//! `*` matches any run of characters (none too), `?` exactly one, and
//! `[...]` one of a set: `[abc]`, ranges `[a-z]`, negated `[!a-z]`; a `]`
//! first in a set is a member, so `[]]` matches `]` and `[[]` matches `[`.
//! Everything else matches itself, case-sensitively, as names are compared
//! everywhere else. Matching works on characters, not bytes.
//!
//! Matching never backtracks more than once per star: it keeps only the
//! last `*` and the name position it resumed from, so a match takes at
//! most (pattern length + 1) x (name length + 1) steps however hostile the
//! pattern (`*a*a*a*a*b` against `aaaa...` is the classic exponential case
//! for recursive matchers). Patterns and names are bounded besides.

use std::fmt;

/// Longest pattern accepted, in characters: twice the longest agent name,
/// room for a class or a wildcard next to every character of one.
pub const MAX_GLOB_CHARS: usize = 2 * crate::proto::MAX_NAME_CHARS;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This character.
    Literal(char),
    /// Any one character.
    One,
    /// Any run of characters.
    Star,
    /// One character in (or, negated, not in) these inclusive ranges.
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::One => true,
            Token::Star => false,
            Token::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        }
    }
}

/// A checked glob pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobError {
    /// The pattern is empty.
    Empty,
    /// Longer than [`MAX_GLOB_CHARS`] (the count given).
    TooLong(usize),
    /// A `[` with no `]` to close it.
    UnclosedClass,
    /// A range whose start is after its end, as `[z-a]`.
    BackwardsRange(char, char),
    /// A control character, which no name shown anywhere should carry.
    Control,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::Empty => f.write_str("is empty"),
            GlobError::TooLong(n) => write!(f, "is {n} characters; at most {MAX_GLOB_CHARS}"),
            GlobError::UnclosedClass => f.write_str("has a [ with no ] to close it"),
            GlobError::BackwardsRange(a, b) => write!(f, "has the range {a}-{b}, which runs backwards"),
            GlobError::Control => f.write_str("has a control character"),
        }
    }
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        if chars.is_empty() {
            return Err(GlobError::Empty);
        }
        if chars.len() > MAX_GLOB_CHARS {
            return Err(GlobError::TooLong(chars.len()));
        }
        if chars.iter().any(|c| c.is_control()) {
            return Err(GlobError::Control);
        }
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let token = match chars[i] {
                '*' => Token::Star,
                '?' => Token::One,
                '[' => {
                    let (class, next) = class(&chars, i + 1)?;
                    i = next;
                    tokens.push(class);
                    continue;
                }
                c => Token::Literal(c),
            };
            // Two stars in a row match what one does; keeping one keeps
            // the step bound in terms of the pattern as written.
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
            i += 1;
        }
        Ok(Glob {
            text: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_counting(name).0
    }

    /// [`Glob::matches`], and how many steps it took (one per comparison
    /// of a pattern position with a name position), for the bound's test.
    fn matches_counting(&self, name: &str) -> (bool, usize) {
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.tokens;
        let (mut p, mut n, mut steps) = (0usize, 0usize, 0usize);
        // The last star seen and the name position its run ends at now.
        let mut resume: Option<(usize, usize)> = None;
        while n < name.len() {
            steps += 1;
            match tokens.get(p) {
                Some(Token::Star) => {
                    resume = Some((p, n));
                    p += 1;
                }
                Some(t) if t.matches(name[n]) => {
                    p += 1;
                    n += 1;
                }
                _ => match resume {
                    // Let the last star take one more character and retry
                    // the rest of the pattern from there.
                    Some((star, start)) => {
                        resume = Some((star, start + 1));
                        p = star + 1;
                        n = start + 1;
                    }
                    None => return (false, steps),
                },
            }
        }
        // The name is used up: only stars may be left.
        while tokens.get(p) == Some(&Token::Star) {
            steps += 1;
            p += 1;
        }
        (p == tokens.len(), steps)
    }
}

/// Parses a class body starting at `start` (just past its `[`); the token
/// and the index just past its `]`.
fn class(chars: &[char], start: usize) -> Result<(Token, usize), GlobError> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i).ok_or(GlobError::UnclosedClass)?;
        if c == ']' && !first {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                if hi < c {
                    return Err(GlobError::BackwardsRange(c, hi));
                }
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap_or_else(|e| panic!("{p:?} {e}"))
    }

    #[test]
    fn stars_and_question_marks() {
        for (pattern, name, want) in [
            ("pc-*", "pc-1", true),
            ("pc-*", "pc-", true),
            ("pc-*", "pc", false),
            ("pc-*", "kiosk-1", false),
            ("kiosk-??", "kiosk-12", true),
            ("kiosk-??", "kiosk-1", false),
            ("kiosk-??", "kiosk-123", false),
            ("*", "", true),
            ("*", "anything at all", true),
            ("*-*-*", "a-b-c", true),
            ("*-*-*", "a-b", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYYcZ", false),
            ("exact", "exact", true),
            ("exact", "Exact", false),
            ("?", "é", true),
            ("caf?", "café", true),
            ("**x", "abx", true),
        ] {
            assert_eq!(glob(pattern).matches(name), want, "{pattern:?} against {name:?}");
        }
    }

    #[test]
    fn classes_ranges_and_negation() {
        for (pattern, name, want) in [
            ("pc-[0-9]", "pc-7", true),
            ("pc-[0-9]", "pc-x", false),
            ("pc-[!0-9]", "pc-x", true),
            ("pc-[^0-9]", "pc-7", false),
            ("[abc]*", "beta", true),
            ("[abc]*", "delta", false),
            ("[]]", "]", true),
            ("[[]", "[", true),
            ("[!]]", "]", false),
            ("[a-]", "-", true),
            ("[a-]", "a", true),
            ("[a-cx-z]", "y", true),
            ("[a-cx-z]", "m", false),
        ] {
            assert_eq!(glob(pattern).matches(name), want, "{pattern:?} against {name:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_their_reason() {
        for (pattern, want) in [
            ("", GlobError::Empty),
            ("pc-[0-9", GlobError::UnclosedClass),
            ("[", GlobError::UnclosedClass),
            ("[]", GlobError::UnclosedClass),
            ("[!", GlobError::UnclosedClass),
            ("[z-a]", GlobError::BackwardsRange('z', 'a')),
            ("pc\n*", GlobError::Control),
        ] {
            assert_eq!(Glob::new(pattern), Err(want), "{pattern:?}");
        }
        assert_eq!(Glob::new(&"*".repeat(129)), Err(GlobError::TooLong(129)));
        assert_eq!(glob(&"?".repeat(128)).as_str().len(), 128);
        assert_eq!(GlobError::UnclosedClass.to_string(), "has a [ with no ] to close it");
    }

    /// The pattern that takes recursive matchers exponential time: many
    /// stars, each followed by a character the name has plenty of, and a
    /// last character it has none of.
    #[test]
    fn a_hostile_pattern_takes_at_most_pattern_times_name_steps() {
        let pattern = format!("{}b", "*a".repeat(63));
        let g = glob(&pattern);
        let name = "a".repeat(crate::proto::MAX_NAME_CHARS);
        let (matched, steps) = g.matches_counting(&name);
        assert!(!matched);
        let bound = (pattern.chars().count() + 1) * (name.len() + 1);
        // A naive recursive matcher tries every way of sharing the name
        // out among the 63 stars before it gives up.
        assert!(steps <= bound, "{steps} steps, bound {bound}");

        // And the near miss that must succeed still does.
        let name = format!("{}b", "a".repeat(63));
        assert!(g.matches(&name));
    }
}
