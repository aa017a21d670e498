//! Churn: simulated agents that hang up and register again on a schedule,
//! as a real fleet does (reboots, sleep, a new network), so that a long
//! run keeps registration, replacement and teardown busy, not only idle
//! channels. `--churn P` hangs up P % of the agents per minute; each agent
//! then hangs up once every `100 / P` minutes, at its own phase, so the
//! hang-ups come spread evenly rather than in bursts.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

/// Highest churn: every agent once a minute. More is not churn but a
/// reconnect storm, which a gateway restart already produces.
pub const MAX_PERCENT_PER_MINUTE: f64 = 100.0;

/// The Weyl step (the golden ratio's fractional part) that spreads the
/// agents' phases: consecutive indexes land far apart in the period and
/// any run of them covers it evenly.
const PHASE_STEP: f64 = 0.618_033_988_749_894_9;

/// When agents hang up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// Time between two hang-ups of one agent.
    period: Duration,
}

impl Churn {
    /// `percent` of the agents per minute; `None` for 0 (no churn), an
    /// error outside 0 to [`MAX_PERCENT_PER_MINUTE`].
    pub fn per_minute(percent: f64) -> Result<Option<Churn>, String> {
        if !(0.0..=MAX_PERCENT_PER_MINUTE).contains(&percent) {
            return Err(format!(
                "--churn must be 0 to {MAX_PERCENT_PER_MINUTE} (% of agents per minute)"
            ));
        }
        if percent == 0.0 {
            return Ok(None);
        }
        Ok(Some(Churn {
            period: Duration::from_secs(60).mul_f64(100.0 / percent),
        }))
    }

    /// The first hang-up of agent `index` after `now`, in a run that
    /// began at `start`.
    pub fn next(&self, index: u64, start: Instant, now: Instant) -> Instant {
        let phase = (index as f64 * PHASE_STEP).fract();
        let first = start + self.period.mul_f64(phase);
        if now < first {
            return first;
        }
        // Whole periods since the first hang-up, plus the one to come.
        let periods = (now - first).as_secs_f64() / self.period.as_secs_f64();
        first + self.period.mul_f64(periods.floor() + 1.0)
    }
}

/// Runs `channel` (an agent's held channel) until it ends, or until
/// `hang_up` if that comes first; `None` then, the channel dropped (its
/// socket closed).
pub async fn run_until<T>(channel: impl Future<Output = T>, hang_up: Option<Instant>) -> Option<T> {
    let Some(at) = hang_up else {
        return Some(channel.await);
    };
    match select(pin!(channel), pin!(compio::time::sleep_until(at))).await {
        Either::Left((end, _)) => Some(end),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_percent_a_minute_hangs_up_each_agent_once_per_100_minutes() {
        let c = Churn::per_minute(1.0).expect("valid").expect("some churn");
        let start = Instant::now();
        let first = c.next(7, start, start);
        assert!(first >= start && first < start + Duration::from_secs(6000));
        let second = c.next(7, start, first);
        assert_eq!(
            second - first,
            Duration::from_secs(6000),
            "strictly after now, one period on"
        );
        assert_eq!(c.next(7, start, first - Duration::from_millis(1)), first);
        assert_eq!(c.next(7, start, first + Duration::from_secs(10)), second);
    }

    #[test]
    fn hang_ups_spread_evenly_over_the_period() {
        let c = Churn::per_minute(1.0).expect("valid").expect("some churn");
        let start = Instant::now();
        // 15,000 agents at 1 % a minute: 150 a minute, in every minute.
        let mut per_minute = [0u32; 100];
        for i in 0..15_000 {
            // Agent 0's phase is 0: its first hang-up after `start` is a
            // whole period on, minute 0 of the next period.
            let minute = (c.next(i, start, start) - start).as_secs() / 60 % 100;
            per_minute[minute as usize] += 1;
        }
        for (m, n) in per_minute.iter().enumerate() {
            assert!((140..=160).contains(n), "minute {m}: {n} hang-ups");
        }
    }

    #[test]
    fn out_of_range_churn_is_refused() {
        assert_eq!(Churn::per_minute(0.0), Ok(None));
        assert!(Churn::per_minute(-1.0).is_err());
        assert!(Churn::per_minute(100.5).is_err());
        assert!(Churn::per_minute(f64::NAN).is_err());
        assert!(Churn::per_minute(100.0).is_ok());
    }
}
