//! Shares of a cap counted across workers: the connection cap, the
//! licensed maximum of agents, and each key's quota of agents. Taking a
//! share is one atomic update (and, per key, one short lock); dropping it
//! gives the share back, so a share cannot leak on any path that drops
//! the connection holding it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::KeyId;

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

/// Shares counted per gateway key across workers: the agents each key
/// has connected, for `max_agents_per_key`. One entry per key that ever
/// registered an agent; only a verified proof names a key, so the map is
/// bounded by the keys configured. Touched once per registration, never
/// on the relay path, so one lock is enough.
#[derive(Debug, Default)]
pub(crate) struct KeyShares(Mutex<HashMap<KeyId, Counter>>);

impl KeyShares {
    /// Takes a share of `kid`'s quota, or `None` when `max` are in use;
    /// `max == 0` is no quota. Shares are counted either way, so a reload
    /// that sets a quota sees the agents already connected.
    pub fn take(&self, kid: KeyId, max: usize) -> Option<Permit> {
        let max = if max == 0 { usize::MAX } else { max };
        // Poisoned only by a panic between two plain map updates.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(kid).or_default().take(max)
    }

    /// Shares of `kid` in use now.
    #[cfg(test)]
    pub fn used(&self, kid: KeyId) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&kid).map_or(0, Counter::used)
    }
}

/// The licence, counted across workers: all agents (`max_clients`) and
/// each key's (`max_agents_per_key`).
#[derive(Debug, Default)]
pub(crate) struct Licence {
    /// One share per connected agent.
    pub agents: Counter,
    /// One share per connected agent, by its key.
    pub per_key: KeyShares,
}

impl Licence {
    /// Agents connected, all keys.
    pub fn used(&self) -> usize {
        self.agents.used()
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

    #[test]
    fn each_key_has_its_own_quota_and_zero_means_none() {
        let (a, b) = (KeyId([1; 8]), KeyId([2; 8]));
        let shares = KeyShares::default();
        let a1 = shares.take(a, 2).expect("a's first");
        let _a2 = shares.take(a, 2).expect("a's second");
        assert!(shares.take(a, 2).is_none(), "a is at its quota");
        let _b1 = shares.take(b, 2).expect("b is not touched by a's quota");
        assert_eq!((shares.used(a), shares.used(b)), (2, 1));
        drop(a1);
        assert!(shares.take(a, 2).is_some(), "a share given back is free again");
        let unlimited: Vec<_> = (0..100).map(|_| shares.take(b, 0).expect("no quota")).collect();
        assert_eq!(shares.used(b), 101, "counted without a quota too");
        drop(unlimited);
    }
}
