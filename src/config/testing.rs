//! Test helper: run one section's check on a document holding only that
//! section, through the real TOML deserializer (so spans, and the line
//! numbers errors give, are the real ones).

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::error::{ConfigError, Source};

/// Deserializes `text` as `{ key = R }`, runs `check` on the `R` (or on
/// `None` when `key` is absent) and gives the outcome, errors as text.
pub(super) fn section<R: DeserializeOwned, T>(
    text: &str,
    key: &str,
    check: impl FnOnce(Option<&R>, &Source) -> Result<T, ConfigError>,
) -> Result<T, String> {
    let src = Source {
        file: "test.toml",
        text,
    };
    let mut doc: HashMap<String, R> = toml::from_str(text).map_err(|e| e.message().to_string())?;
    check(doc.remove(key).as_ref(), &src).map_err(|e| e.to_string())
}
