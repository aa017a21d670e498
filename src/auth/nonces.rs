//! The nonces each key's proofs have used, so a captured request cannot be
//! sent again within the replay window.
//!
//! Each key has a set of its own ([`KeyNonces`]) with its own lock and
//! its own quota, so one tenant flooding proofs fills only its own set:
//! the other keys neither wait on its lock nor lose room to it. The
//! registry ([`NonceCache`]) is locked only when a key ring is built, at
//! start and on reload; a proof goes straight to its key's set.
//!
//! A set is [`BUCKETS`] buckets of [`BUCKET_SECS`], indexed by the minute
//! of the proof's own timestamp. A replay carries the same (signed)
//! timestamp, so it is looked for in one bucket only, and a whole bucket
//! is forgotten at once when its minute leaves the window: expiry costs
//! a check of eleven tags, never a scan of the nonces.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AuthError, GatewayKey, KeyId, REPLAY_WINDOW_SECS};

/// Width of one bucket, seconds.
pub const BUCKET_SECS: u64 = 60;

/// Buckets per key: every minute a timestamp within ±[`REPLAY_WINDOW_SECS`]
/// of now can fall in. The window spans 600 s, so it touches at most 11
/// whole or partial minutes; two live minutes can therefore never share a
/// bucket, and a bucket whose minute differs from the one being inserted
/// holds only nonces that can no longer be accepted.
pub const BUCKETS: usize = (2 * REPLAY_WINDOW_SECS / BUCKET_SECS) as usize + 1;

/// One minute's nonces.
#[derive(Default)]
struct Bucket {
    /// The minute (unix seconds / [`BUCKET_SECS`]) the nonces were made in.
    minute: u64,
    /// Nonces of proofs made in that minute.
    seen: HashSet<[u8; 16]>,
}

/// The buckets of one key and how many nonces they hold in all.
#[derive(Default)]
struct Buckets {
    ring: [Bucket; BUCKETS],
    /// Nonces held across the ring, checked against the quota.
    len: usize,
}

impl Buckets {
    /// Forgets every bucket whose minute is wholly older than the window:
    /// no proof made in it can be accepted any more.
    fn expire(&mut self, now: u64) {
        for b in &mut self.ring {
            if !b.seen.is_empty() && b.minute * BUCKET_SECS + (BUCKET_SECS - 1) + REPLAY_WINDOW_SECS < now {
                self.len -= b.seen.len();
                // A fresh set gives the memory back; `clear` would keep it.
                b.seen = HashSet::new();
            }
        }
    }
}

/// One key's nonces.
#[derive(Default)]
pub struct KeyNonces {
    buckets: Mutex<Buckets>,
}

impl KeyNonces {
    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // Poisoned only if a worker panicked mid-insert; the sets are
        // still valid sets, so keep using them.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `nonce` of a proof made at `ts` (already checked to be
    /// within the window of `now`), or refuses it: seen before
    /// ([`AuthError::Replayed`]), or this key already holds `quota`
    /// nonces ([`AuthError::NonceQuota`]).
    pub fn insert(&self, nonce: [u8; 16], ts: u64, now: u64, quota: usize) -> Result<(), AuthError> {
        let minute = ts / BUCKET_SECS;
        let mut buckets = self.lock();
        buckets.expire(now);
        let Buckets { ring, len } = &mut *buckets;
        // Invariant: BUCKETS is a small constant, so the index fits.
        let bucket = &mut ring[(minute % BUCKETS as u64) as usize];
        if bucket.minute != minute {
            // Another minute's leftovers: dead, as BUCKETS explains.
            *len -= bucket.seen.len();
            bucket.seen = HashSet::new();
            bucket.minute = minute;
        }
        if bucket.seen.contains(&nonce) {
            return Err(AuthError::Replayed);
        }
        if *len >= quota {
            return Err(AuthError::NonceQuota);
        }
        bucket.seen.insert(nonce);
        *len += 1;
        Ok(())
    }

    /// How many nonces are held that could still be replayed at `now`.
    pub fn live(&self, now: u64) -> usize {
        let mut buckets = self.lock();
        buckets.expire(now);
        buckets.len
    }
}

/// Every key's nonce set, shared by all workers (a replay may land on
/// any of them). Locked only to build a key ring.
#[derive(Default)]
pub struct NonceCache {
    keys: Mutex<HashMap<KeyId, Arc<KeyNonces>>>,
}

impl NonceCache {
    /// The sets for `keys`, made for keys seen for the first time. A key
    /// no longer configured keeps its set while it holds nonces that
    /// could be replayed, so removing a key and adding it back within the
    /// window does not forget them; then the set goes.
    pub fn sets_for(&self, keys: &[GatewayKey], now: u64) -> Vec<(GatewayKey, Arc<KeyNonces>)> {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|kid, set| keys.iter().any(|k| k.id() == *kid) || set.live(now) > 0);
        keys.iter()
            .map(|k| (k.clone(), Arc::clone(map.entry(k.id()).or_default())))
            .collect()
    }

    /// How many keys have a set (configured, or removed with nonces
    /// still live).
    pub fn keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn nonce(i: u32) -> [u8; 16] {
        let mut n = [0u8; 16];
        n[..4].copy_from_slice(&i.to_be_bytes());
        n
    }

    #[test]
    fn eleven_buckets_cover_the_window() {
        assert_eq!(BUCKETS, 11);
    }

    #[test]
    fn a_nonce_is_refused_again_anywhere_in_the_window() {
        let set = KeyNonces::default();
        for ts in [NOW - REPLAY_WINDOW_SECS, NOW - 1, NOW, NOW + REPLAY_WINDOW_SECS] {
            assert_eq!(set.insert(nonce(ts as u32), ts, NOW, 100), Ok(()));
        }
        // Replayed at any later moment at which its timestamp is still
        // acceptable: refused.
        for later in [NOW, NOW + 299, NOW + 2 * REPLAY_WINDOW_SECS] {
            let ts = NOW + REPLAY_WINDOW_SECS;
            assert_eq!(set.insert(nonce(ts as u32), ts, later, 100), Err(AuthError::Replayed));
        }
    }

    #[test]
    fn the_quota_refuses_new_nonces_and_still_spots_replays() {
        let set = KeyNonces::default();
        for i in 0..10 {
            assert_eq!(set.insert(nonce(i), NOW, NOW, 10), Ok(()));
        }
        assert_eq!(set.insert(nonce(10), NOW, NOW, 10), Err(AuthError::NonceQuota));
        assert_eq!(set.insert(nonce(3), NOW, NOW, 10), Err(AuthError::Replayed));
        assert_eq!(set.live(NOW), 10);
    }

    #[test]
    fn a_minute_is_forgotten_once_it_leaves_the_window_and_not_before() {
        let set = KeyNonces::default();
        let minute_start = NOW - NOW % BUCKET_SECS;
        for i in 0..5 {
            assert_eq!(set.insert(nonce(i), minute_start, minute_start, 5), Ok(()));
        }
        // The minute's last second is still acceptable up to 300 s after.
        let last_acceptable = minute_start + BUCKET_SECS - 1 + REPLAY_WINDOW_SECS;
        assert_eq!(set.live(last_acceptable), 5);
        assert_eq!(
            set.insert(nonce(99), last_acceptable, last_acceptable, 5),
            Err(AuthError::NonceQuota)
        );
        assert_eq!(set.live(last_acceptable + 1), 0);
        assert_eq!(
            set.insert(nonce(99), last_acceptable + 1, last_acceptable + 1, 5),
            Ok(())
        );
    }

    #[test]
    fn one_key_over_its_quota_leaves_another_key_untouched() {
        let cache = NonceCache::default();
        let (a, b) = (GatewayKey::new("Testing1"), GatewayKey::new("Testing2"));
        let sets = cache.sets_for(&[a, b], NOW);
        for i in 0..3 {
            assert_eq!(sets[0].1.insert(nonce(i), NOW, NOW, 3), Ok(()));
        }
        assert_eq!(sets[0].1.insert(nonce(3), NOW, NOW, 3), Err(AuthError::NonceQuota));
        for i in 0..3 {
            assert_eq!(
                sets[1].1.insert(nonce(i), NOW, NOW, 3),
                Ok(()),
                "the same nonce under another key"
            );
        }
    }

    #[test]
    fn a_removed_key_keeps_its_nonces_until_they_expire() {
        let cache = NonceCache::default();
        let (a, b) = (GatewayKey::new("Testing1"), GatewayKey::new("Testing2"));
        let first = cache.sets_for(&[a.clone(), b.clone()], NOW);
        assert_eq!(first[0].1.insert(nonce(1), NOW, NOW, 10), Ok(()));
        // Rebuilt on reload: the same sets, not fresh ones.
        let again = cache.sets_for(&[a.clone(), b.clone()], NOW);
        assert!(Arc::ptr_eq(&first[0].1, &again[0].1));
        // Removed, then added back within the window: still remembered.
        cache.sets_for(std::slice::from_ref(&b), NOW + 1);
        assert_eq!(cache.keys(), 2);
        let back = cache.sets_for(&[a.clone(), b.clone()], NOW + 2);
        assert_eq!(back[0].1.insert(nonce(1), NOW, NOW + 2, 10), Err(AuthError::Replayed));
        // Removed with nothing live: gone.
        let later = NOW + 2 * REPLAY_WINDOW_SECS + BUCKET_SECS;
        cache.sets_for(std::slice::from_ref(&b), later);
        assert_eq!(cache.keys(), 1);
    }
}
