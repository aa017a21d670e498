//! The administrator's event log: one line per gateway event in numbered
//! files `GW001.log`, `GW002.log`, … like NetSupport Gateway32's, so admins'
//! habits and tools for those logs keep working. Unix only (`localtime_r`).
//!
//! Layout: [`EventLog`], the handle event loops hold, never blocks or
//! touches a file: it hands events through a bounded queue to a thread
//! (`Writer`) that stamps and writes them; `LogFiles` owns the file set
//! (numbering, rotation by size, pruning). Each event also goes to
//! `log::info!` (target [`EVENT_TARGET`]) for stderr diagnostics.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

/// `log` target of the per-event diagnostics line, so operators can filter
/// events in or out of stderr (`RUST_LOG=ringway::event=info`).
pub const EVENT_TARGET: &str = "ringway::event";

/// Longest peer-supplied string [`sanitize`] lets into an event, in chars:
/// enough to identify a peer, short enough to keep a line on one row.
pub const MAX_PEER_STRING_CHARS: usize = 64;

/// Lines the queue holds while the writer is busy: at ~100 bytes a line
/// under 1 MB, yet enough for thousands of agents reconnecting at once to
/// a slow disk. Beyond it lines are counted and dropped, never waited for.
const QUEUE_CAPACITY: usize = 8192;

/// Month names as Gateway32 writes them, indexed by `tm_mon`.
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

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

/// What travels from [`EventLog`] to the writer thread.
enum Msg {
    /// One event; `at` is Unix seconds, taken when the event happened
    /// rather than when a lagging writer gets to it.
    Event { at: i64, text: String },
    /// Answered once everything queued before has been written.
    Flush(SyncSender<()>),
    /// New settings, applied after the lines queued before.
    Reconfigure(EventLogConfig, SyncSender<io::Result<()>>),
    /// Tests: say so on the first channel, stall until the second fires.
    #[cfg(test)]
    Hold(SyncSender<()>, Receiver<()>),
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

/// Makes a peer-supplied string safe to put in an event: every control
/// character (CR, LF, TAB, DEL, all of Unicode category Cc), and the line
/// separators and bidi overrides some viewers render as breaks or
/// reorderings, becomes `?`; the result is capped at
/// [`MAX_PEER_STRING_CHARS`] chars, the last being `…` when cut.
///
/// Why: agents choose their own names. Without this, a name such as
/// `"x\r\n29-Jun-22, 16:11:20, Operator admin logged in"` would forge a
/// whole log line, and a megabyte-long name would flood the log.
pub fn sanitize(s: &str) -> String {
    let cut = s.chars().nth(MAX_PEER_STRING_CHARS).is_some();
    // When cut, keep one char less to make room for the ellipsis.
    let keep = MAX_PEER_STRING_CHARS - usize::from(cut);
    let mut out: String = s.chars().take(keep).map(replace_unsafe).collect();
    out.extend(cut.then_some('…'));
    out
}

/// `?` for a char that could break or disguise a log line (see [`sanitize`]).
fn replace_unsafe(c: char) -> char {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let breaks = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if breaks || bidi { '?' } else { c }
}

/// [`sanitize`] without the cap, for whole events; allocates only when a
/// char needs replacing, which is rare in events the gateway builds.
fn neutralize(text: String) -> String {
    if text.chars().all(|c| replace_unsafe(c) == c) {
        return text;
    }
    text.chars().map(replace_unsafe).collect()
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `dd-Mon-yy, HH:MM:SS, ` for Unix time `at`.
fn timestamp(at: i64, utc: bool) -> String {
    // Saturating only matters for a 32-bit `time_t` after 2038.
    let t = libc::time_t::try_from(at).unwrap_or(libc::time_t::MAX);
    let convert = if utc { libc::gmtime_r } else { libc::localtime_r };
    // SAFETY: `tm` is plain data (ints and a nullable pointer), so all-zero
    // is a valid value; the `_r` variants are thread-safe and write only
    // into the `tm` given. On failure they return null and we print the
    // zeroed `tm`, an obviously bogus "00-Jan-00", rather than panic.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = convert(&raw const t, &raw mut tm);
        if ok.is_null() { std::mem::zeroed() } else { tm }
    };
    let month = usize::try_from(tm.tm_mon).ok().and_then(|m| MONTHS.get(m));
    let month = month.unwrap_or(&"???");
    let year = (i64::from(tm.tm_year) + 1900).rem_euclid(100);
    let (day, h, m, s) = (tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    format!("{day:02}-{month}-{year:02}, {h:02}:{m:02}:{s:02}, ")
}

/// The writer thread's state.
struct Writer {
    files: LogFiles,
    /// Shared with [`EventLog::event`], which counts refused events here.
    dropped: Arc<AtomicU64>,
    /// Inside a streak of write errors: warn once, not once per line.
    failing: bool,
}

impl Writer {
    /// Serves the queue until every [`EventLog`] is dropped and it is empty.
    fn run(mut self, rx: Receiver<Msg>) {
        for msg in rx {
            match msg {
                Msg::Event { at, text } => {
                    self.report_overflow();
                    self.record(at, &text);
                }
                Msg::Flush(done) => {
                    // A flushed file must tell the whole story.
                    self.report_overflow();
                    let _ = done.send(());
                }
                Msg::Reconfigure(config, reply) => {
                    let opened = LogFiles::open(config).map(|files| self.files = files);
                    let _ = reply.send(opened);
                }
                #[cfg(test)]
                Msg::Hold(entered, release) => {
                    let _ = entered.send(());
                    let _ = release.recv();
                }
            }
        }
        self.report_overflow();
        // Best effort: a shutdown should leave the log on disk.
        let _ = self.files.file.as_ref().map(File::sync_data);
    }

    /// Writes the overflow line if any events were dropped since the last.
    fn report_overflow(&mut self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let text = format!("Event log overflow: {dropped} events dropped");
            log::info!(target: EVENT_TARGET, "{text}");
            self.record(unix_now(), &text);
        }
    }

    /// Stamps and writes one line. Errors never stop the writer: they are
    /// reported once per streak, and the next line reopens the file.
    fn record(&mut self, at: i64, text: &str) {
        let line = format!("{}{text}\n", timestamp(at, self.files.config.utc));
        let written = self.files.append(line.as_bytes());
        if let (Err(e), false) = (&written, self.failing) {
            log::warn!("{e}; events are lost until writing works again");
        }
        self.failing = written.is_err();
    }
}

/// The `GWnnn.log` file set in one directory.
struct LogFiles {
    config: EventLogConfig,
    /// The current file; `None` after an error, so the next line reopens.
    file: Option<File>,
    /// Number of the current file.
    number: u64,
}

impl LogFiles {
    /// Creates `dir` if needed and opens where the log left off.
    fn open(config: EventLogConfig) -> io::Result<LogFiles> {
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
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
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
fn file_name(number: u64) -> String {
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
    use std::sync::atomic::AtomicUsize;

    /// A fresh, not yet created path per test, removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("ringway-eventlog-{}-{n}", std::process::id());
            TempDir(std::env::temp_dir().join(name))
        }

        fn config(&self, max_file_kb: u64, max_files: u32) -> EventLogConfig {
            let dir = self.0.clone();
            EventLogConfig {
                dir,
                max_file_kb,
                max_files,
                utc: false,
            }
        }

        /// Sorted names in the directory.
        fn names(&self) -> Vec<String> {
            let entries = fs::read_dir(&self.0).expect("test dir exists");
            let name = |e: io::Result<fs::DirEntry>| e.expect("entry").file_name();
            let mut names: Vec<_> = entries.map(|e| name(e).to_string_lossy().into()).collect();
            names.sort();
            names
        }

        /// Event texts in file `name`, each line's timestamp format checked.
        fn texts(&self, name: &str) -> Vec<String> {
            let content = fs::read_to_string(self.0.join(name)).expect("log file");
            assert!(content.ends_with('\n'), "{content:?}");
            content.lines().map(|l| event_text(l).to_owned()).collect()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            // Some tests leave a plain file at the path instead of a dir.
            let _ = fs::remove_dir_all(&self.0).or_else(|_| fs::remove_file(&self.0));
        }
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

    /// Event text for a line of exactly 100 bytes: 21 of stamp, 1 of `\n`.
    fn line100(i: usize) -> String {
        format!("line {i:03} {}", "x".repeat(100 - 21 - 1 - 9))
    }

    fn lines100(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(line100).collect()
    }

    #[test]
    fn sanitize_defuses_and_caps() {
        let s = sanitize("<script>alert(1)</script>\r\nGW forged");
        assert_eq!(s, "<script>alert(1)</script>??GW forged");
        let controls = "a\tb\u{7f}c\u{85}d\u{2028}e\u{202e}f ü";
        assert_eq!(sanitize(controls), "a?b?c?d?e?f ü");
        let exact = "é".repeat(MAX_PEER_STRING_CHARS);
        assert_eq!(sanitize(&exact), exact);
        let cut = "a".repeat(MAX_PEER_STRING_CHARS - 1) + "…";
        assert_eq!(sanitize(&"a".repeat(1000)), cut);
    }

    #[test]
    fn writes_exact_lines_one_per_event() {
        let stamp = |at| timestamp(at, true);
        assert_eq!(stamp(1_656_519_080), "29-Jun-22, 16:11:20, ");
        assert_eq!(stamp(951_782_400), "29-Feb-00, 00:00:00, ");
        let dir = TempDir::new();
        let mut config = dir.config(1, 0);
        config.utc = true;
        let log = EventLog::start(config).expect("start");
        let before = unix_now();
        let name = sanitize("<script>alert(1)</script>\r\nGW forged");
        log.event(format!("Client {name} connected"));
        log.event("raw\nnewline");
        log.flush();
        let after = unix_now();
        assert_eq!(dir.names(), ["GW001.log"]);
        let content = fs::read_to_string(dir.0.join("GW001.log")).expect("log file");
        let (forged, raw) = ("<script>alert(1)</script>??GW forged", "raw?newline");
        let expect = |a, b| format!("{}Client {forged} connected\n{}{raw}\n", stamp(a), stamp(b));
        // Each line is stamped with its own second, in order.
        let found = (before..=after).any(|a| (a..=after).any(|b| content == expect(a, b)));
        assert!(found, "{content:?} not stamped in {before}..={after}");
    }

    #[test]
    fn rotates_at_limit_and_oversized_lines_stand_alone() {
        let dir = TempDir::new();
        let log = EventLog::start(dir.config(1, 0)).expect("start");
        (0..25).for_each(|i| log.event(line100(i)));
        let big = "b".repeat(2000);
        log.event(big.clone());
        log.event("after");
        log.flush();
        assert_eq!(dir.names(), (1..=5).map(file_name).collect::<Vec<_>>());
        // Ten 100-byte lines fit in 1024 bytes; an eleventh would not.
        assert_eq!(dir.texts("GW001.log"), lines100(0..10));
        assert_eq!(dir.texts("GW002.log"), lines100(10..20));
        assert_eq!(dir.texts("GW003.log"), lines100(20..25));
        assert_eq!(dir.texts("GW004.log"), [big]);
        assert_eq!(dir.texts("GW005.log"), ["after"]);
    }

    #[test]
    fn numbering_resumes_after_restart() {
        let dir = TempDir::new();
        for text in ["first run", "second run"] {
            let log = EventLog::start(dir.config(1, 0)).expect("start");
            let clone = log.clone();
            let other = thread::spawn(move || clone.event(text));
            other.join().expect("event from another thread");
            drop(log); // No flush: the last clone's drop drains and joins.
        }
        assert_eq!(dir.names(), ["GW001.log"]);
        assert_eq!(dir.texts("GW001.log"), ["first run", "second run"]);
        let gw001 = dir.0.join("GW001.log");
        let full = fs::read_to_string(&gw001).expect("read") + &"f".repeat(1024);
        fs::write(&gw001, full).expect("fill GW001.log");
        let log = EventLog::start(dir.config(1, 0)).expect("start on a full file");
        assert_eq!(dir.names(), ["GW001.log", "GW002.log"]);
        log.event("third run");
        log.flush();
        assert_eq!(dir.texts("GW002.log"), ["third run"]);
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
        fs::create_dir_all(&dir.0).expect("create test dir");
        for name in others.iter().chain(&old) {
            fs::write(dir.0.join(name), old_line).expect("write test file");
        }
        let log = EventLog::start(dir.config(1, 2)).expect("start");
        (0..10).for_each(|i| log.event(line100(i)));
        log.flush();
        // GW1000, not GW999, is newest; 25 + 9 * 100 bytes fill it.
        let mut expect = vec!["GW1000.log", "GW1001.log"];
        expect.extend(others);
        expect.sort_unstable();
        assert_eq!(dir.names(), expect);
        let gw1000 = [vec!["old".to_string()], lines100(0..9)].concat();
        assert_eq!(dir.texts("GW1000.log"), gw1000);
        assert_eq!(dir.texts("GW1001.log"), lines100(9..10));
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
        assert_eq!(dir.texts("GW001.log"), [overflow, "a", "b"]);
        assert_eq!(handle.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn errors_name_the_path_and_never_stop_the_writer() {
        let (a, b, bad) = (TempDir::new(), TempDir::new(), TempDir::new());
        fs::write(&bad.0, "a file").expect("block path");
        let names_bad = |e: io::Error| e.to_string().contains(&*bad.0.to_string_lossy());
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
        assert_eq!(a.texts("GW001.log"), ["in a"]);
        assert_eq!(b.texts("GW001.log"), ["in b", "still b"]);
        // A plain file where the directory was: writes and reopening fail.
        fs::remove_dir_all(&b.0).expect("remove dir");
        fs::write(&b.0, "not a dir").expect("block path");
        log.event("lost");
        log.flush();
        fs::remove_file(&b.0).expect("unblock path");
        log.event("after");
        log.flush();
        assert_eq!(b.names(), ["GW001.log"]);
        assert_eq!(b.texts("GW001.log"), ["after"]);
        let stderr_only = EventLog::stderr_only();
        stderr_only.event("to stderr only");
        stderr_only.flush();
        let err = stderr_only.reconfigure(a.config(1, 0)).expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<EventLog>();
    }
}
