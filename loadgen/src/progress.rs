//! The once-a-second line on stderr: enough to see a run go wrong while it
//! runs (agents not coming up, errors climbing, p99 drifting).

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::{Counters, Metric, Stats};

/// One progress line. `prev` holds the counters of the previous line, for
/// per-second rates; `agents` and `controls` are the planned numbers.
pub fn line(
    elapsed: Duration,
    now: &Stats,
    prev: &Counters,
    since_prev: Duration,
    agents: u64,
    controls: u64,
) -> String {
    let c = &now.counters;
    let secs = since_prev.as_secs_f64().max(1e-3);
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
    let mut out = format!("[{:>4}s]", elapsed.as_secs());
    if agents > 0 {
        let _ = write!(out, " agents {}/{agents} up", c.agents_up);
        if c.reconnects > 0 {
            let _ = write!(out, " ({} reconnects)", c.reconnects);
        }
        let _ = write!(out, ", {} polls |", c.polls);
    }
    if controls > 0 {
        let _ = write!(
            out,
            " sessions {:.0}/s ({} total), {:.0} rt/s, {:.1} MiB/s in |",
            rate(c.sessions_opened, prev.sessions_opened),
            c.sessions_opened,
            rate(c.round_trips, prev.round_trips),
            rate(c.bytes_received, prev.bytes_received) / (1024.0 * 1024.0)
        );
    }
    let _ = write!(out, " errors {} | p99", now.errors.total);
    let shown: &[Metric] = match (agents > 0, controls > 0) {
        (true, false) => &[Metric::Register, Metric::PollRtt, Metric::Join],
        (false, true) => &[Metric::SessionSetup, Metric::RoundTrip],
        _ => &[
            Metric::Register,
            Metric::PollRtt,
            Metric::SessionSetup,
            Metric::RoundTrip,
        ],
    };
    for &m in shown {
        let h = now.hist(m);
        if h.is_empty() {
            let _ = write!(out, " {} -", m.name());
        } else {
            let _ = write!(out, " {} {}", m.name(), ms(h.value_at_quantile(0.99)));
        }
    }
    out
}

/// Microseconds as a short millisecond figure.
pub fn ms(micros: u64) -> String {
    let ms = micros as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_counts_rates_and_p99() {
        let mut s = Stats::new();
        s.counters.agents_up = 40;
        s.counters.polls = 7;
        s.counters.sessions_opened = 30;
        s.record(Metric::Register, Duration::from_micros(1500));
        let prev = Counters {
            sessions_opened: 10,
            ..Counters::default()
        };
        let l = line(Duration::from_secs(3), &s, &prev, Duration::from_secs(1), 50, 2);
        assert_eq!(
            l,
            "[   3s] agents 40/50 up, 7 polls | sessions 20/s (30 total), 0 rt/s, 0.0 MiB/s in | errors 0 \
             | p99 register 1.50ms poll_rtt - session_setup - round_trip -"
        );
    }

    #[test]
    fn milliseconds() {
        assert_eq!(ms(250), "0.25ms");
        assert_eq!(ms(42_000), "42ms");
        assert_eq!(ms(2_500_000), "2.5s");
    }
}
