//! How often the gateway logs that an agent was replaced. Two machines
//! sharing a name take it from each other; the agents back off, but the
//! log must stay readable even against agents that do not (an old
//! version, a script): the `replaced` line of a name is logged at most
//! once per [`REPLACED_LOG_INTERVAL`], and the next one counts the flaps
//! that were not logged. The state rides on the agent's record and passes
//! to its successor, so it is bounded by the directory and needs no table
//! of its own. No I/O: the caller passes the time.

use std::time::{Duration, Instant};

/// Least time between two `replaced` lines for one name: a minute keeps a
/// dispute visible (one line a minute, with a count) without letting it
/// flood the event log and rotate real events out.
pub(crate) const REPLACED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The replacements of one name, as far as the log is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flaps {
    /// When this name's `replaced` line was last logged.
    logged_at: Option<Instant>,
    /// Replacements since then that were not logged.
    unlogged: u32,
}

impl Flaps {
    /// Notes a replacement at `now`. `Some(n)` when it is to be logged (the
    /// first, or the first after [`REPLACED_LOG_INTERVAL`]), `n` being the
    /// replacements not logged since the last line; `None` when it is only
    /// counted.
    pub fn replaced(&mut self, now: Instant) -> Option<u32> {
        match self.logged_at {
            Some(at) if now.saturating_duration_since(at) < REPLACED_LOG_INTERVAL => {
                self.unlogged = self.unlogged.saturating_add(1);
                None
            }
            _ => {
                let unlogged = self.unlogged;
                *self = Flaps {
                    logged_at: Some(now),
                    unlogged: 0,
                };
                Some(unlogged)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_flapping_every_second_is_logged_once_a_minute_with_a_count() {
        let start = Instant::now();
        let mut flaps = Flaps::default();
        let logged: Vec<(u64, u32)> = (0..=180)
            .filter_map(|s| flaps.replaced(start + Duration::from_secs(s)).map(|n| (s, n)))
            .collect();
        assert_eq!(logged, vec![(0, 0), (60, 59), (120, 59), (180, 59)]);
    }

    #[test]
    fn replacements_far_apart_are_each_logged() {
        let start = Instant::now();
        let mut flaps = Flaps::default();
        assert_eq!(flaps.replaced(start), Some(0));
        assert_eq!(flaps.replaced(start + REPLACED_LOG_INTERVAL), Some(0));
        assert_eq!(flaps.replaced(start + 3 * REPLACED_LOG_INTERVAL), Some(0));
    }

    #[test]
    fn a_clock_reading_before_the_last_line_only_counts() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut flaps = Flaps::default();
        assert_eq!(flaps.replaced(start), Some(0));
        assert_eq!(flaps.replaced(start - Duration::from_secs(5)), None);
        assert_eq!(flaps.replaced(start + REPLACED_LOG_INTERVAL), Some(1));
    }
}
