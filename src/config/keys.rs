//! Gateway keys: named `[[keys]]` tables (`name` and `key` or `key_file`)
//! and the older plain list `[gateway] keys = [...]`, which stays valid.
//!
//! The parse checks names and inline secrets; a `key_file` is read by the
//! load step ([`KeyEntry::load`]). Keys of the plain list are named
//! `key1`, `key2`, ... by position, so a reordered list renames them:
//! check-config says so and suggests `[[keys]]`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Source};
use crate::auth::{GatewayKey, MIN_KEY_LEN};

/// Longest key name: it appears in every log line and console row about
/// the key's agents, so it must stay short.
pub const MAX_KEY_NAME_LEN: usize = 32;

/// A key shorter than this gets a check-config warning: a proof sniffed on
/// plain HTTP lets anyone test guesses offline, and short keys fall fast.
pub const SHORT_KEY_CHARS: usize = 16;

/// A key whose estimated strength is below this many bits gets a warning.
/// 64 bits is out of reach of an offline search of HMAC-SHA256 guesses;
/// `ringway gen-key` gives 128.
pub const WEAK_KEY_BITS: f64 = 64.0;

/// What the file says when it names no key at all.
const NONE: &str = "no gateway keys: add a [[keys]] table with a name and a key, or [gateway] keys = [...]";

/// One `[[keys]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    name: Spanned<String>,
    key: Option<Spanned<String>>,
    key_file: Option<Spanned<PathBuf>>,
}

/// Where a key's secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySecret {
    /// Written in the config file.
    Inline(String),
    /// Read from this file by the load step (one line; surrounding
    /// whitespace trimmed).
    File(PathBuf),
}

/// A gateway key as the file gives it: named, its secret inline or in a
/// file not yet read.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The name logs, the console, operators and metrics use.
    pub name: String,
    /// 1-based line it was given on, for errors and warnings.
    pub line: usize,
    /// The secret or the file holding it.
    pub secret: KeySecret,
    /// Whether it came from the plain `[gateway] keys` list, so its name
    /// is its position.
    pub from_list: bool,
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySecret::Inline(_) => f.write_str("secret hidden"),
            KeySecret::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyEntry({:?}, {:?})", self.name, self.secret)
    }
}

/// Checks the keys of both forms: at least one in all, names well formed
/// and unique, inline secrets long enough and not given twice.
/// `gateway` is the `[gateway]` section's span, named when no key is given.
pub(super) fn parse_keys(
    list: Option<&Spanned<Vec<Spanned<String>>>>,
    tables: Option<&Vec<Spanned<RawKey>>>,
    gateway: Range<usize>,
    src: &Source,
) -> Result<Vec<KeyEntry>, ConfigError> {
    let mut keys: Vec<KeyEntry> = Vec::new();
    for (i, k) in list
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let entry = KeyEntry {
            name: format!("key{}", i + 1),
            line: src.line(&k.span()),
            secret: KeySecret::Inline(k.get_ref().clone()),
            from_list: true,
        };
        check_inline(&keys, &entry, k.span(), &format!("gateway key #{}", i + 1), src)?;
        keys.push(entry);
    }
    for t in tables.map(Vec::as_slice).unwrap_or_default() {
        let raw = t.get_ref();
        let name = raw.name.get_ref();
        check_key_name(name).map_err(|why| src.error(raw.name.span(), why))?;
        if keys.iter().any(|k| &k.name == name) {
            return Err(src.error(raw.name.span(), format!("key name {name:?} is given twice")));
        }
        let (secret, span) = match (&raw.key, &raw.key_file) {
            (Some(k), None) => (KeySecret::Inline(k.get_ref().clone()), k.span()),
            (None, Some(f)) => (KeySecret::File(f.get_ref().clone()), f.span()),
            _ => {
                return Err(src.error(
                    t.span(),
                    format!("key {name:?} needs exactly one of key = \"...\" or key_file = \"...\""),
                ));
            }
        };
        let entry = KeyEntry {
            name: name.clone(),
            line: src.line(&span),
            secret,
            from_list: false,
        };
        check_inline(&keys, &entry, span, &format!("key {name:?}"), src)?;
        keys.push(entry);
    }
    if keys.is_empty() {
        let span = list.map_or(gateway, |l| l.span());
        return Err(src.error(span, NONE));
    }
    Ok(keys)
}

/// An inline secret's length, and that no earlier inline key is the same.
fn check_inline(
    earlier: &[KeyEntry],
    entry: &KeyEntry,
    span: Range<usize>,
    what: &str,
    src: &Source,
) -> Result<(), ConfigError> {
    let KeySecret::Inline(secret) = &entry.secret else {
        return Ok(());
    };
    check_length(secret, what).map_err(|why| src.error(span.clone(), why))?;
    if earlier.iter().any(|k| k.secret == entry.secret) {
        return Err(src.error(span, format!("{what} is given twice")));
    }
    Ok(())
}

/// The seed's minimum length, counted in characters.
fn check_length(secret: &str, what: &str) -> Result<(), String> {
    let n = secret.chars().count();
    if n < MIN_KEY_LEN {
        return Err(format!("{what} is {n} characters; keys must be at least {MIN_KEY_LEN}"));
    }
    Ok(())
}

/// A name is 1 to [`MAX_KEY_NAME_LEN`] of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit: it goes into log lines, URLs and metric labels
/// unescaped. The reason is one line naming the name.
pub fn check_key_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_KEY_NAME_LEN {
        return Err(format!("key name {name:?} must be 1 to {MAX_KEY_NAME_LEN} characters"));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "key name {name:?} may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit"
        ));
    }
    Ok(())
}

impl KeyEntry {
    /// The running key: the secret as written, or read from its file by
    /// `read` (given the path; the load step bounds and resolves it).
    pub(super) fn load(&self, read: impl FnOnce(&PathBuf) -> Result<String, String>) -> Result<GatewayKey, String> {
        let secret = match &self.secret {
            KeySecret::Inline(s) => s.clone(),
            KeySecret::File(path) => {
                let text = read(path)?;
                let secret = text.trim().to_string();
                check_length(&secret, &format!("key {:?} (from {})", self.name, path.display()))?;
                secret
            }
        };
        Ok(GatewayKey::named(&self.name, &secret))
    }
}

/// Rough strength of a key in bits: its length times the bits of the
/// smaller of the alphabet its character classes span and the number of
/// distinct characters it uses. Crude, but it flags what matters:
/// `"Testing1"` (24 bits), `"aaaaaaaaaaaaaaaa"` (0), dictionary-short keys;
/// 32 hex digits from `ringway gen-key` come out near 128.
pub fn estimated_bits(secret: &str) -> f64 {
    let mut classes = [false; 4];
    let mut seen = std::collections::BTreeSet::new();
    for c in secret.chars() {
        let class = match c {
            'a'..='z' => 0,
            'A'..='Z' => 1,
            '0'..='9' => 2,
            _ => 3,
        };
        classes[class] = true;
        seen.insert(c);
    }
    let alphabet: usize = [26, 26, 10, 33]
        .iter()
        .zip(classes)
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .sum();
    let symbols = alphabet.min(seen.len()).max(1);
    secret.chars().count() as f64 * (symbols as f64).log2()
}

/// What check-config and the gateway's start say about the keys: weak
/// secrets, and names that come from a list's order.
pub(super) fn warnings(entries: &[KeyEntry], keys: &[GatewayKey], file: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (entry, key) in entries.iter().zip(keys) {
        let (n, bits) = (key.secret().chars().count(), estimated_bits(key.secret()));
        if n < SHORT_KEY_CHARS || bits < WEAK_KEY_BITS {
            out.push(format!(
                "{file}:{}: warning: key {:?} is weak ({n} characters, about {bits:.0} bits); anyone who sniffs \
                 one proof on plain HTTP can test guesses offline: use `ringway gen-key`",
                entry.line, entry.name
            ));
        }
    }
    if let Some(first) = entries.iter().find(|e| e.from_list) {
        out.push(format!(
            "{file}:{}: warning: [gateway] keys are named key1, key2, ... by position, so reordering the list \
             renames them: give each a [[keys]] table with a name",
            first.line
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        gateway: Option<Spanned<GatewayKeys>>,
        keys: Option<Vec<Spanned<RawKey>>>,
    }

    #[derive(Deserialize)]
    struct GatewayKeys {
        keys: Option<Spanned<Vec<Spanned<String>>>>,
    }

    fn entries(text: &str) -> Result<Vec<KeyEntry>, String> {
        let src = Source {
            file: "test.toml",
            text,
        };
        let doc: Doc = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let list = doc.gateway.as_ref().and_then(|g| g.get_ref().keys.as_ref());
        parse_keys(list, doc.keys.as_ref(), 0..0, &src).map_err(|e| e.to_string())
    }

    fn parse(text: &str) -> Result<usize, String> {
        entries(text).map(|k| k.len())
    }

    fn names(text: &str) -> Vec<String> {
        entries(text).expect("valid keys").into_iter().map(|k| k.name).collect()
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(parse("[gateway]\nkeys = [\"12345678\", \"abcdefgh\"]\n"), Ok(2));
        assert_eq!(
            parse("[gateway]\n\nkeys = [\"12345678\", \"1234567\"]\n"),
            Err("test.toml:3: gateway key #2 is 7 characters; keys must be at least 8".into())
        );
        assert_eq!(
            parse("[gateway]\nkeys = [\"12345678\",\n \"12345678\"]\n"),
            Err("test.toml:3: gateway key #2 is given twice".into())
        );
        assert_eq!(parse("[gateway]\n\nkeys = []\n"), Err(format!("test.toml:3: {NONE}")));
        assert_eq!(parse(""), Err(format!("test.toml:1: {NONE}")));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // Eight characters in sixteen bytes: long enough.
        assert_eq!(parse("[gateway]\nkeys = [\"ääääääää\"]\n"), Ok(1));
        assert_eq!(
            parse("[gateway]\nkeys = [\"äääääää\"]\n"),
            Err("test.toml:2: gateway key #1 is 7 characters; keys must be at least 8".into())
        );
    }

    #[test]
    fn named_tables_and_the_old_list_live_side_by_side() {
        let text = "[gateway]\nkeys = [\"legacy-secret\"]\n\n[[keys]]\nname = \"acme\"\nkey = \"acme-secret-1\"\n\n\
                    [[keys]]\nname = \"globex\"\nkey_file = \"globex.key\"\n";
        assert_eq!(names(text), ["key1", "acme", "globex"]);
        let all = entries(text).expect("valid keys");
        assert_eq!(all[2].secret, KeySecret::File("globex.key".into()));
        assert_eq!((all[0].line, all[1].line, all[2].line), (2, 6, 10));
    }

    #[test]
    fn named_tables_are_checked() {
        let table = |body: &str| parse(&format!("[[keys]]\n{body}\n"));
        assert_eq!(
            table("name = \"acme\""),
            Err("test.toml:1: key \"acme\" needs exactly one of key = \"...\" or key_file = \"...\"".into())
        );
        assert_eq!(
            table("name = \"acme\"\nkey = \"12345678\"\nkey_file = \"k\""),
            Err("test.toml:1: key \"acme\" needs exactly one of key = \"...\" or key_file = \"...\"".into())
        );
        assert_eq!(
            table("name = \"acme\"\nkey = \"short\""),
            Err("test.toml:3: key \"acme\" is 5 characters; keys must be at least 8".into())
        );
        assert_eq!(
            table("name = \"a b\"\nkey = \"12345678\""),
            Err("test.toml:2: key name \"a b\" may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit".into())
        );
        assert_eq!(
            table(&format!("name = \"{}\"\nkey = \"12345678\"", "n".repeat(33))),
            Err(format!(
                "test.toml:2: key name \"{}\" must be 1 to 32 characters",
                "n".repeat(33)
            ))
        );
        assert_eq!(
            table("name = \"acme\"\nkey = \"12345678\"\nsecret = \"x\""),
            Err("unknown field `secret`, expected one of `name`, `key`, `key_file`".into())
        );
        assert_eq!(
            parse("[[keys]]\nname = \"a\"\nkey = \"12345678\"\n[[keys]]\nname = \"a\"\nkey = \"abcdefgh\"\n"),
            Err("test.toml:5: key name \"a\" is given twice".into())
        );
        assert_eq!(
            parse("[[keys]]\nname = \"a\"\nkey = \"12345678\"\n[[keys]]\nname = \"b\"\nkey = \"12345678\"\n"),
            Err("test.toml:6: key \"b\" is given twice".into())
        );
        assert_eq!(
            parse("[gateway]\nkeys = [\"12345678\"]\n[[keys]]\nname = \"key1\"\nkey = \"abcdefgh\"\n"),
            Err("test.toml:4: key name \"key1\" is given twice".into())
        );
    }

    #[test]
    fn a_key_file_is_read_trimmed_and_checked() {
        let entry = KeyEntry {
            name: "acme".into(),
            line: 3,
            secret: KeySecret::File("acme.key".into()),
            from_list: false,
        };
        let key = entry.load(|_| Ok("  file-secret-1\n".into())).expect("long enough");
        assert_eq!((key.name(), key.id()), ("acme", GatewayKey::new("file-secret-1").id()));
        assert_eq!(
            entry.load(|_| Ok("short\n".into())).map(|_| ()),
            Err("key \"acme\" (from acme.key) is 5 characters; keys must be at least 8".into())
        );
        assert_eq!(entry.load(|_| Err("gone".into())).map(|_| ()), Err("gone".into()));
    }

    #[test]
    fn debug_never_shows_an_inline_secret() {
        let all = entries("[[keys]]\nname = \"acme\"\nkey = \"very-secret-value\"\n").expect("valid");
        assert_eq!(format!("{:?}", all[0]), "KeyEntry(\"acme\", secret hidden)");
    }

    #[test]
    fn strength_is_estimated_from_length_and_variety() {
        assert_eq!(estimated_bits("aaaaaaaaaaaaaaaa"), 0.0);
        assert_eq!(estimated_bits("Testing1"), 24.0);
        assert!(estimated_bits("3f9c0a7be21d45c8906e7fa1b2c3d4e5") >= 120.0);
    }

    #[test]
    fn weak_keys_and_positional_names_are_warned_about() {
        let text =
            "[gateway]\nkeys = [\"Testing1\"]\n[[keys]]\nname = \"acme\"\nkey = \"3f9c0a7be21d45c8906e7fa1b2c3d4e5\"\n";
        let all = entries(text).expect("valid");
        let keys: Vec<GatewayKey> = all
            .iter()
            .map(|e| e.load(|_| unreachable!()).expect("inline"))
            .collect();
        assert_eq!(
            warnings(&all, &keys, "gw.toml"),
            [
                "gw.toml:2: warning: key \"key1\" is weak (8 characters, about 24 bits); anyone who sniffs one proof \
                 on plain HTTP can test guesses offline: use `ringway gen-key`",
                "gw.toml:2: warning: [gateway] keys are named key1, key2, ... by position, so reordering the list \
                 renames them: give each a [[keys]] table with a name",
            ]
        );
        assert_eq!(warnings(&all[1..], &keys[1..], "gw.toml"), Vec::<String>::new());
    }
}
