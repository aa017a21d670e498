//! The writer thread: takes events off the queue, summarises repeats from
//! one source (repeats.rs), stamps the lines and hands them to the files.
//! It sleeps on the queue, and at most until the next window closes, so a
//! summary is written even if no other event ever comes.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use super::files::LogFiles;
use super::repeats::Repeats;
use super::stamp::{timestamp, zone};
use super::{EVENT_TARGET, EventLogConfig, unix_now};

/// What travels from [`EventLog`](super::EventLog) to the writer thread.
pub(super) enum Msg {
    /// One event; `at` is Unix seconds, taken when the event happened
    /// rather than when a lagging writer gets to it.
    Event { at: i64, text: String },
    /// One event from a peer, summarised with its source's repeats.
    EventFrom { at: i64, source: IpAddr, text: String },
    /// Answered once everything queued before has been written.
    Flush(SyncSender<()>),
    /// New settings, applied after the lines queued before.
    Reconfigure(EventLogConfig, SyncSender<io::Result<()>>),
    /// Tests: say so on the first channel, stall until the second fires.
    #[cfg(test)]
    Hold(SyncSender<()>, Receiver<()>),
    /// Tests: from now on, send here too every line the summariser gives
    /// back (first lines and summaries).
    #[cfg(test)]
    Observe(SyncSender<String>),
}

/// Counters the handle and the writer share.
#[derive(Default)]
pub(super) struct Counters {
    /// Events refused because the queue (or the sources' share of it)
    /// was full; the writer reports and resets it.
    pub(super) dropped: AtomicU64,
    /// [`Msg::EventFrom`]s in the queue, so a flood from peers can fill
    /// only its share of it and real events always find room.
    pub(super) sourced_queued: AtomicUsize,
}

/// The writer thread's state.
pub(super) struct Writer {
    /// `None` for a stderr-only log: lines then go to stderr alone.
    files: Option<LogFiles>,
    counters: Arc<Counters>,
    repeats: Repeats,
    /// Lines the summariser gave back, written in order; kept to reuse
    /// its allocation.
    out: Vec<String>,
    /// Inside a streak of write errors: warn once, not once per line.
    failing: bool,
    #[cfg(test)]
    observer: Option<SyncSender<String>>,
}

impl Writer {
    pub(super) fn new(files: Option<LogFiles>, counters: Arc<Counters>, repeats: Repeats) -> Writer {
        Writer {
            files,
            counters,
            repeats,
            out: Vec::new(),
            failing: false,
            #[cfg(test)]
            observer: None,
        }
    }

    /// Serves the queue until every [`EventLog`](super::EventLog) is
    /// dropped and it is empty, then sums up the open windows.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let received = match self.repeats.next_deadline() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(closes) => rx.recv_timeout(closes.saturating_duration_since(Instant::now())),
            };
            // Also on a busy queue, which would never time out.
            self.close_due();
            match received {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.report_overflow();
        self.repeats.close_all(Instant::now(), &mut self.out);
        self.write_out(unix_now());
        if let Some(files) = &self.files {
            files.sync();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event { at, text } => {
                self.report_overflow();
                self.record(at, &text);
            }
            Msg::EventFrom { at, source, text } => {
                self.counters.sourced_queued.fetch_sub(1, Ordering::Relaxed);
                self.report_overflow();
                self.repeats.offer(Instant::now(), source, text, &mut self.out);
                self.write_out(at);
            }
            Msg::Flush(done) => {
                // A flushed file must tell the whole story.
                self.report_overflow();
                let _ = done.send(());
            }
            Msg::Reconfigure(config, reply) => {
                let opened = LogFiles::open(config).map(|files| self.files = Some(files));
                let _ = reply.send(opened);
            }
            #[cfg(test)]
            Msg::Hold(entered, release) => {
                let _ = entered.send(());
                let _ = release.recv();
            }
            #[cfg(test)]
            Msg::Observe(observer) => self.observer = Some(observer),
        }
    }

    /// Writes the summaries of the windows that have closed by now.
    fn close_due(&mut self) {
        self.repeats.close_due(Instant::now(), &mut self.out);
        self.write_out(unix_now());
    }

    /// Announces and writes what the summariser left in `out`, stamped
    /// `at`. Unlike [`EventLog::event`](super::EventLog::event)'s, these
    /// stderr lines come from here: a counted repeat goes to neither.
    fn write_out(&mut self, at: i64) {
        let mut out = std::mem::take(&mut self.out);
        for text in out.drain(..) {
            log::info!(target: EVENT_TARGET, "{text}");
            self.record(at, &text);
            #[cfg(test)]
            if let Some(observer) = &self.observer {
                let _ = observer.send(text);
            }
        }
        self.out = out;
    }

    /// Writes the overflow line if any events were dropped since the last.
    fn report_overflow(&mut self) {
        let dropped = self.counters.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let text = format!("Event log overflow: {dropped} events dropped");
            log::info!(target: EVENT_TARGET, "{text}");
            self.record(unix_now(), &text);
        }
    }

    /// Stamps and writes one line. Errors never stop the writer: they are
    /// reported once per streak, and the next line reopens the file.
    fn record(&mut self, at: i64, text: &str) {
        let Some(files) = &mut self.files else { return };
        let stamp = timestamp(at, &zone(files.config.utc));
        let line = format!("{stamp}{text}\n");
        let written = files.append(line.as_bytes());
        if let (Err(e), false) = (&written, self.failing) {
            log::warn!("{e}; events are lost until writing works again");
        }
        self.failing = written.is_err();
    }
}
