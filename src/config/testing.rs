//! Test helpers: run one section's check on a document holding only that
//! section, through the real TOML deserializer (so spans, and the line
//! numbers errors give, are the real ones); a scratch folder for the files
//! a load step reads.

use std::collections::HashMap;
use std::path::PathBuf;

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

/// A fresh folder under the system's temporary one, for the files a load
/// step reads; removed when dropped.
pub(super) struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty folder; `name` keeps parallel tests apart.
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ringway-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
