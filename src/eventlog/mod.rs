//! The administrator's event log: one line per gateway event in numbered
//! files `GW001.log`, `GW002.log`, … like NetSupport Gateway32's, so admins'
//! habits and tools for those logs keep working. Unix only (files.rs asks
//! a file for its link count, to notice one deleted under it).
//!
//! Layout: [`EventLog`] (here), the handle event loops hold, never blocks
//! or touches a file: it hands events through a bounded queue to a thread
//! (writer.rs) that summarises repeats from one peer (repeats.rs), stamps
//! lines (stamp.rs) and appends them to the file set (files.rs:
//! numbering, rotation by size, pruning). [`sanitize`] (sanitize.rs)
//! makes peer strings safe to log. Each line also goes to `log::info!`
//! (target [`EVENT_TARGET`]) for stderr diagnostics.

mod files;
mod repeats;
mod sanitize;
mod stamp;
#[cfg(test)]
mod testdir;
mod writer;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use files::LogFiles;
use repeats::Repeats;
pub use repeats::{MAX_SOURCES, REPEAT_WINDOW};
use sanitize::neutralize;
pub use sanitize::{MAX_PEER_STRING_CHARS, sanitize};
use writer::{Counters, Msg, Writer};

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
    /// `None` only if a stderr-only log could not start its thread: events
    /// then go straight to stderr, repeats and all.
    writer: Option<Arc<WriterHandle>>,
}

/// What the clones of one [`EventLog`] share.
struct WriterHandle {
    /// The queue into the writer. Declared before `_thread` so it is
    /// dropped first: the writer sees the queue close, drains it, exits.
    tx: SyncSender<Msg>,
    /// Refused events, and the peers' events now in the queue.
    counters: Arc<Counters>,
    /// Most [`EventLog::event_from`] lines in the queue at once: half of
    /// it, so however fast peers fail, the gateway's own events (a client
    /// connecting, a reload) still find room.
    sourced_share: usize,
    /// False for [`EventLog::stderr_only`], whose writer only summarises
    /// repeats for stderr and cannot start writing files on a reload.
    writes_files: bool,
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
        Self::spawn(Some(LogFiles::open(config)?), QUEUE_CAPACITY, REPEAT_WINDOW)
    }

    /// An event log that writes no file (only the `log::info!` line): for when
    /// no `[log]` section is configured, and for tests. It still has a
    /// thread, which summarises [`EventLog::event_from`]'s repeats.
    pub fn stderr_only() -> EventLog {
        Self::spawn(None, QUEUE_CAPACITY, REPEAT_WINDOW).unwrap_or_else(|e| {
            log::warn!("{e}; repeated events from peers are not summarised");
            EventLog { writer: None }
        })
    }

    /// Starts the writer thread on `files` (none: stderr only), with a
    /// queue of `capacity` and windows of `window` (tests shrink both).
    fn spawn(files: Option<LogFiles>, capacity: usize, window: Duration) -> io::Result<EventLog> {
        let writes_files = files.is_some();
        let (tx, rx) = mpsc::sync_channel(capacity);
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(files, Arc::clone(&counters), Repeats::new(window, MAX_SOURCES));
        let thread = thread::Builder::new().name("ringway-eventlog".into());
        let spawned = thread.spawn(move || writer.run(rx));
        let thread_error = |e: io::Error| io::Error::new(e.kind(), format!("event log: {e}"));
        let handle = spawned.map_err(thread_error)?;
        let writer = Some(Arc::new(WriterHandle {
            tx,
            counters,
            sourced_share: capacity / 2,
            writes_files,
            _thread: JoinOnDrop(Some(handle)),
        }));
        Ok(EventLog { writer })
    }

    /// Queue one event line; never blocks. Control characters in `text`
    /// become `?` so that one event is always one line; still pass peer
    /// strings through [`sanitize`], which also caps their length.
    /// Never summarised: use it for what the gateway itself does or
    /// decides (a client connected, a reload), which no peer can repeat
    /// at will.
    pub fn event(&self, text: impl Into<String>) {
        let text = neutralize(text.into());
        log::info!(target: EVENT_TARGET, "{text}");
        let Some(writer) = self.writer.as_ref().filter(|w| w.writes_files) else {
            return;
        };
        let at = unix_now();
        // `Disconnected` means the writer panicked: the info line above is
        // then all that can be done.
        if let Err(TrySendError::Full(_)) = writer.tx.try_send(Msg::Event { at, text }) {
            writer.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queue an event that a peer at `source` caused and could repeat at
    /// will (a failed key proof); never blocks. The first such line from a
    /// source (an IPv4 address, an IPv6 /64) in [`REPEAT_WINDOW`] is
    /// written as is, to the file and stderr alike; the rest are counted,
    /// and when the window closes one line gives the last of them and how
    /// many: `… and 3,199 more from 127.0.0.2 in the last 10 s`. Past
    /// [`MAX_SOURCES`] sources, new ones share one window ("from other
    /// sources"). So no flood of them can rotate real events out.
    pub fn event_from(&self, source: IpAddr, text: impl Into<String>) {
        let text = neutralize(text.into());
        let Some(writer) = &self.writer else {
            return log::info!(target: EVENT_TARGET, "{text}");
        };
        let (counters, at) = (&writer.counters, unix_now());
        if counters.sourced_queued.fetch_add(1, Ordering::Relaxed) >= writer.sourced_share {
            counters.sourced_queued.fetch_sub(1, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let refused = match writer.tx.try_send(Msg::EventFrom { at, source, text }) {
            Ok(()) => return,
            Err(refused) => refused,
        };
        counters.sourced_queued.fetch_sub(1, Ordering::Relaxed);
        match refused {
            TrySendError::Full(_) => _ = counters.dropped.fetch_add(1, Ordering::Relaxed),
            // The writer panicked: stderr is all that is left.
            TrySendError::Disconnected(Msg::EventFrom { text, .. }) => {
                log::info!(target: EVENT_TARGET, "{text}");
            }
            TrySendError::Disconnected(_) => {}
        }
    }

    /// Blocks until every event queued before this call is written and
    /// flushed to the file (used at shutdown and by tests). Never call from
    /// an event loop.
    ///
    /// Flushed means handed to the kernel, where readers see it; fsync only
    /// happens at exit, as one per flush would cost milliseconds. Repeats
    /// counted in a window still open are not written yet: their summary
    /// comes when the window closes (or when the last clone is dropped).
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
        let Some(writer) = self.writer.as_ref().filter(|w| w.writes_files) else {
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

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    /// A file-writing log with a queue of `capacity` and windows of `window`.
    fn start_small(dir: &TempDir, capacity: usize, window: Duration) -> EventLog {
        let files = LogFiles::open(dir.config(1, 0)).expect("open");
        EventLog::spawn(Some(files), capacity, window).expect("start")
    }

    /// Stalls `log`'s writer until the returned sender is used or dropped.
    fn hold(log: &EventLog) -> SyncSender<()> {
        let handle = log.writer.as_ref().expect("a writer");
        let (entered_tx, entered_rx) = mpsc::sync_channel(1);
        let (release_tx, release_rx) = mpsc::sync_channel(1);
        let hold = Msg::Hold(entered_tx, release_rx);
        assert!(handle.tx.send(hold).is_ok() && entered_rx.recv().is_ok());
        release_tx
    }

    /// Every line the summariser of `log` gives back from now on.
    fn observe(log: &EventLog) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::sync_channel(16);
        let handle = log.writer.as_ref().expect("a writer");
        assert!(handle.tx.send(Msg::Observe(tx)).is_ok());
        rx
    }

    #[test]
    fn repeats_from_a_peer_are_summed_on_time_and_real_events_never_are() {
        let dir = TempDir::new();
        let window = Duration::from_millis(200);
        let log = start_small(&dir, QUEUE_CAPACITY, window);
        let lines = observe(&log);
        for i in 0..5 {
            log.event_from(PEER, format!("Security check failed #{i}"));
            log.event(format!("Client pc{i} connected"));
        }
        log.flush();
        let real: Vec<String> = (0..5).map(|i| format!("Client pc{i} connected")).collect();
        let first = "Security check failed #0".to_string();
        assert_eq!(texts(&dir, "GW001.log"), [vec![first.clone()], real.clone()].concat());
        // No event follows: the writer wakes for the deadline by itself.
        let wait = Duration::from_secs(5);
        assert_eq!(lines.recv_timeout(wait).as_deref(), Ok(first.as_str()));
        let summary = "Security check failed #4 … and 4 more from 127.0.0.2 in the last 1 s";
        assert_eq!(lines.recv_timeout(wait).as_deref(), Ok(summary));
        log.flush();
        let expect = [vec![first], real, vec![summary.to_string()]].concat();
        assert_eq!(texts(&dir, "GW001.log"), expect);
    }

    #[test]
    fn peers_fill_only_their_share_of_the_queue_and_drop_sums_open_windows() {
        let dir = TempDir::new();
        let log = start_small(&dir, 4, REPEAT_WINDOW);
        let release = hold(&log);
        // The writer is stalled: peers get two of the four places ...
        (0..5).for_each(|i| log.event_from(PEER, format!("bad {i}")));
        // ... and the gateway's own events the other two.
        log.event("Client pc1 connected");
        log.event("Client pc2 connected");
        let counters = &log.writer.as_ref().expect("a writer").counters;
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(counters.sourced_queued.load(Ordering::Relaxed), 2);
        release.send(()).expect("writer waits");
        log.flush();
        assert_eq!(counters.sourced_queued.load(Ordering::Relaxed), 0);
        let overflow = "Event log overflow: 3 events dropped";
        let written = [overflow, "bad 0", "Client pc1 connected", "Client pc2 connected"];
        assert_eq!(texts(&dir, "GW001.log"), written);
        // Shutdown cuts the window short but keeps its count.
        drop(log);
        let summary = "bad 1 … and 1 more from 127.0.0.2 in the last 1 s";
        assert_eq!(texts(&dir, "GW001.log"), [&written[..], &[summary]].concat());
    }

    #[test]
    fn a_stderr_only_log_summarises_too_and_writes_no_file() {
        let log = EventLog::stderr_only();
        let lines = observe(&log);
        (0..3).for_each(|i| log.event_from(PEER, format!("bad {i}")));
        log.event("Client pc1 connected");
        drop(log);
        let got: Vec<String> = lines.iter().collect();
        assert_eq!(got, ["bad 0", "bad 2 … and 2 more from 127.0.0.2 in the last 1 s"]);
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
        let log = start_small(&dir, 2, REPEAT_WINDOW);
        let release_tx = hold(&log);
        let counters = &log.writer.as_ref().expect("a writer").counters;
        // The queue is empty and the writer stalled: two fit, three drop.
        "abcde".chars().for_each(|c| log.event(c));
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 3);
        release_tx.send(()).expect("writer waits");
        log.flush();
        let overflow = "Event log overflow: 3 events dropped";
        assert_eq!(texts(&dir, "GW001.log"), [overflow, "a", "b"]);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
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
