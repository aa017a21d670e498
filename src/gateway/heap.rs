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

/// The shortest time between two trims. A trim of a heap holding 15,000
/// agents took 9 to 10 ms here (`ringway_heap_trim_microseconds_total`
/// counts it), so one per ten seconds costs 0.1 % of a core even while
/// connections arrive all the time, and memory freed by a storm is back
/// with the kernel ten seconds after it ends.
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// What the workers and the trimmer share: the churn signal and the
/// trimmer's own counters, for /metrics.
#[derive(Debug, Default)]
pub(crate) struct HeapCounts {
    /// Connections accepted by all workers, so the trimmer can tell that
    /// some came (and went) since its last trim.
    pub accepted: AtomicU64,
    /// Trims done.
    pub trims: AtomicU64,
    /// Microseconds they took.
    pub trim_micros: AtomicU64,
}

impl HeapCounts {
    /// Counts one accepted connection (a worker's accept loop).
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
}

impl TrimClock {
    /// A clock that waits [`TRIM_INTERVAL`] from `now` before its first trim.
    pub(crate) fn new(now: Instant) -> TrimClock {
        TrimClock {
            accepted_at_last: 0,
            last: now,
        }
    }

    /// Whether to trim now: connections were accepted since the last trim
    /// and [`TRIM_INTERVAL`] has passed. A `true` restarts the clock.
    pub(crate) fn due(&mut self, accepted: u64, now: Instant) -> bool {
        if accepted == self.accepted_at_last || now.duration_since(self.last) < TRIM_INTERVAL {
            return false;
        }
        self.accepted_at_last = accepted;
        self.last = now;
        true
    }
}

/// The trimmer thread; dropping this ends it (at its next wake-up, within
/// [`TRIM_INTERVAL`], without delaying the drop).
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
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TRIM_INTERVAL) {
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
    fn a_trim_is_due_only_after_new_connections_and_the_interval() {
        let t0 = Instant::now();
        let mut clock = TrimClock::new(t0);
        assert!(!clock.due(5, t0 + TRIM_INTERVAL / 2), "before the interval");
        assert!(
            clock.due(5, t0 + TRIM_INTERVAL),
            "connections came and the interval passed"
        );
        assert!(
            !clock.due(5, t0 + TRIM_INTERVAL * 3),
            "no connection since the last trim"
        );
        assert!(
            !clock.due(6, t0 + TRIM_INTERVAL * 3 / 2),
            "a new connection, but too soon after the last trim"
        );
        assert!(
            clock.due(6, t0 + TRIM_INTERVAL * 2),
            "a new connection and the interval passed"
        );
    }

    #[test]
    fn a_worker_that_accepted_nothing_never_trims() {
        let t0 = Instant::now();
        let mut clock = TrimClock::new(t0);
        assert!((1..100).all(|i| !clock.due(0, t0 + TRIM_INTERVAL * i)));
    }
}
