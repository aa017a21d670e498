//! The `[audit]` section: the audit trail's file (JSON lines, see
//! `crate::audit`) and how much of it is kept.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::bound::Bound;
use super::error::{ConfigError, Source};
use crate::audit::AuditConfig;

/// `max_file_kb`: 10 MB per file holds some 30,000 records (a busy day of
/// a team's sessions) and still opens in an editor; 0 never rotates.
pub const AUDIT_MAX_FILE_KB: Bound = Bound {
    key: "max_file_kb",
    default: 10_240,
    min: 0,
    max: 1 << 30,
};
/// `max_files`: ten files, the current one included, as the event log
/// keeps; the bound keeps rotation's renames few.
pub const AUDIT_MAX_FILES: Bound = Bound {
    key: "max_files",
    default: 10,
    min: 1,
    max: 1000,
};

/// `[audit]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    file: Spanned<String>,
    max_file_kb: Option<Spanned<u64>>,
    max_files: Option<Spanned<u64>>,
}

/// Checks `[audit]`; the path stays as written (the load step takes a
/// relative one from the config file's folder). Absent: no audit trail.
pub(super) fn parse_audit(raw: Option<&RawAudit>, src: &Source) -> Result<Option<AuditConfig>, ConfigError> {
    let Some(a) = raw else { return Ok(None) };
    let file = a.file.get_ref();
    if file.is_empty() || file.ends_with('/') {
        return Err(src.error(a.file.span(), "audit file must name a file"));
    }
    Ok(Some(AuditConfig {
        file: PathBuf::from(file),
        max_file_kb: AUDIT_MAX_FILE_KB.take(&a.max_file_kb, src)?,
        // AUDIT_MAX_FILES.max fits a u32.
        max_files: AUDIT_MAX_FILES.take(&a.max_files, src)? as u32,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<Option<AuditConfig>, String> {
        section(&format!("[audit]\n{body}"), "audit", parse_audit)
    }

    #[test]
    fn defaults_and_settings() {
        assert_eq!(section("", "audit", parse_audit), Ok(None));
        assert_eq!(
            parse("file = \"audit.jsonl\"\n"),
            Ok(Some(AuditConfig {
                file: "audit.jsonl".into(),
                max_file_kb: 10_240,
                max_files: 10,
            }))
        );
        assert_eq!(
            parse("file = \"/var/log/ringway/audit.jsonl\"\nmax_file_kb = 0\nmax_files = 1\n")
                .map(|a| a.map(|a| (a.max_file_kb, a.max_files))),
            Ok(Some((0, 1)))
        );
    }

    #[test]
    fn bad_fields_are_refused_with_their_line() {
        for (body, want) in [
            ("file = \"\"\n", "test.toml:2: audit file must name a file"),
            ("file = \"logs/\"\n", "test.toml:2: audit file must name a file"),
            (
                "file = \"a\"\nmax_files = 0\n",
                "test.toml:3: max_files = 0 is out of range (1 to 1000)",
            ),
        ] {
            assert_eq!(parse(body), Err(want.to_string()), "{body}");
        }
        assert!(parse("max_files = 2\n").is_err(), "file is required");
    }
}
