//! When an agent registers again after its channel ended or a registration
//! failed. Two ladders of jittered, doubling pauses:
//!
//! - a quick one for failures and ordinary disconnects (a gateway restart,
//!   a lost network), so an agent is back within about a poll;
//! - a slow one for a channel the gateway gave to another registration of
//!   the same name (`BYE replaced`). Two machines that share a name (the
//!   agent defaults to the host name) would otherwise take it from each
//!   other about once a second, forever, and neither would be reachable.
//!   The slow ladder keeps climbing across registrations, so such a pair
//!   settles to one flap every few minutes until someone renames one.
//!
//! Pure: the caller supplies the randomness (the agent uses the system's,
//! the load generator a hash of agent and attempt, so that runs repeat)
//! and the time a channel was held, so every rule has a unit test.

use std::time::Duration;

/// First pause after a failed registration or an ordinary disconnect;
/// doubled after each failure in a row.
pub const RETRY_START: Duration = Duration::from_secs(1);

/// Longest pause between failed attempts: a minute, the default CMPI, so
/// an agent is back within about one poll of the gateway's return.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// First pause after the gateway gave this agent's name to another
/// registration (`BYE replaced`); doubled after each replacement. Jittered
/// to 5-10 s: five times the quick ladder's first step, so the other
/// machine keeps the name for a while and the first flaps are already
/// few. A machine that was merely restarted is never slowed by it: the
/// channel its new run replaced belonged to the old run, which is gone.
pub const NAME_IN_USE_START: Duration = Duration::from_secs(10);

/// Longest pause after a replacement: five minutes (2.5-5 min jittered),
/// so that two machines sharing a name still each get the name now and
/// then (neither is silently lost), at a rate a log can carry.
pub const NAME_IN_USE_MAX: Duration = Duration::from_secs(300);

/// A channel held this long ends a name dispute: the slow ladder starts
/// over. Twice [`NAME_IN_USE_MAX`], so that in a running dispute, where
/// each machine holds the name for at most the other's pause, the ladder
/// never resets.
pub const NAME_HELD_RESET: Duration = Duration::from_secs(600);

/// Why the agent is pausing, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pause {
    /// A failure or an ordinary disconnect: the quick ladder.
    Retry(Duration),
    /// The gateway gave the name to another registration: the slow ladder.
    NameInUse(Duration),
    /// The gateway refused the registration (`409`): the name is pinned to
    /// another machine's key. The slow ladder too: only an administrator
    /// (`ringway agents forget`) changes that, so asking often is no use.
    NameTaken(Duration),
}

impl Pause {
    /// How long to wait before registering again.
    pub fn duration(self) -> Duration {
        match self {
            Pause::Retry(d) | Pause::NameInUse(d) | Pause::NameTaken(d) => d,
        }
    }
}

/// Where an agent stands on both ladders.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The next step of the quick ladder (before jitter).
    retry: Duration,
    /// The next step of the slow ladder (before jitter).
    name_in_use: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// Both ladders at their first step.
    pub fn new() -> Backoff {
        Backoff {
            retry: RETRY_START,
            name_in_use: NAME_IN_USE_START,
        }
    }

    /// A registration succeeded: failures start over.
    pub fn registered(&mut self) {
        self.retry = RETRY_START;
    }

    /// The pause after a failed registration; `frac` (0.0 to 1.0) places
    /// it between half the step and the whole step.
    pub fn after_failure(&mut self, frac: f64) -> Pause {
        let pause = jitter(self.retry, frac);
        self.retry = self.retry.saturating_mul(2).min(RETRY_MAX);
        Pause::Retry(pause)
    }

    /// The pause after a channel that was up for `held` ended, `replaced`
    /// saying whether by `BYE replaced`; `frac` as for
    /// [`after_failure`](Self::after_failure). A channel held long enough
    /// ends any name dispute.
    pub fn after_channel(&mut self, replaced: bool, held: Duration, frac: f64) -> Pause {
        if held >= NAME_HELD_RESET {
            self.name_in_use = NAME_IN_USE_START;
        }
        if !replaced {
            return self.after_failure(frac);
        }
        Pause::NameInUse(self.slow_step(frac))
    }

    /// The pause after the gateway refused the name as pinned to another
    /// machine (`409`): a step of the slow ladder, as for a replacement.
    pub fn after_name_taken(&mut self, frac: f64) -> Pause {
        Pause::NameTaken(self.slow_step(frac))
    }

    fn slow_step(&mut self, frac: f64) -> Duration {
        let pause = jitter(self.name_in_use, frac);
        self.name_in_use = self.name_in_use.saturating_mul(2).min(NAME_IN_USE_MAX);
        pause
    }
}

/// A pause between half of `step` and `step`, placed by `frac` (clamped
/// to 0.0-1.0, a NaN counting as 1.0), so that agents cut off together do
/// not all return in the same instant.
pub fn jitter(step: Duration, frac: f64) -> Duration {
    let frac = if frac.is_nan() { 1.0 } else { frac.clamp(0.0, 1.0) };
    step.mul_f64(0.5 + 0.5 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn failures_climb_the_quick_ladder_and_a_registration_resets_it() {
        let mut b = Backoff::new();
        let steps: Vec<_> = (0..8).map(|_| b.after_failure(1.0)).collect();
        let expected: Vec<_> = [1, 2, 4, 8, 16, 32, 60, 60].map(|s| Pause::Retry(SECS(s))).to_vec();
        assert_eq!(steps, expected);
        b.registered();
        assert_eq!(b.after_failure(0.0), Pause::Retry(Duration::from_millis(500)));
    }

    #[test]
    fn replacements_climb_the_slow_ladder_across_registrations() {
        let mut b = Backoff::new();
        let mut steps = Vec::new();
        for _ in 0..7 {
            // A dispute: each registration succeeds, then is replaced soon.
            b.registered();
            steps.push(b.after_channel(true, SECS(30), 1.0));
        }
        let expected: Vec<_> = [10, 20, 40, 80, 160, 300, 300]
            .map(|s| Pause::NameInUse(SECS(s)))
            .to_vec();
        assert_eq!(steps, expected);
        // The quick ladder is untouched: an ordinary disconnect is quick.
        assert_eq!(b.after_channel(false, SECS(30), 1.0), Pause::Retry(RETRY_START));
    }

    #[test]
    fn a_name_held_long_enough_resets_the_slow_ladder() {
        let mut b = Backoff::new();
        b.after_channel(true, SECS(1), 1.0);
        b.after_channel(true, SECS(1), 1.0);
        assert_eq!(
            b.after_channel(true, NAME_HELD_RESET, 1.0),
            Pause::NameInUse(NAME_IN_USE_START)
        );
        b.after_channel(true, SECS(1), 1.0);
        b.after_channel(false, NAME_HELD_RESET - SECS(1), 1.0);
        assert_eq!(b.after_channel(true, SECS(1), 1.0), Pause::NameInUse(SECS(40)));
        b.after_channel(false, NAME_HELD_RESET, 1.0);
        assert_eq!(b.after_channel(true, SECS(1), 1.0), Pause::NameInUse(NAME_IN_USE_START));
    }

    #[test]
    fn a_name_taken_climbs_the_slow_ladder_it_shares_with_replacements() {
        let mut b = Backoff::new();
        let steps: Vec<_> = (0..3).map(|_| b.after_name_taken(1.0)).collect();
        assert_eq!(steps, [10, 20, 40].map(|s| Pause::NameTaken(SECS(s))).to_vec());
        assert_eq!(b.after_channel(true, SECS(1), 1.0), Pause::NameInUse(SECS(80)));
        assert_eq!(b.after_failure(1.0), Pause::Retry(RETRY_START));
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_step() {
        assert_eq!(jitter(SECS(10), 0.0), SECS(5));
        assert_eq!(jitter(SECS(10), 0.5), Duration::from_millis(7500));
        assert_eq!(jitter(SECS(10), 1.0), SECS(10));
        assert_eq!(jitter(SECS(10), -3.0), SECS(5));
        assert_eq!(jitter(SECS(10), 7.0), SECS(10));
        assert_eq!(jitter(SECS(10), f64::NAN), SECS(10));
        assert_eq!(jitter(Duration::ZERO, 0.5), Duration::ZERO);
    }
}
