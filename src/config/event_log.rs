//! The `[log]` section: the administrator's event log files.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::bound::Bound;
use super::error::{ConfigError, Source};
use crate::eventlog::EventLogConfig;

/// `max_file_kb`: the seed's 1,000 KB keeps each file small enough to open
/// in an editor; a terabyte per file is past any sense.
pub const LOG_MAX_FILE_KB: Bound = Bound {
    key: "max_file_kb",
    default: 1000,
    min: 1,
    max: 1 << 30,
};
/// `max_files`: the seed's ten; the bound keeps the folder listable.
pub const LOG_MAX_FILES: Bound = Bound {
    key: "max_files",
    default: 10,
    min: 1,
    max: 100_000,
};

/// `[log]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    dir: Spanned<String>,
    max_file_kb: Option<Spanned<u64>>,
    max_files: Option<Spanned<u64>>,
    utc: Option<bool>,
}

/// Checks `[log]`; the folder stays as written (the load step takes a
/// relative one from the config file's folder). Absent: stderr only.
pub(super) fn parse_log(raw: Option<&RawLog>, src: &Source) -> Result<Option<EventLogConfig>, ConfigError> {
    let Some(l) = raw else { return Ok(None) };
    if l.dir.get_ref().is_empty() {
        return Err(src.error(l.dir.span(), "log dir must not be empty"));
    }
    Ok(Some(EventLogConfig {
        dir: PathBuf::from(l.dir.get_ref()),
        max_file_kb: LOG_MAX_FILE_KB.take(&l.max_file_kb, src)?,
        // LOG_MAX_FILES.max fits a u32.
        max_files: LOG_MAX_FILES.take(&l.max_files, src)? as u32,
        utc: l.utc.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<Option<EventLogConfig>, String> {
        section(&format!("[log]\n{body}"), "log", parse_log)
    }

    #[test]
    fn defaults_and_paths_as_written() {
        assert_eq!(section("", "log", parse_log).map(|l| l.is_none()), Ok(true));
        let l = parse("dir = \"log\"\n").expect("valid").expect("a log");
        assert_eq!(l.dir, PathBuf::from("log"));
        assert_eq!((l.max_file_kb, l.max_files, l.utc), (1000, 10, false));
        let l = parse("dir = \"/var/log/rw\"\nmax_files = 3\nutc = true\n")
            .expect("valid")
            .expect("a log");
        assert_eq!((l.dir, l.max_files, l.utc), (PathBuf::from("/var/log/rw"), 3, true));
    }

    #[test]
    fn bounds_and_empty_dir() {
        assert_eq!(
            parse("dir = \"\"\n").map(|_| ()),
            Err("test.toml:2: log dir must not be empty".into())
        );
        for (line, want) in [
            ("max_file_kb = 1073741824", Ok(1 << 30)),
            (
                "max_file_kb = 0",
                Err("test.toml:3: max_file_kb = 0 is out of range (1 to 1073741824)"),
            ),
            (
                "max_file_kb = 1073741825",
                Err("test.toml:3: max_file_kb = 1073741825 is out of range (1 to 1073741824)"),
            ),
            ("max_files = 1", Ok(1)),
            ("max_files = 100000", Ok(100_000)),
            (
                "max_files = 0",
                Err("test.toml:3: max_files = 0 is out of range (1 to 100000)"),
            ),
            (
                "max_files = 100001",
                Err("test.toml:3: max_files = 100001 is out of range (1 to 100000)"),
            ),
        ] {
            let got = parse(&format!("dir = \"d\"\n{line}\n")).map(|l| {
                let l = l.expect("a log");
                if line.starts_with("max_files") {
                    u64::from(l.max_files)
                } else {
                    l.max_file_kb
                }
            });
            assert_eq!(got, want.map_err(String::from), "{line}");
        }
    }
}
