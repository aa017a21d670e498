//! The audit trail (`[audit] file`): who reached what, as one JSON object
//! per line, for the tools that read such files (jq, a SIEM's file
//! collector). Every sign-in (with its outcome), browse and session (its
//! start, then its end with the bytes each way) is a record.
//!
//! Records are written by a thread of their own behind a bounded queue,
//! like the event log; a full queue drops records and the next record
//! written says how many (`"dropped": N` on an `audit_gap` record), so a
//! gap is never silent. The file rotates by size, logrotate style: the
//! current file keeps its name, the one before is `FILE.1`, then `FILE.2`,
//! up to `max_files` in all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Records that may wait for the writer: a burst of sessions ending at
/// once (a reload removing a busy key) fits; a writer stuck on a full disk
/// costs at most this many lines of memory, then drops and counts.
pub const QUEUE: usize = 4096;

/// Where the audit trail goes and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The current file; older ones are `FILE.1`, `FILE.2`, ….
    pub file: PathBuf,
    /// Size at which the file rotates (0: never).
    pub max_file_kb: u64,
    /// Files kept, the current one included.
    pub max_files: u32,
}

enum Msg {
    Line(String),
    Reconfigure(Option<AuditConfig>, SyncSender<io::Result<()>>),
    Flush(SyncSender<()>),
}

/// A handle on the audit trail; cheap to share. Without `[audit]` every
/// record is dropped at once, unserialised.
#[derive(Debug)]
pub struct Audit {
    tx: Mutex<Option<SyncSender<Msg>>>,
    on: std::sync::atomic::AtomicBool,
    dropped: Arc<AtomicU64>,
}

impl Audit {
    /// Starts the writer with `config` (or off); fails if the file cannot
    /// be opened.
    pub fn start(config: Option<AuditConfig>) -> io::Result<Audit> {
        let files = config.map(AuditFiles::open).transpose()?;
        let on = files.is_some();
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = sync_channel(QUEUE);
        let writer_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("ringway-audit".into())
            .spawn(move || write_loop(rx, files, &writer_dropped))?;
        Ok(Audit {
            tx: Mutex::new(Some(tx)),
            on: std::sync::atomic::AtomicBool::new(on),
            dropped,
        })
    }

    /// Records `event` with the fields `fields` gives, stamped now (UTC,
    /// RFC 3339). Without `[audit]` nothing is built: `fields` is not
    /// called, so a session or sign-in pays nothing for an audit trail
    /// that is off.
    pub fn record(&self, event: &str, fields: impl FnOnce() -> Vec<(&'static str, Value)>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let fields = fields();
        let mut object = Map::new();
        object.insert("ts".into(), Value::String(crate::timefmt::rfc3339(SystemTime::now())));
        object.insert("event".into(), Value::String(event.into()));
        for (k, v) in fields {
            object.insert(k.into(), v);
        }
        let line = Value::Object(object).to_string();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.try_send(Msg::Line(line)));
        if !matches!(sent, Some(Ok(()))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies new settings after the records queued before them.
    pub fn reconfigure(&self, config: Option<AuditConfig>) -> io::Result<()> {
        let on = config.is_some();
        let (done, answer) = sync_channel(1);
        self.send(Msg::Reconfigure(config, done))?;
        let result = answer
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the audit writer is gone")));
        if result.is_ok() {
            self.on.store(on, Ordering::Relaxed);
        }
        result
    }

    /// Returns once every record queued before is written.
    pub fn flush(&self) {
        let (done, answer) = sync_channel(1);
        if self.send(Msg::Flush(done)).is_ok() {
            let _ = answer.recv();
        }
    }

    fn send(&self, msg: Msg) -> io::Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tx.ok_or_else(|| io::Error::other("the audit writer is gone"))?
            .send(msg)
            .map_err(|_| io::Error::other("the audit writer is gone"))
    }
}

fn write_loop(rx: Receiver<Msg>, mut files: Option<AuditFiles>, dropped: &AtomicU64) {
    let mut failing = false;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(line) => {
                let Some(f) = files.as_mut() else { continue };
                let lost = dropped.swap(0, Ordering::Relaxed);
                let mut text = String::new();
                if lost > 0 {
                    let gap = serde_json::json!({
                        "ts": crate::timefmt::rfc3339(SystemTime::now()),
                        "event": "audit_gap",
                        "dropped": lost,
                    });
                    text.push_str(&gap.to_string());
                    text.push('\n');
                }
                text.push_str(&line);
                text.push('\n');
                match f.append(text.as_bytes()) {
                    Ok(()) => failing = false,
                    Err(e) => {
                        // Counted as dropped, so the next record says so.
                        dropped.fetch_add(1 + lost, Ordering::Relaxed);
                        if !failing {
                            log::error!("audit: {e}");
                        }
                        failing = true;
                    }
                }
            }
            Msg::Reconfigure(config, done) => {
                let result = match config {
                    None => {
                        files = None;
                        Ok(())
                    }
                    Some(c) if files.as_ref().is_some_and(|f| f.config == c) => Ok(()),
                    Some(c) => AuditFiles::open(c).map(|f| files = Some(f)),
                };
                let _ = done.send(result);
            }
            Msg::Flush(done) => {
                if let Some(f) = &files {
                    f.sync();
                }
                let _ = done.send(());
            }
        }
    }
}

/// The audit file and its rotated predecessors.
struct AuditFiles {
    config: AuditConfig,
    file: File,
    size: u64,
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

/// `FILE.n`: the `n`th file before the current one.
fn rotated(file: &Path, n: u32) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl AuditFiles {
    fn open(config: AuditConfig) -> io::Result<AuditFiles> {
        if let Some(dir) = config.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| context(e, "create the folder", dir))?;
        }
        let (file, size) = Self::open_current(&config.file)?;
        Ok(AuditFiles { config, file, size })
    }

    fn open_current(path: &Path) -> io::Result<(File, u64)> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Who reached what, from where: for the administrator only.
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(|e| context(e, "open", path))?;
        let size = file.metadata().map_err(|e| context(e, "read", path))?.len();
        Ok((file, size))
    }

    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let limit = self.config.max_file_kb.saturating_mul(1024);
        if limit != 0 && self.size > 0 && self.size.saturating_add(line.len() as u64) > limit {
            self.rotate()?;
        }
        let path = &self.config.file;
        self.file.write_all(line).map_err(|e| context(e, "write", path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// FILE.(n-1) -> FILE.n, …, FILE -> FILE.1; the oldest past
    /// `max_files` is deleted.
    fn rotate(&mut self) -> io::Result<()> {
        let file = &self.config.file;
        let keep = self.config.max_files.max(1);
        let _ = self.file.sync_data();
        if keep == 1 {
            let _ = fs::remove_file(file);
        } else {
            let _ = fs::remove_file(rotated(file, keep - 1));
            for n in (1..keep - 1).rev() {
                let from = rotated(file, n);
                if from.exists() {
                    fs::rename(&from, rotated(file, n + 1)).map_err(|e| context(e, "rotate", &from))?;
                }
            }
            fs::rename(file, rotated(file, 1)).map_err(|e| context(e, "rotate", file))?;
        }
        let (f, size) = Self::open_current(file)?;
        self.file = f;
        self.size = size;
        Ok(())
    }

    fn sync(&self) {
        let _ = self.file.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringway-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn records_are_json_lines_with_a_stamp_and_the_event() {
        let d = dir("lines");
        let file = d.join("audit.jsonl");
        let audit = Audit::start(Some(AuditConfig {
            file: file.clone(),
            max_file_kb: 0,
            max_files: 3,
        }))
        .expect("start");
        audit.record("browse", || vec![("operator", "alice".into()), ("agents", 2.into())]);
        audit.record("sign_in", || vec![("outcome", "bad \"quote\"\n".into())]);
        audit.flush();
        let got = lines(&file);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0]["event"].as_str(), got[0]["agents"].as_u64()),
            (Some("browse"), Some(2))
        );
        assert_eq!(got[1]["outcome"], "bad \"quote\"\n");
        assert!(
            got[0]["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{:?}",
            got[0]["ts"]
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn files_rotate_by_size_and_keep_max_files() {
        let d = dir("rotate");
        let file = d.join("audit.jsonl");
        let audit = Audit::start(Some(AuditConfig {
            file: file.clone(),
            max_file_kb: 1,
            max_files: 3,
        }))
        .expect("start");
        let pad = "x".repeat(400);
        for i in 0..20u64 {
            audit.record("session_end", || vec![("n", i.into()), ("pad", pad.clone().into())]);
        }
        audit.flush();
        // Two ~470-byte records per 1 KiB file; three files kept.
        let n = |p: &Path| lines(p).iter().map(|v| v["n"].as_u64().expect("n")).collect::<Vec<_>>();
        assert_eq!(n(&file), vec![18, 19]);
        assert_eq!(n(&rotated(&file, 1)), vec![16, 17]);
        assert_eq!(n(&rotated(&file, 2)), vec![14, 15]);
        assert!(!rotated(&file, 3).exists(), "only max_files are kept");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn off_records_nothing_and_a_reconfigure_turns_it_on() {
        let d = dir("reconf");
        let file = d.join("audit.jsonl");
        let audit = Audit::start(None).expect("start");
        audit.record("browse", || panic!("fields are not built while the audit trail is off"));
        audit
            .reconfigure(Some(AuditConfig {
                file: file.clone(),
                max_file_kb: 0,
                max_files: 1,
            }))
            .expect("reconfigure");
        audit.record("browse", || vec![("operator", "bob".into())]);
        audit.flush();
        let got = lines(&file);
        assert_eq!(got.len(), 1, "the record before [audit] was not kept: {got:?}");
        assert_eq!(got[0]["operator"], "bob");
        let _ = fs::remove_dir_all(&d);
    }
}
