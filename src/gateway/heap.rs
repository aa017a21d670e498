//! Giving freed heap pages back to the kernel after a burst of
//! connections.
//!
//! A TLS handshake allocates and frees some 40 KB, and a registration a
//! few KB more. glibc's `free` returns memory to the kernel only from the
//! top of the heap, so after a reconnect storm the freed chunks between
//! long-lived allocations (agents' records, channels, reads) stay
//! resident: measured here, about 1.5 KB per TLS agent that no agent
//! uses. `malloc_trim(0)` hands every whole free page back
//! (`MADV_DONTNEED`) without moving anything. It walks the free lists of
//! every arena, so it runs from the worker's once-a-second sweep, only
//! after connections came and went, and at most once per
//! [`TRIM_INTERVAL`] per worker.

use std::time::{Duration, Instant};

/// The shortest time between two trims by one worker. A trim of a heap
/// holding 15,000 agents takes about a millisecond (`ringway_heap_trim_
/// microseconds_total` counts it), so one per ten seconds costs under 0.01 %
/// of a core even while connections arrive all the time, and memory freed
/// by a storm is back with the kernel ten seconds after it ends.
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// When a worker's next trim is due. No I/O: the sweep passes the clock
/// and the worker's count of accepted connections.
#[derive(Debug)]
pub(crate) struct TrimClock {
    /// Accepted connections counted at the last trim.
    accepted_at_last: u64,
    /// When the last trim ran (or the worker started).
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

/// Returns free heap pages to the kernel; `false` where the allocator has
/// no such call (anything but glibc).
pub(crate) fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and releases the allocator's own
        // free lists under its arena locks; it takes no pointer from us.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
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
