//! Shares of a cap counted across workers: the connection cap, and the
//! licensed maximum of agents. Taking a share is one atomic update;
//! dropping it gives the share back, so a share cannot leak on any path
//! that drops the connection holding it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A count of shares in use, shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// Shares in use now.
    pub fn used(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Takes a share, or `None` when `max` are already in use. `max == 0`
    /// means no share can be had.
    pub fn take(&self, max: usize) -> Option<Permit> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Permit(self.0.clone()))
    }
}

/// One share of a [`Counter`]; dropping it gives the share back. It
/// travels with what it counts (a socket through hand-offs, an agent's
/// channel task).
#[derive(Debug)]
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_stop_at_the_cap_and_come_back_when_dropped() {
        let c = Counter::default();
        let a = c.take(2).expect("first");
        let b = c.take(2).expect("second");
        assert!(c.take(2).is_none(), "full at 2");
        assert_eq!(c.used(), 2);
        drop(a);
        assert_eq!(c.used(), 1);
        let _c = c.take(2).expect("room again");
        drop(b);
        assert_eq!(c.used(), 1);
        assert!(c.take(0).is_none(), "a cap of 0 admits nothing");
    }
}
