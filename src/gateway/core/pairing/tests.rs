use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const LIMITS: PairingLimits = PairingLimits {
    total: 6,
    per_key: 4,
    per_control: 2,
};

fn kid(n: u8) -> KeyId {
    KeyId([n; 8])
}

#[test]
fn a_waiting_session_is_joined_once_by_its_agent_only() {
    let t0 = Instant::now();
    let mut p = Pairing::new(LIMITS);
    let slot = p.open(kid(1), "ops", "pc1", [7; 16], t0, "waiter").expect("room");
    assert_eq!(p.take_waiter(slot, &[7; 16], kid(2), "pc1"), None, "another key");
    assert_eq!(p.take_waiter(slot, &[7; 16], kid(1), "pc2"), None, "another agent");
    assert_eq!(p.take_waiter(slot, &[8; 16], kid(1), "pc1"), None, "a guessed token");
    assert_eq!(p.take_waiter(slot, &[7; 16], kid(1), "pc1"), Some("waiter"));
    assert_eq!(p.take_waiter(slot, &[7; 16], kid(1), "pc1"), None, "only once");
    assert!(p.close(slot, &[7; 16]));
    assert!(!p.close(slot, &[7; 16]), "closing twice frees nothing twice");
    assert_eq!(p.len(), 0);
}

#[test]
fn one_key_flooding_cannot_take_another_keys_room() {
    let t0 = Instant::now();
    let mut p = Pairing::new(PairingLimits { total: 7, ..LIMITS });
    for (i, control) in ["a", "a", "b", "b"].iter().enumerate() {
        p.open(kid(1), control, "mute", [i as u8; 16], t0, ())
            .expect("key 1's share");
    }
    assert_eq!(p.open(kid(1), "c", "mute", [9; 16], t0, ()), Err(PairError::KeyFull));
    assert_eq!(p.open(kid(2), "ops", "pc1", [10; 16], t0, ()).map(|_| ()), Ok(()));
    assert_eq!(p.open(kid(2), "ops", "pc1", [11; 16], t0, ()).map(|_| ()), Ok(()));
    assert_eq!(
        p.open(kid(2), "ops", "pc1", [12; 16], t0, ()),
        Err(PairError::ControlFull),
        "one control's share"
    );
    assert_eq!(p.open(kid(3), "x", "pc1", [13; 16], t0, ()).map(|_| ()), Ok(()));
    assert_eq!(p.open(kid(3), "y", "pc1", [14; 16], t0, ()), Err(PairError::Full));
}

#[test]
fn expiry_reclaims_only_slots_past_their_deadline() {
    let t0 = Instant::now();
    let mut p = Pairing::new(LIMITS);
    let early = p.open(kid(1), "ops", "pc1", [1; 16], t0, ()).expect("room");
    let late = p
        .open(kid(1), "ops", "pc2", [2; 16], t0 + Duration::from_secs(10), ())
        .expect("room");
    assert_eq!(p.expire(t0 + Duration::from_secs(5)), 1);
    assert!(!p.close(early, &[1; 16]), "already reclaimed");
    assert!(p.close(late, &[2; 16]));
    assert_eq!(p.waiting_for_key(kid(1)), 0);
}

#[test]
fn cancelling_a_key_drops_its_waiters_and_keeps_the_rest() {
    let t0 = Instant::now();
    let mut p = Pairing::new(LIMITS);
    let a = p.open(kid(1), "ops", "pc1", [1; 16], t0, "a").expect("room");
    let b = p.open(kid(2), "ops", "pc1", [2; 16], t0, "b").expect("room");
    assert_eq!(p.cancel_where(|k| k == kid(1)), 1);
    assert_eq!(p.take_waiter(a, &[1; 16], kid(1), "pc1"), None);
    assert_eq!(p.take_waiter(b, &[2; 16], kid(2), "pc1"), Some("b"));
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    /// A control of key `k`, named `c`, connects to agent `a`.
    Connect { k: u8, c: u8, a: u8 },
    /// The agent of the n-th open session (mod how many) joins, maybe
    /// with the wrong key.
    Join { n: usize, wrong_key: bool },
    /// The control of the n-th open session stops waiting.
    Close { n: usize },
    /// Time passes by this many seconds and the sweeper runs.
    Timeout { secs: u64 },
    /// A reload removes key `k`.
    RemoveKey { k: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..3u8, 0..3u8).prop_map(|(k, c, a)| Op::Connect { k, c, a }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(n, wrong_key)| Op::Join { n, wrong_key }),
        2 => any::<usize>().prop_map(|n| Op::Close { n }),
        1 => (0..15u64).prop_map(|secs| Op::Timeout { secs }),
        1 => (0..3u8).prop_map(|k| Op::RemoveKey { k }),
    ]
}

/// What the model remembers of an open session.
#[derive(Debug, Clone)]
struct Open {
    slot: usize,
    token: [u8; 16],
    k: u8,
    c: u8,
    a: u8,
    deadline: Instant,
    waiter_taken: bool,
}

proptest! {
    /// Random histories keep the table's invariants: its counts match what
    /// is open, no share is exceeded, a waiter goes only to its own agent
    /// and key and only once, and when every control is done no slot or
    /// share is left behind.
    #[test]
    fn random_histories_keep_shares_and_leak_nothing(ops in proptest::collection::vec(op(), 1..120)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut p: Pairing<u32> = Pairing::new(LIMITS);
        let mut open: Vec<Open> = Vec::new();
        let mut next_token = 0u32;
        for op in ops {
            match op {
                Op::Connect { k, c, a } => {
                    next_token += 1;
                    let mut token = [0; 16];
                    token[..4].copy_from_slice(&next_token.to_le_bytes());
                    let deadline = now + Duration::from_secs(10);
                    let per_key = open.iter().filter(|o| o.k == k).count();
                    let per_control = open.iter().filter(|o| o.k == k && o.c == c).count();
                    let res = p.open(kid(k), &c.to_string(), &a.to_string(), token, deadline, next_token);
                    let expect = if open.len() >= LIMITS.total {
                        Err(PairError::Full)
                    } else if per_key >= LIMITS.per_key {
                        Err(PairError::KeyFull)
                    } else if per_control >= LIMITS.per_control {
                        Err(PairError::ControlFull)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(res.map(|_| ()), expect);
                    if let Ok(slot) = res {
                        open.push(Open { slot, token, k, c, a, deadline, waiter_taken: false });
                    }
                }
                Op::Join { n, wrong_key } if !open.is_empty() => {
                    let i = n % open.len();
                    let o = &mut open[i];
                    let k = if wrong_key { (o.k + 1) % 3 } else { o.k };
                    let got = p.take_waiter(o.slot, &o.token, kid(k), &o.a.to_string());
                    if wrong_key || o.waiter_taken {
                        prop_assert_eq!(got, None);
                    } else {
                        prop_assert!(got.is_some());
                        o.waiter_taken = true;
                    }
                }
                Op::Close { n } if !open.is_empty() => {
                    let o = open.remove(n % open.len());
                    prop_assert!(p.close(o.slot, &o.token));
                }
                Op::Timeout { secs } => {
                    now += Duration::from_secs(secs);
                    let before = open.len();
                    open.retain(|o| o.deadline >= now);
                    prop_assert_eq!(p.expire(now), before - open.len());
                }
                Op::RemoveKey { k } => {
                    let doomed = open.iter().filter(|o| o.k == k && !o.waiter_taken).count();
                    prop_assert_eq!(p.cancel_where(|id| id == kid(k)), doomed);
                    for o in open.iter_mut().filter(|o| o.k == k) {
                        o.waiter_taken = true;
                    }
                }
                Op::Join { .. } | Op::Close { .. } => {}
            }
            prop_assert_eq!(p.len(), open.len());
            let mut per_key: HashMap<u8, usize> = HashMap::new();
            for o in &open {
                *per_key.entry(o.k).or_default() += 1;
            }
            for k in 0..3u8 {
                let n = per_key.get(&k).copied().unwrap_or(0);
                prop_assert_eq!(p.waiting_for_key(kid(k)), n);
                prop_assert!(n <= LIMITS.per_key);
            }
            prop_assert!(p.len() <= LIMITS.total);
        }
        for o in open.drain(..) {
            prop_assert!(p.close(o.slot, &o.token));
        }
        prop_assert_eq!(p.len(), 0);
        prop_assert!(p.per_key.is_empty() && p.per_control.is_empty(), "no share left behind");
    }
}
