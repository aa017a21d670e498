//! The `GWnnn.log` file set in one directory: numbering that resumes
//! where the last run stopped, rotation by size, and pruning of the
//! oldest files past a count.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::EventLogConfig;

/// The `GWnnn.log` file set in one directory.
pub(super) struct LogFiles {
    /// Where and how big; `utc` is the writer's business, not ours.
    pub(super) config: EventLogConfig,
    /// The current file; `None` after an error, so the next line reopens.
    file: Option<File>,
    /// Number of the current file.
    number: u64,
}

impl LogFiles {
    /// Creates `dir` if needed and opens where the log left off.
    pub(super) fn open(config: EventLogConfig) -> io::Result<LogFiles> {
        let mut files = LogFiles {
            config,
            file: None,
            number: 1,
        };
        files.file = Some(files.open_latest()?.0);
        Ok(files)
    }

    /// Opens the highest-numbered file, or the next one if it is full.
    fn open_latest(&mut self) -> io::Result<(File, u64)> {
        let dir = &self.config.dir;
        fs::create_dir_all(dir).map_err(|e| context(e, "directory", dir))?;
        let newest = log_numbers(dir)?.last().copied().unwrap_or(1);
        // Never go below our own number: if the directory was wiped, GW001
        // would make the numbering run backwards.
        let newest = newest.max(self.number);
        let (file, size) = self.start_file(newest)?;
        if self.is_full(size, 1) {
            return self.start_file(newest + 1);
        }
        Ok((file, size))
    }

    /// Opens (creating) file `number`, makes it current and prunes.
    fn start_file(&mut self, number: u64) -> io::Result<(File, u64)> {
        self.number = number;
        let path = self.config.dir.join(file_name(number));
        let opened = OpenOptions::new().create(true).append(true).open(&path);
        let opened = opened.and_then(|f| Ok((f.metadata()?.len(), f)));
        let (size, file) = opened.map_err(|e| context(e, "file", &path))?;
        self.prune();
        Ok((file, size))
    }

    /// Whether `len` more bytes would take a non-empty file past the limit.
    /// An empty file takes any line, however long: none is refused.
    fn is_full(&self, size: u64, len: u64) -> bool {
        let limit = self.config.max_file_kb.saturating_mul(1024);
        limit != 0 && size > 0 && size.saturating_add(len) > limit
    }

    /// Appends one line, rotating first if it would not fit. On error the
    /// file stays closed, so the next call reopens it.
    pub(super) fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let current = self.file.take().map(|f| (f.metadata(), f));
        let (mut file, size) = match current {
            // Reopen a file deleted under us (no links left): writes would
            // succeed but land nowhere the admin can read them.
            Some((Ok(meta), file)) if meta.nlink() > 0 => (file, meta.len()),
            _ => self.open_latest()?,
        };
        // A `usize` always fits in a `u64` on the targets ringway runs on.
        if self.is_full(size, line.len() as u64) {
            (file, _) = self.start_file(self.number + 1)?;
        }
        let path = self.config.dir.join(file_name(self.number));
        file.write_all(line).map_err(|e| context(e, "file", &path))?;
        self.file = Some(file);
        Ok(())
    }

    /// Best effort at shutdown: the log should be on disk, not only in the
    /// page cache, before a restart or a power cut.
    pub(super) fn sync(&self) {
        let _ = self.file.as_ref().map(File::sync_data);
    }

    /// Deletes the oldest `GWnnn.log` files beyond `max_files`. Failures
    /// are only warned about: a stale file must not stop logging.
    fn prune(&self) {
        let keep = usize::try_from(self.config.max_files).unwrap_or(usize::MAX);
        let numbers = match log_numbers(&self.config.dir) {
            Ok(numbers) if keep > 0 => numbers,
            Ok(_) => return,
            Err(e) => return log::warn!("{e}; old event logs are not deleted"),
        };
        let oldest = &numbers[..numbers.len().saturating_sub(keep)];
        // Current is among them only if someone made a higher-numbered file.
        for &number in oldest.iter().filter(|&&n| n != self.number) {
            let path = self.config.dir.join(file_name(number));
            if let Err(e) = fs::remove_file(&path) {
                log::warn!("event log: cannot delete {}: {e}", path.display());
            }
        }
    }
}

/// `GW001.log`: three digits at least, more past 999.
pub(super) fn file_name(number: u64) -> String {
    format!("GW{number:03}.log")
}

/// The number of a name [`file_name`] would produce, and only such names:
/// `GW01.log` or `GW0001.log` are not ours to count or delete.
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("GW")?.strip_suffix(".log")?;
    let number: u64 = digits.parse().ok()?;
    // The round trip also rejects the `+7` that `parse` accepts.
    (file_name(number) == name).then_some(number)
}

/// Numbers of the `GWnnn.log` files in `dir`, ascending numerically.
fn log_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let unreadable = |e| context(e, "directory", dir);
    let mut numbers = vec![];
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            numbers.extend(entry.file_name().to_str().and_then(parse_file_name));
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Puts what failed, and where, into an error for the admin to act on.
fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    let msg = format!("event log {what} {}: {e}", path.display());
    io::Error::new(e.kind(), msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::testdir::TempDir;

    /// A line of exactly 100 bytes, newline included, numbered `i`.
    fn line100(i: usize) -> String {
        format!("line {i:03} {}\n", "x".repeat(100 - 9 - 1))
    }

    fn lines100(range: std::ops::Range<usize>) -> String {
        range.map(line100).collect()
    }

    fn append_all(files: &mut LogFiles, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            files.append(line.as_bytes()).expect("append");
        }
    }

    #[test]
    fn rotates_at_limit_and_oversized_lines_stand_alone() {
        let dir = TempDir::new();
        let mut files = LogFiles::open(dir.config(1, 0)).expect("open");
        append_all(&mut files, (0..25).map(line100));
        let big = "b".repeat(2000) + "\n";
        append_all(&mut files, [big.clone(), "after\n".into()]);
        assert_eq!(dir.names(), (1..=5).map(file_name).collect::<Vec<_>>());
        // Ten 100-byte lines fit in 1024 bytes; an eleventh would not.
        assert_eq!(dir.read("GW001.log"), lines100(0..10));
        assert_eq!(dir.read("GW002.log"), lines100(10..20));
        assert_eq!(dir.read("GW003.log"), lines100(20..25));
        assert_eq!(dir.read("GW004.log"), big);
        assert_eq!(dir.read("GW005.log"), "after\n");
    }

    #[test]
    fn rotation_off_when_max_file_kb_is_zero() {
        let dir = TempDir::new();
        let mut files = LogFiles::open(dir.config(0, 0)).expect("open");
        append_all(&mut files, (0..50).map(line100));
        assert_eq!(dir.names(), ["GW001.log"]);
        assert_eq!(dir.read("GW001.log"), lines100(0..50));
    }

    #[test]
    fn numbering_resumes_where_the_last_run_stopped() {
        let dir = TempDir::new();
        for text in ["first run\n", "second run\n"] {
            let mut files = LogFiles::open(dir.config(1, 0)).expect("open");
            append_all(&mut files, [text.to_string()]);
        }
        assert_eq!(dir.names(), ["GW001.log"]);
        assert_eq!(dir.read("GW001.log"), "first run\nsecond run\n");
        let gw001 = dir.path().join("GW001.log");
        let full = dir.read("GW001.log") + &"f".repeat(1024);
        fs::write(&gw001, full).expect("fill GW001.log");
        let mut files = LogFiles::open(dir.config(1, 0)).expect("open on a full file");
        assert_eq!(dir.names(), ["GW001.log", "GW002.log"]);
        append_all(&mut files, ["third run\n".to_string()]);
        assert_eq!(dir.read("GW002.log"), "third run\n");
    }

    #[test]
    fn a_deleted_file_or_wiped_dir_is_reopened_without_going_backwards() {
        let dir = TempDir::new();
        let mut files = LogFiles::open(dir.config(1, 0)).expect("open");
        append_all(&mut files, (0..11).map(line100));
        assert_eq!(dir.names(), ["GW001.log", "GW002.log"]);
        fs::remove_dir_all(dir.path()).expect("wipe the dir");
        append_all(&mut files, ["after the wipe\n".to_string()]);
        assert_eq!(dir.names(), ["GW002.log"]);
        assert_eq!(dir.read("GW002.log"), "after the wipe\n");
    }

    #[test]
    fn sorts_numerically_and_prunes_only_log_files() {
        assert_eq!(parse_file_name(&file_name(1000)), Some(1000));
        let others = ["GW01.log", "GW+07.log", "GW001.log.bak", "gw004.log"];
        for name in others {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
        let dir = TempDir::new();
        let old = ["GW002.log", "GW999.log", "GW1000.log"];
        let old_line = "01-Jan-22, 00:00:00, old\n"; // 25 bytes
        fs::create_dir_all(dir.path()).expect("create test dir");
        for name in others.iter().chain(&old) {
            fs::write(dir.path().join(name), old_line).expect("write test file");
        }
        let mut files = LogFiles::open(dir.config(1, 2)).expect("open");
        append_all(&mut files, (0..10).map(line100));
        // GW1000, not GW999, is newest; 25 + 9 * 100 bytes fill it.
        let mut expect = vec!["GW1000.log", "GW1001.log"];
        expect.extend(others);
        expect.sort_unstable();
        assert_eq!(dir.names(), expect);
        assert_eq!(dir.read("GW1000.log"), old_line.to_string() + &lines100(0..9));
        assert_eq!(dir.read("GW1001.log"), lines100(9..10));
    }

    #[test]
    fn errors_name_the_path() {
        let bad = TempDir::new();
        fs::write(bad.path(), "a file").expect("block path");
        let err = LogFiles::open(bad.config(1, 0)).err().expect("a file is not a dir");
        let msg = err.to_string();
        assert!(msg.starts_with("event log directory "), "{msg}");
        assert!(msg.contains(&*bad.path().to_string_lossy()), "{msg}");
    }
}
