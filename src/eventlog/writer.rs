//! The writer thread: takes events off the queue, stamps them and hands
//! them to the files.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use super::files::LogFiles;
use super::stamp::{timestamp, zone};
use super::{EVENT_TARGET, EventLogConfig, unix_now};

/// What travels from [`EventLog`](super::EventLog) to the writer thread.
pub(super) enum Msg {
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

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) files: LogFiles,
    /// Shared with [`EventLog::event`](super::EventLog::event), which
    /// counts refused events here.
    pub(super) dropped: Arc<AtomicU64>,
    /// Inside a streak of write errors: warn once, not once per line.
    pub(super) failing: bool,
}

impl Writer {
    /// Serves the queue until every [`EventLog`](super::EventLog) is
    /// dropped and it is empty.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
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
        self.files.sync();
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
        let stamp = timestamp(at, &zone(self.files.config.utc));
        let line = format!("{stamp}{text}\n");
        let written = self.files.append(line.as_bytes());
        if let (Err(e), false) = (&written, self.failing) {
            log::warn!("{e}; events are lost until writing works again");
        }
        self.failing = written.is_err();
    }
}
