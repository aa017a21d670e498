//! What the gateway remembers of each operator's sign-ins, in one table
//! all workers share: failed sign-ins in a row, the lock they led to, and
//! the TOTP step of the last code accepted (so no code is accepted twice,
//! whichever worker sees it again).
//!
//! Bounded by the number of operators: only configured names enter (an
//! unknown name is answered with a mock verifier and never recorded), and
//! a reload drops the names it removed ([`SignIns::retain`]). Touched once
//! or twice per sign-in, never on the relay path, so one lock is enough.
//!
//! No I/O: time is an argument.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::MAX_OPERATORS;

/// When an operator is locked: after `after` failed sign-ins in a row,
/// for `lasts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockPolicy {
    /// Failures in a row that lock (`[auth] lockout_after`).
    pub after: u32,
    /// How long the lock lasts (`[auth] lockout_minutes`).
    pub lasts: Duration,
}

/// One operator's record.
#[derive(Debug, Default, Clone, Copy)]
struct Record {
    /// Failed sign-ins since the last success or lock.
    failures: u32,
    /// Locked until then, if locked.
    locked_until: Option<Instant>,
    /// The step of the last TOTP code accepted.
    last_step: Option<u64>,
}

impl Record {
    /// Nothing worth keeping: a new record would be the same.
    fn idle(&self, now: Instant) -> bool {
        self.failures == 0 && self.locked_until.is_none_or(|t| t <= now) && self.last_step.is_none()
    }
}

/// The shared table.
#[derive(Debug, Default)]
pub(crate) struct SignIns {
    map: Mutex<HashMap<String, Record>>,
}

impl SignIns {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // Poisoned only if a panic hit mid-update of plain numbers.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `name`, made if there is room: the table holds at
    /// most [`MAX_OPERATORS`], and at that bound it first drops idle
    /// records. `None` only if every record is busy, which a configured
    /// roster cannot cause.
    fn record<'a>(map: &'a mut HashMap<String, Record>, name: &str, now: Instant) -> Option<&'a mut Record> {
        if !map.contains_key(name) && map.len() >= MAX_OPERATORS {
            map.retain(|_, r| !r.idle(now));
            if map.len() >= MAX_OPERATORS {
                return None;
            }
        }
        Some(map.entry(name.to_string()).or_default())
    }

    /// Whether `name` is locked at `now`.
    pub fn locked(&self, name: &str, now: Instant) -> bool {
        self.lock()
            .get(name)
            .and_then(|r| r.locked_until)
            .is_some_and(|until| until > now)
    }

    /// Counts a failed sign-in of `name`; true if it locked the operator.
    /// A failure while locked does not extend the lock.
    pub fn failed(&self, name: &str, now: Instant, policy: LockPolicy) -> bool {
        let mut map = self.lock();
        let Some(r) = Self::record(&mut map, name, now) else {
            return false;
        };
        if r.locked_until.is_some_and(|until| until > now) {
            return false;
        }
        r.locked_until = None;
        r.failures = r.failures.saturating_add(1);
        if r.failures >= policy.after.max(1) {
            r.failures = 0;
            r.locked_until = Some(now + policy.lasts);
            return true;
        }
        false
    }

    /// A successful sign-in: the count of failures starts again.
    pub fn succeeded(&self, name: &str) {
        if let Some(r) = self.lock().get_mut(name) {
            r.failures = 0;
        }
    }

    /// Checks a TOTP code of `name` with `check`, which is given the step
    /// of the last code accepted and gives the step of this one (or why
    /// not); an accepted step is stored before the lock is let go, so two
    /// workers given the same code accept it once between them.
    pub fn accept_code<E>(
        &self,
        name: &str,
        now: Instant,
        check: impl FnOnce(Option<u64>) -> Result<u64, E>,
        full: E,
    ) -> Result<u64, E> {
        let mut map = self.lock();
        let Some(r) = Self::record(&mut map, name, now) else {
            return Err(full);
        };
        let step = check(r.last_step)?;
        r.last_step = Some(step);
        Ok(step)
    }

    /// Forgets every operator `keep` refuses (a reload removed them).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    /// Operators with a record.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockPolicy = LockPolicy {
        after: 5,
        lasts: Duration::from_secs(30 * 60),
    };

    #[test]
    fn five_failures_in_a_row_lock_for_the_lockout_and_no_longer() {
        let t = SignIns::default();
        let now = Instant::now();
        for i in 1..5 {
            assert!(!t.failed("alice", now, POLICY), "failure {i} does not lock");
            assert!(!t.locked("alice", now));
        }
        assert!(t.failed("alice", now, POLICY), "the fifth locks");
        assert!(t.locked("alice", now));
        assert!(t.locked("alice", now + POLICY.lasts - Duration::from_secs(1)));
        assert!(
            !t.failed("alice", now + Duration::from_secs(60), POLICY),
            "no extension"
        );
        assert!(!t.locked("alice", now + POLICY.lasts), "the lock ends on time");
        assert!(!t.locked("bob", now), "others are not locked");
    }

    #[test]
    fn a_success_resets_the_count() {
        let t = SignIns::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.failed("alice", now, POLICY);
        }
        t.succeeded("alice");
        for _ in 0..4 {
            assert!(!t.failed("alice", now, POLICY));
        }
        assert!(!t.locked("alice", now));
    }

    #[test]
    fn an_accepted_step_is_never_accepted_again() {
        let t = SignIns::default();
        let now = Instant::now();
        let newer = |step: u64| {
            move |last: Option<u64>| {
                if last.is_some_and(|l| step <= l) {
                    Err("replayed")
                } else {
                    Ok(step)
                }
            }
        };
        assert_eq!(t.accept_code("alice", now, newer(100), "full"), Ok(100));
        assert_eq!(t.accept_code("alice", now, newer(100), "full"), Err("replayed"));
        assert_eq!(t.accept_code("alice", now, newer(99), "full"), Err("replayed"));
        assert_eq!(t.accept_code("bob", now, newer(100), "full"), Ok(100), "per operator");
        assert_eq!(t.accept_code("alice", now, newer(101), "full"), Ok(101));
    }

    #[test]
    fn retain_forgets_removed_operators() {
        let t = SignIns::default();
        let now = Instant::now();
        t.failed("alice", now, POLICY);
        t.failed("bob", now, POLICY);
        t.retain(|n| n == "bob");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_table_is_bounded_by_the_roster() {
        let t = SignIns::default();
        let now = Instant::now();
        for i in 0..MAX_OPERATORS {
            t.failed(&format!("op{i}"), now, POLICY);
        }
        assert!(!t.failed("one-too-many", now, POLICY));
        assert_eq!(t.len(), MAX_OPERATORS);
        assert_eq!(
            t.accept_code("one-too-many", now, |_| Ok::<u64, &str>(1), "full"),
            Err("full")
        );
    }
}
