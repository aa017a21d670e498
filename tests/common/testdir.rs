//! A fresh folder per test, removed when the test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Name of the event log folder inside a gateway's folder.
pub const LOG_FOLDER: &str = "log";

/// A folder under the system's temp dir for a test's config file, event
/// log, certificates and browser profiles; removed when dropped (also when
/// the test fails). Declare it before the processes that use it, so it
/// outlives them.
pub struct TestDir(PathBuf);

impl TestDir {
    /// A fresh, empty folder; `label` only makes it easy to recognise.
    pub fn new(label: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringway-test-{}-{n}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test folder");
        TestDir(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The event log folder a gateway started in this folder writes to.
    pub fn log_dir(&self) -> PathBuf {
        self.0.join(LOG_FOLDER)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
