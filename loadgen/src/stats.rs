//! What a run measures: latency histograms, counters, and errors by kind.
//!
//! Each runtime thread records into its own [`Stats`] behind a mutex that
//! only it and the once-a-second reporter take, so recording costs an
//! uncontended lock. The reporter and the final summary merge the threads'
//! copies.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use ringway::client::ClientError;
use serde::Serialize;

/// Largest latency a histogram tells apart, in microseconds. Two minutes
/// is past every deadline on the path (the client's 30 s response timeout,
/// the gateway's 10 s pairing deadline); longer samples are recorded as
/// this value.
const HIST_MAX_MICROS: u64 = 120_000_000;

/// Significant figures kept: 3 gives 0.1 % resolution, enough to tell
/// p99.9 from max, in about 200 KiB per histogram.
const HIST_SIGFIG: u8 = 3;

/// A latency the load generator measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Agent: dial until the gateway's `101` (registration answered).
    Register,
    /// Agent: `PING n` until `PONG n`.
    PollRtt,
    /// Control: `GET /v1/clients` until the whole list is read.
    Browse,
    /// Control: connect request until the session is usable (`101`, which
    /// the gateway sends once the agent has joined).
    SessionSetup,
    /// Agent: `OPEN` heard until its data connection got `101`.
    Join,
    /// Control: one ping-pong message out and its echo back.
    RoundTrip,
}

impl Metric {
    /// Every metric, in summary order.
    pub const ALL: [Metric; 6] = [
        Metric::Register,
        Metric::PollRtt,
        Metric::Browse,
        Metric::SessionSetup,
        Metric::Join,
        Metric::RoundTrip,
    ];

    /// The metric's key in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Register => "register",
            Metric::PollRtt => "poll_rtt",
            Metric::Browse => "browse",
            Metric::SessionSetup => "session_setup",
            Metric::Join => "join",
            Metric::RoundTrip => "round_trip",
        }
    }
}

/// What was being done when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// An agent registering.
    Register,
    /// A registered agent's held channel ending.
    Channel,
    /// A control listing agents.
    Browse,
    /// A control opening a session.
    Connect,
    /// An agent joining a session.
    Join,
    /// An agent echoing a session's bytes.
    Echo,
    /// A control sending and reading a session's bytes.
    Traffic,
}

impl Op {
    /// The operation's key in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Channel => "channel",
            Op::Browse => "browse",
            Op::Connect => "connect",
            Op::Join => "join",
            Op::Echo => "echo",
            Op::Traffic => "traffic",
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The gateway answered with this error status.
    Refused(u16),
    /// A socket error (reset, refused connection, no ports left...).
    Io,
    /// The gateway said something that made no sense, or bytes came back
    /// wrong.
    Protocol,
    /// No answer within a deadline.
    Timeout,
    /// The gateway ended a held channel (`BYE`, or closed it).
    Closed,
}

impl ErrorKind {
    /// Classifies a client library error.
    pub fn of(e: &ClientError) -> ErrorKind {
        match e {
            ClientError::Io(e) => ErrorKind::of_io(e),
            ClientError::Refused { status, .. } => ErrorKind::Refused(*status),
            ClientError::Timeout(_) => ErrorKind::Timeout,
            ClientError::Protocol(_) => ErrorKind::Protocol,
        }
    }

    /// Classifies a socket error.
    pub fn of_io(e: &io::Error) -> ErrorKind {
        match e.kind() {
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

/// Errors counted by kind and by operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    /// All errors.
    pub total: u64,
    /// Socket errors.
    pub io: u64,
    /// Answers that made no sense, wrong echoes.
    pub protocol: u64,
    /// Deadlines passed.
    pub timeout: u64,
    /// Held channels the gateway ended.
    pub closed: u64,
    /// Refusals by HTTP status (`"503": 12`).
    pub refused: BTreeMap<u16, u64>,
    /// The same errors by what was being done.
    pub by_op: BTreeMap<&'static str, u64>,
}

impl Errors {
    fn add(&mut self, op: Op, kind: ErrorKind) -> bool {
        self.total += 1;
        let first = !self.by_op.contains_key(op.name());
        *self.by_op.entry(op.name()).or_default() += 1;
        match kind {
            ErrorKind::Refused(status) => *self.refused.entry(status).or_default() += 1,
            ErrorKind::Io => self.io += 1,
            ErrorKind::Protocol => self.protocol += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Closed => self.closed += 1,
        }
        first
    }

    fn merge(&mut self, other: &Errors) {
        self.total += other.total;
        self.io += other.io;
        self.protocol += other.protocol;
        self.timeout += other.timeout;
        self.closed += other.closed;
        for (status, n) in &other.refused {
            *self.refused.entry(*status).or_default() += n;
        }
        for (op, n) in &other.by_op {
            *self.by_op.entry(op).or_default() += n;
        }
    }
}

/// Event counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    /// Successful registrations (a reconnecting agent counts again).
    pub registered: u64,
    /// Agents whose channel is open now.
    pub agents_up: u64,
    /// Registrations after an agent's first.
    pub reconnects: u64,
    /// Polls answered.
    pub polls: u64,
    /// Sessions the agents joined and echoed.
    pub sessions_served: u64,
    /// Sessions the controls opened (got `101`).
    pub sessions_opened: u64,
    /// Sessions the controls finished and closed cleanly.
    pub sessions_completed: u64,
    /// Ping-pong messages echoed back intact.
    pub round_trips: u64,
    /// Session bytes the controls sent.
    pub bytes_sent: u64,
    /// Session bytes the controls read back.
    pub bytes_received: u64,
    /// Channels the agents hung up on their churn schedule.
    pub churned: u64,
    /// Registrations with a secondary after the channel with a gateway
    /// before it in the list ended (`--secondary`).
    pub failovers: u64,
    /// Channels moved back home (registered there, then `BYE failback`).
    pub failbacks: u64,
    /// Echoes that differed from what was sent (wrong bytes, more bytes,
    /// or fewer at the end): what a relay must never do.
    pub mismatches: u64,
}

impl Counters {
    fn merge(&mut self, o: &Counters) {
        self.registered += o.registered;
        self.agents_up += o.agents_up;
        self.reconnects += o.reconnects;
        self.polls += o.polls;
        self.sessions_served += o.sessions_served;
        self.sessions_opened += o.sessions_opened;
        self.sessions_completed += o.sessions_completed;
        self.round_trips += o.round_trips;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.churned += o.churned;
        self.failovers += o.failovers;
        self.failbacks += o.failbacks;
        self.mismatches += o.mismatches;
    }
}

/// Everything one thread (or a merge of threads) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    hists: Vec<Histogram<u64>>,
    /// Event counts.
    pub counters: Counters,
    /// Errors by kind and operation.
    pub errors: Errors,
    /// The poll interval the gateway announced, seconds (the last seen:
    /// a reload may change it).
    pub cmpi_secs: Option<u64>,
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Stats {
        let hist = || {
            // The bounds are constants that hdrhistogram accepts (low >= 1,
            // high >= 2 x low, sigfig <= 5): this cannot fail.
            Histogram::new_with_bounds(1, HIST_MAX_MICROS, HIST_SIGFIG).expect("valid histogram bounds")
        };
        Stats {
            hists: Metric::ALL.iter().map(|_| hist()).collect(),
            counters: Counters::default(),
            errors: Errors::default(),
            cmpi_secs: None,
        }
    }

    /// Records one latency sample.
    pub fn record(&mut self, metric: Metric, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hists[metric as usize].saturating_record(micros);
    }

    /// The histogram of `metric`, in microseconds.
    pub fn hist(&self, metric: Metric) -> &Histogram<u64> {
        &self.hists[metric as usize]
    }

    /// Counts an error; true if it is the first for its operation (worth a
    /// log line: the rest are only counted).
    pub fn error(&mut self, op: Op, kind: ErrorKind) -> bool {
        self.errors.add(op, kind)
    }

    /// Adds another thread's statistics to these.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.hists.iter_mut().zip(&other.hists) {
            // Same bounds on both sides, so adding cannot go out of range.
            let _ = mine.add(theirs);
        }
        self.counters.merge(&other.counters);
        self.errors.merge(&other.errors);
        self.cmpi_secs = self.cmpi_secs.or(other.cmpi_secs);
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// One thread's handle on its statistics; cheap to clone into tasks.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Stats>>);

impl Recorder {
    /// Runs `f` on the statistics. Never held across an await.
    pub fn with<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        f(&mut self.lock())
    }

    /// A consistent view for merging.
    pub fn lock(&self) -> MutexGuard<'_, Stats> {
        // A panic while recording leaves numbers that are still numbers;
        // keep counting rather than lose the run.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a client library error, logging the first of each operation.
    pub fn client_error(&self, op: Op, e: &ClientError) {
        self.error(op, ErrorKind::of(e), e);
    }

    /// Counts an error of `kind`, logging the first of each operation.
    pub fn error(&self, op: Op, kind: ErrorKind, what: &dyn std::fmt::Display) {
        if self.with(|s| s.error(op, kind)) {
            log::warn!(
                "first {} error ({kind:?}): {what}; later ones are only counted",
                op.name()
            );
        } else {
            log::debug!("{} error ({kind:?}): {what}", op.name());
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample (capped at two minutes).
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Reads the percentiles of `h`; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_and_merged() {
        let mut a = Stats::new();
        assert!(a.error(
            Op::Register,
            ErrorKind::of(&ClientError::Refused {
                status: 503,
                reason: "full".into()
            })
        ));
        assert!(!a.error(Op::Register, ErrorKind::Io));
        let mut b = Stats::new();
        b.error(
            Op::Connect,
            ErrorKind::of(&ClientError::Timeout("no response from the gateway in time")),
        );
        b.error(Op::Connect, ErrorKind::of(&ClientError::Protocol("garbage".into())));
        a.merge(&b);
        let e = &a.errors;
        assert_eq!((e.total, e.io, e.timeout, e.protocol), (4, 1, 1, 1));
        assert_eq!(e.refused.get(&503), Some(&1));
        assert_eq!(e.by_op.get("register"), Some(&2));
        assert_eq!(e.by_op.get("connect"), Some(&2));
    }

    #[test]
    fn percentiles_of_known_samples() {
        let mut s = Stats::new();
        for ms in 1..=1000u64 {
            s.record(Metric::RoundTrip, Duration::from_micros(ms * 1000));
        }
        let p = Percentiles::of(s.hist(Metric::RoundTrip));
        assert_eq!(p.count, 1000);
        // Within the histogram's 0.1 % resolution.
        assert!((499_000..=501_000).contains(&p.p50), "{p:?}");
        assert!((989_000..=991_000).contains(&p.p99), "{p:?}");
        assert!(p.max >= 999_000 && p.max <= 1_001_000, "{p:?}");
        assert_eq!(Percentiles::of(s.hist(Metric::Register)), Percentiles::default());
    }
}
