//! The administrator's event log: one line per gateway event in numbered
//! files `GW001.log`, `GW002.log`, … like NetSupport Gateway32's, so admins'
//! habits and tools for those logs keep working. Unix only (files.rs asks
//! a file for its link count, to notice one deleted under it).
//!
//! Layout: [`EventLog`] (here), the handle event loops hold, never blocks
//! or touches a file: it hands events through a bounded queue to a thread
//! (writer.rs) that stamps them (stamp.rs) and appends them to the file
//! set (files.rs: numbering, rotation by size, pruning). [`sanitize`]
//! (sanitize.rs) makes peer strings safe to log. Each event also goes to
//! `log::info!` (target [`EVENT_TARGET`]) for stderr diagnostics.

mod files;
mod sanitize;
mod stamp;
#[cfg(test)]
mod testdir;
mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use files::LogFiles;
use sanitize::neutralize;
pub use sanitize::{MAX_PEER_STRING_CHARS, sanitize};
use writer::{Msg, Writer};

/// `log` target of the per-event diagnostics line, so operators can filter
/// events in or out of stderr (`RUST_LOG=ringway::event=info`).
pub const EVENT_TARGET: &str = "ringway::event";

/// Lines the queue holds while the writer is busy: at ~100 bytes a line
/// under 1 MB, yet enough for thousands of agents reconnecting at once to
/// a slow disk. Beyond it lines are counted and dropped, never waited for.
const QUEUE_CAPACITY: usize = 8192;

/// Settings, filled in by the config module (which has its own serde types).
#[derive(Debug, Clone, PartialEq)]
pub struct EventLogConfig {
    /// Where the `GWnnn.log` files live; created if missing.
    pub dir: PathBuf,
    /// Size in KiB past which the next file starts, so each file stays
    /// small enough to open in an editor. 0 disables rotation.
    pub max_file_kb: u64,
    /// How many `GWnnn.log` files to keep, oldest deleted first, so the
    /// log cannot fill the disk. 0 keeps all.
    pub max_files: u32,
    /// Stamp lines in UTC, for admins who span time zones.
    pub utc: bool,
}

/// Cheap to clone, Send + Sync; every event loop holds one. Dropping the
/// last clone waits for the writer to drain the queue: do that at shutdown.
#[derive(Clone)]
pub struct EventLog {
    /// `None` for [`EventLog::stderr_only`]: no queue, no thread.
    writer: Option<Arc<WriterHandle>>,
}

/// What the clones of one file-writing [`EventLog`] share.
struct WriterHandle {
    /// The queue into the writer. Declared before `_thread` so it is
    /// dropped first: the writer sees the queue close, drains it, exits.
    tx: SyncSender<Msg>,
    /// Events refused because the queue was full, reported by the writer.
    dropped: Arc<AtomicU64>,
    /// Joined on drop, so every line is written before a restart or exit.
    _thread: JoinOnDrop,
}

/// Waits for the writer thread when the last [`EventLog`] goes away.
struct JoinOnDrop(Option<JoinHandle<()>>);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        // A panicked writer has nothing left to flush: ignore its error.
        let _ = self.0.take().map(JoinHandle::join);
    }
}

impl EventLog {
    /// Opens (creating `dir` if needed) and starts the writer thread. Errors
    /// if the dir cannot be created or the current file cannot be opened,
    /// with the path in the message.
    pub fn start(config: EventLogConfig) -> io::Result<EventLog> {
        Self::start_with_capacity(config, QUEUE_CAPACITY)
    }

    /// [`EventLog::start`] with a chosen queue size, so tests can fill it.
    fn start_with_capacity(config: EventLogConfig, capacity: usize) -> io::Result<EventLog> {
        let files = LogFiles::open(config)?;
        let (tx, rx) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            files,
            dropped: Arc::clone(&dropped),
            failing: false,
        };
        let thread = thread::Builder::new().name("ringway-eventlog".into());
        let spawned = thread.spawn(move || writer.run(rx));
        let thread_error = |e: io::Error| io::Error::new(e.kind(), format!("event log: {e}"));
        let handle = spawned.map_err(thread_error)?;
        let writer = Some(Arc::new(WriterHandle {
            tx,
            dropped,
            _thread: JoinOnDrop(Some(handle)),
        }));
        Ok(EventLog { writer })
    }

    /// An event log that writes no file (only the `log::info!` line): for when
    /// no `[log]` section is configured, and for tests.
    pub fn stderr_only() -> EventLog {
        EventLog { writer: None }
    }

    /// Queue one event line; never blocks. Control characters in `text`
    /// become `?` so that one event is always one line; still pass peer
    /// strings through [`sanitize`], which also caps their length.
    pub fn event(&self, text: impl Into<String>) {
        let text = neutralize(text.into());
        log::info!(target: EVENT_TARGET, "{text}");
        let Some(writer) = &self.writer else { return };
        let at = unix_now();
        // `Disconnected` means the writer panicked: the info line above is
        // then all that can be done.
        if let Err(TrySendError::Full(_)) = writer.tx.try_send(Msg::Event { at, text }) {
            writer.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Blocks until every event queued before this call is written and
    /// flushed to the file (used at shutdown and by tests). Never call from
    /// an event loop.
    ///
    /// Flushed means handed to the kernel, where readers see it; fsync only
    /// happens at exit, as one per flush would cost milliseconds.
    pub fn flush(&self) {
        let Some(writer) = &self.writer else { return };
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        // An error means the writer is gone: nothing left to wait for.
        let _ = writer.tx.send(Msg::Flush(done_tx)).map(|()| done_rx.recv());
    }

    /// Apply new settings (dir / sizes / utc) on reload without losing
    /// queued lines: those queued before go out under the old settings.
    /// If the new dir or file cannot be opened, the old settings stay and
    /// the error names the path. A [`EventLog::stderr_only`] log cannot
    /// start writing files without a restart: `ErrorKind::Unsupported`.
    pub fn reconfigure(&self, config: EventLogConfig) -> io::Result<()> {
        let Some(writer) = &self.writer else {
            let msg = "event log was started without a directory; restart to write files";
            return Err(io::Error::new(io::ErrorKind::Unsupported, msg));
        };
        let gone = || io::Error::other("event log writer thread has stopped");
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let msg = Msg::Reconfigure(config, reply_tx);
        writer.tx.send(msg).map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use testdir::TempDir;

    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    /// The event texts of file `name`, each line's stamp checked by shape.
    fn texts(dir: &TempDir, name: &str) -> Vec<String> {
        let content = dir.read(name);
        assert!(content.ends_with('\n'), "{content:?}");
        content.lines().map(|l| event_text(l).to_owned()).collect()
    }

    /// Checks `dd-Mon-yy, HH:MM:SS, ` by position and returns the rest.
    fn event_text(line: &str) -> &str {
        let (stamp, text) = line.split_at_checked(21).unwrap_or((line, ""));
        let nines = |c: char| if c.is_ascii_digit() { '9' } else { c };
        let shape: String = stamp.chars().map(nines).collect();
        let month = shape.get(3..6).unwrap_or("");
        let ok = MONTHS.contains(&month) && shape == format!("99-{month}-99, 99:99:99, ");
        assert!(ok, "bad timestamp in {line:?}");
        text
    }

    #[test]
    fn writes_exact_lines_one_per_event() {
        let stamp = |at| stamp::timestamp(at, &stamp::zone(true));
        let dir = TempDir::new();
        let log = EventLog::start(dir.config(1, 0)).expect("start");
        let before = unix_now();
        let name = sanitize("<script>alert(1)</script>\r\nGW forged");
        log.event(format!("Client {name} connected"));
        log.event("raw\nnewline");
        log.flush();
        let after = unix_now();
        assert_eq!(dir.names(), ["GW001.log"]);
        let content = dir.read("GW001.log");
        let (forged, raw) = ("<script>alert(1)</script>??GW forged", "raw?newline");
        let expect = |a, b| format!("{}Client {forged} connected\n{}{raw}\n", stamp(a), stamp(b));
        // Each line is stamped with its own second, in order.
        let found = (before..=after).any(|a| (a..=after).any(|b| content == expect(a, b)));
        assert!(found, "{content:?} not stamped in {before}..={after}");
    }

    #[test]
    fn the_last_clone_dropped_drains_the_queue_from_any_thread() {
        let dir = TempDir::new();
        for text in ["first run", "second run"] {
            let log = EventLog::start(dir.config(1, 0)).expect("start");
            let clone = log.clone();
            let other = thread::spawn(move || clone.event(text));
            other.join().expect("event from another thread");
            drop(log); // No flush: the last clone's drop drains and joins.
        }
        assert_eq!(dir.names(), ["GW001.log"]);
        assert_eq!(texts(&dir, "GW001.log"), ["first run", "second run"]);
    }

    #[test]
    fn overflow_is_counted_and_reported() {
        let dir = TempDir::new();
        let log = EventLog::start_with_capacity(dir.config(1, 0), 2).expect("start");
        let handle = log.writer.as_ref().expect("file-writing log");
        let (entered_tx, entered_rx) = mpsc::sync_channel(1);
        let (release_tx, release_rx) = mpsc::sync_channel(1);
        let hold = Msg::Hold(entered_tx, release_rx);
        assert!(handle.tx.send(hold).is_ok() && entered_rx.recv().is_ok());
        // The queue is empty and the writer stalled: two fit, three drop.
        "abcde".chars().for_each(|c| log.event(c));
        assert_eq!(handle.dropped.load(Ordering::Relaxed), 3);
        release_tx.send(()).expect("writer waits");
        log.flush();
        let overflow = "Event log overflow: 3 events dropped";
        assert_eq!(texts(&dir, "GW001.log"), [overflow, "a", "b"]);
        assert_eq!(handle.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn errors_name_the_path_and_never_stop_the_writer() {
        let (a, b, bad) = (TempDir::new(), TempDir::new(), TempDir::new());
        fs::write(bad.path(), "a file").expect("block path");
        let names_bad = |e: io::Error| e.to_string().contains(&*bad.path().to_string_lossy());
        let started = EventLog::start(bad.config(1, 0));
        assert!(started.is_err_and(names_bad));
        let log = EventLog::start(a.config(1, 0)).expect("start");
        log.event("in a");
        log.reconfigure(b.config(1, 0)).expect("move to b");
        log.event("in b");
        // A bad new directory leaves the old one in use.
        assert!(log.reconfigure(bad.config(1, 0)).is_err_and(names_bad));
        log.event("still b");
        log.flush();
        assert_eq!(texts(&a, "GW001.log"), ["in a"]);
        assert_eq!(texts(&b, "GW001.log"), ["in b", "still b"]);
        // A plain file where the directory was: writes and reopening fail.
        fs::remove_dir_all(b.path()).expect("remove dir");
        fs::write(b.path(), "not a dir").expect("block path");
        log.event("lost");
        log.flush();
        fs::remove_file(b.path()).expect("unblock path");
        log.event("after");
        log.flush();
        assert_eq!(b.names(), ["GW001.log"]);
        assert_eq!(texts(&b, "GW001.log"), ["after"]);
        let stderr_only = EventLog::stderr_only();
        stderr_only.event("to stderr only");
        stderr_only.flush();
        let err = stderr_only.reconfigure(a.config(1, 0)).expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<EventLog>();
    }
}
