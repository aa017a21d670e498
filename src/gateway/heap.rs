//! Giving freed heap pages back to the kernel after a burst of
//! connections.
//!
//! A TLS handshake allocates and frees some 40 KB, and a registration a
//! few KB more. glibc's `free` returns memory to the kernel only from the
//! top of the heap, so after a reconnect storm the freed chunks between
//! long-lived allocations (agents' records, channels, reads) stay
//! resident: measured here, about 2 KB per TLS agent at 15,000 agents
//! (docs/ARCHITECTURE.md). `malloc_trim(0)` hands every whole free page
//! back (`MADV_DONTNEED`) without moving anything, for every arena at
//! once. It takes some 10 ms on such a heap, too long for a worker's
//! event loop, so one side thread runs it, only after connections came
//! and went and at most once per [`TRIM_INTERVAL`]. While it trims an
//! arena, a worker allocating from that arena waits; the relay path
//! allocates nothing and goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest time between two trims while connections keep arriving.
/// A trim of a heap holding 15,000 agents took 9 to 13 ms here
/// (`ringway_heap_trim_microseconds_total` counts it), so one per ten
/// seconds costs about 0.1 % of a core even while connections arrive all
/// the time.
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// How long connections must have stopped arriving before a trim, and the
/// shortest time between two trims: memory a storm freed is back with
/// the kernel about this long after the storm ends, not up to
/// [`TRIM_INTERVAL`] later (a trim in the middle of a ramp leaves the
/// rest of the ramp's garbage resident until the next).
pub(crate) const TRIM_SETTLE: Duration = Duration::from_secs(2);

/// How often the trimmer looks at the count of accepted connections.
const TRIM_TICK: Duration = Duration::from_millis(500);

/// What the workers and the trimmer share: the churn signal and the
/// trimmer's own counters, for /metrics.
#[derive(Debug, Default)]
pub(crate) struct HeapCounts {
    /// Connections accepted and agent channels set up, by all workers, so
    /// the trimmer can tell that some came (and went) since its last trim
    /// and when they stopped (a TLS handshake's garbage is freed when the
    /// channel is set up, well after the accept in a storm).
    pub accepted: AtomicU64,
    /// Trims done.
    pub trims: AtomicU64,
    /// Microseconds they took.
    pub trim_micros: AtomicU64,
}

impl HeapCounts {
    /// Counts one accepted connection (a worker's accept loop) or one
    /// agent channel set up.
    pub(crate) fn accepted_one(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Trims done and the microseconds they took.
    pub(crate) fn trims(&self) -> (u64, u64) {
        (
            self.trims.load(Ordering::Relaxed),
            self.trim_micros.load(Ordering::Relaxed),
        )
    }
}

/// When the next trim is due. No I/O: the caller passes the clock and the
/// count of accepted connections.
#[derive(Debug)]
pub(crate) struct TrimClock {
    /// Accepted connections counted at the last trim.
    accepted_at_last: u64,
    /// When the last trim ran (or the clock started).
    last: Instant,
    /// The count last seen, and when it last changed.
    seen: u64,
    changed: Instant,
    /// When the first connection since the last trim came.
    first: Option<Instant>,
}

impl TrimClock {
    /// A clock that has trimmed nothing yet, as of `now`.
    pub(crate) fn new(now: Instant) -> TrimClock {
        TrimClock {
            accepted_at_last: 0,
            last: now,
            seen: 0,
            changed: now,
            first: None,
        }
    }

    /// Whether to trim now: connections were accepted since the last trim,
    /// and either they stopped arriving [`TRIM_SETTLE`] ago or they have
    /// kept arriving for [`TRIM_INTERVAL`]; never twice within
    /// [`TRIM_SETTLE`]. A `true` restarts the clock.
    pub(crate) fn due(&mut self, accepted: u64, now: Instant) -> bool {
        if accepted != self.seen {
            self.seen = accepted;
            self.changed = now;
            self.first.get_or_insert(now);
        }
        let Some(first) = self.first.filter(|_| accepted != self.accepted_at_last) else {
            return false;
        };
        let since_trim = now.duration_since(self.last);
        let settled = now.duration_since(self.changed) >= TRIM_SETTLE;
        let long_storm = now.duration_since(first) >= TRIM_INTERVAL;
        let due = since_trim >= TRIM_SETTLE && (settled || long_storm);
        if due {
            self.accepted_at_last = accepted;
            self.last = now;
            self.first = None;
        }
        due
    }
}

/// The trimmer thread; dropping this ends it (at its next wake-up, within
/// half a second, without delaying the drop).
#[derive(Debug)]
pub(crate) struct Trimmer {
    /// Never sent on: the thread ends when it is dropped.
    _stop: mpsc::Sender<()>,
}

/// Starts the trimmer where the allocator can trim (glibc); elsewhere it
/// starts nothing. A thread that cannot start is logged and done without:
/// the gateway then only keeps freed pages resident, as before.
pub(crate) fn spawn(counts: Arc<HeapCounts>) -> Trimmer {
    let (stop, stopped) = mpsc::channel::<()>();
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let started = std::thread::Builder::new().name("ringway-heap".into()).spawn(move || {
            let mut clock = TrimClock::new(Instant::now());
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TRIM_TICK) {
                if clock.due(counts.accepted.load(Ordering::Relaxed), Instant::now()) {
                    let start = Instant::now();
                    trim();
                    let took = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                    counts.trims.fetch_add(1, Ordering::Relaxed);
                    counts.trim_micros.fetch_add(took, Ordering::Relaxed);
                }
            }
        });
        if let Err(e) = started {
            log::warn!("cannot start the heap trimmer thread: {e}; freed heap stays resident");
        }
    }
    Trimmer { _stop: stop }
}

/// Returns free heap pages to the kernel.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // lists under its arena locks; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_storm_once_it_settles_and_every_interval_during_one() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut clock = TrimClock::new(t0);
        // A ramp: a connection every 100 ms for 15 s.
        let mut trims = Vec::new();
        for i in 1..=150u64 {
            if clock.due(i, at(i * 100)) {
                trims.push(i * 100);
            }
        }
        assert_eq!(trims, [10_100], "one trim mid-ramp, ten seconds into it");
        // The ramp ended at 15 s: nothing until it has been quiet for 2 s.
        assert!(!clock.due(150, at(16_000)));
        assert!(!clock.due(150, at(16_900)));
        assert!(clock.due(150, at(17_000)), "settled");
        assert!(!clock.due(150, at(30_000)), "no connection since");
        // One more connection, then quiet: a trim 2 s later.
        assert!(!clock.due(151, at(30_500)));
        assert!(clock.due(151, at(32_500)));
        // Never two within the settle time.
        assert!(!clock.due(152, at(33_000)));
        assert!(!clock.due(152, at(34_400)));
        assert!(clock.due(152, at(35_000)));
    }

    #[test]
    fn a_worker_that_accepted_nothing_never_trims() {
        let t0 = Instant::now();
        let mut clock = TrimClock::new(t0);
        assert!((1..100).all(|i| !clock.due(0, t0 + TRIM_INTERVAL * i)));
    }
}
