//! What a shutdown's drain counts, and the event lines that report it.
//!
//! On SIGTERM every worker stops accepting, tells its agents `BYE
//! shutdown`, refuses its waiting sessions and lets running ones finish
//! for the grace; then it ends what is left. Each worker reports its
//! counts at the start and at the end; the gateway adds them up into one
//! line each. No I/O.

use std::ops::AddAssign;
use std::time::Duration;

/// One worker's counts when its drain starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DrainStart {
    /// Agents told `BYE shutdown`.
    pub agents: usize,
    /// Sessions waiting for their agent, answered 503.
    pub pending: usize,
    /// Sessions relaying, given the grace to finish.
    pub sessions: usize,
}

impl AddAssign for DrainStart {
    fn add_assign(&mut self, other: DrainStart) {
        self.agents += other.agents;
        self.pending += other.pending;
        self.sessions += other.sessions;
    }
}

impl DrainStart {
    /// The event line for the whole gateway.
    pub fn event_text(&self, grace: Duration) -> String {
        format!(
            "Shutting down: stopped accepting connections; {} told to go, {} refused, {} running (grace {} s)",
            plural(self.agents, "client", "clients"),
            plural(self.pending, "waiting session", "waiting sessions"),
            plural(self.sessions, "session", "sessions"),
            grace.as_secs()
        )
    }
}

/// How a worker's drain ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DrainEnd {
    /// Sessions that ended on their own during the grace.
    pub finished: usize,
    /// Sessions still running when the drain ended, closed by it.
    pub cut: usize,
    /// A second signal ended the drain before its grace was over.
    pub cut_short: bool,
}

impl AddAssign for DrainEnd {
    fn add_assign(&mut self, other: DrainEnd) {
        self.finished += other.finished;
        self.cut += other.cut;
        self.cut_short |= other.cut_short;
    }
}

impl DrainEnd {
    /// The event line for the whole gateway.
    pub fn event_text(&self, grace: Duration) -> String {
        let how = match (self.cut, self.cut_short) {
            (0, _) => String::new(),
            (_, true) => " by a second signal".to_string(),
            (_, false) => format!(" after the {} s grace", grace.as_secs()),
        };
        format!(
            "Shutdown drain over: {} finished, {} cut{how}",
            plural(self.finished, "session", "sessions"),
            self.cut
        )
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_counts_add_up_into_one_line_each() {
        let mut start = DrainStart::default();
        start += DrainStart {
            agents: 2,
            pending: 0,
            sessions: 1,
        };
        start += DrainStart {
            agents: 1,
            pending: 1,
            sessions: 0,
        };
        assert_eq!(
            start.event_text(Duration::from_secs(30)),
            "Shutting down: stopped accepting connections; 3 clients told to go, 1 waiting session refused, 1 session running (grace 30 s)"
        );
        let mut end = DrainEnd::default();
        end += DrainEnd {
            finished: 1,
            cut: 0,
            cut_short: false,
        };
        assert_eq!(
            end.event_text(Duration::from_secs(30)),
            "Shutdown drain over: 1 session finished, 0 cut"
        );
        end += DrainEnd {
            finished: 1,
            cut: 2,
            cut_short: false,
        };
        assert_eq!(
            end.event_text(Duration::from_secs(30)),
            "Shutdown drain over: 2 sessions finished, 2 cut after the 30 s grace"
        );
        end += DrainEnd {
            cut_short: true,
            ..DrainEnd::default()
        };
        assert_eq!(
            end.event_text(Duration::from_secs(30)),
            "Shutdown drain over: 2 sessions finished, 2 cut by a second signal"
        );
    }
}
