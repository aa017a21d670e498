//! `[gateway] keys`: the gateway keys agents and controls prove.

use std::ops::Range;

use toml::Spanned;

use super::error::{ConfigError, Source};
use crate::auth::{GatewayKey, MIN_KEY_LEN};

/// Checks the keys: at least one, each long enough, none twice.
/// `gateway` is the section's span, named when `keys` is missing.
pub(super) fn parse_keys(
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
    gateway: Range<usize>,
    src: &Source,
) -> Result<Vec<GatewayKey>, ConfigError> {
    const NONE: &str = "no gateway keys: [gateway] keys must list at least one";
    let Some(raw) = raw else {
        return Err(src.error(gateway, NONE));
    };
    let mut keys: Vec<GatewayKey> = Vec::new();
    for (i, k) in raw.get_ref().iter().enumerate() {
        let n = k.get_ref().chars().count();
        if n < MIN_KEY_LEN {
            return Err(src.error(
                k.span(),
                format!(
                    "gateway key #{} is {n} characters; keys must be at least {MIN_KEY_LEN}",
                    i + 1
                ),
            ));
        }
        let key = GatewayKey::new(k.get_ref());
        if keys.iter().any(|other| other.id() == key.id()) {
            return Err(src.error(k.span(), format!("gateway key #{} is given twice", i + 1)));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(src.error(raw.span(), NONE));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(text: &str) -> Result<usize, String> {
        section(text, "keys", |raw: Option<&Spanned<Vec<Spanned<String>>>>, src| {
            parse_keys(raw, 0..0, src).map(|k| k.len())
        })
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(parse("keys = [\"12345678\", \"abcdefgh\"]\n"), Ok(2));
        assert_eq!(
            parse("\nkeys = [\"12345678\", \"1234567\"]\n"),
            Err("test.toml:2: gateway key #2 is 7 characters; keys must be at least 8".into())
        );
        assert_eq!(
            parse("keys = [\"12345678\",\n \"12345678\"]\n"),
            Err("test.toml:2: gateway key #2 is given twice".into())
        );
        assert_eq!(
            parse("\n\nkeys = []\n"),
            Err("test.toml:3: no gateway keys: [gateway] keys must list at least one".into())
        );
        assert_eq!(
            parse(""),
            Err("test.toml:1: no gateway keys: [gateway] keys must list at least one".into())
        );
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // Eight characters in sixteen bytes: long enough.
        assert_eq!(parse("keys = [\"ääääääää\"]\n"), Ok(1));
        assert_eq!(
            parse("keys = [\"äääääää\"]\n"),
            Err("test.toml:1: gateway key #1 is 7 characters; keys must be at least 8".into())
        );
    }
}
