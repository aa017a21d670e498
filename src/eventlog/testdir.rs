//! Test folders for the event log's unit tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::EventLogConfig;

/// A fresh, not yet created path per test, removed when the test ends.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ringway-eventlog-{}-{n}", std::process::id());
        TempDir(std::env::temp_dir().join(name))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    /// Settings for this folder; UTC, so stamps do not depend on the host.
    pub(super) fn config(&self, max_file_kb: u64, max_files: u32) -> EventLogConfig {
        EventLogConfig {
            dir: self.0.clone(),
            max_file_kb,
            max_files,
            utc: true,
        }
    }

    /// Sorted names in the directory.
    pub(super) fn names(&self) -> Vec<String> {
        let entries = fs::read_dir(&self.0).expect("test dir exists");
        let name = |e: io::Result<fs::DirEntry>| e.expect("entry").file_name();
        let mut names: Vec<_> = entries.map(|e| name(e).to_string_lossy().into()).collect();
        names.sort();
        names
    }

    /// The whole of file `name`.
    pub(super) fn read(&self, name: &str) -> String {
        fs::read_to_string(self.0.join(name)).expect("log file")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Some tests leave a plain file at the path instead of a dir.
        let _ = fs::remove_dir_all(&self.0).or_else(|_| fs::remove_file(&self.0));
    }
}
