use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::gateway::core::outbox::outbox;

fn kid(n: u8) -> KeyId {
    KeyId([n; 8])
}

fn record(id: u64, k: u8, name: &str, last_seen: Instant) -> AgentRecord {
    let (outbox, _inbox) = outbox(1);
    AgentRecord {
        id,
        kid: kid(k),
        name: name.to_string(),
        mac: String::new(),
        local_ip: String::new(),
        os: String::new(),
        external: SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)),
        connected_since: SystemTime::UNIX_EPOCH,
        last_poll: SystemTime::UNIX_EPOCH,
        last_seen,
        outbox,
        licence: None,
        flaps: Flaps::default(),
        cluster: None,
    }
}

#[test]
fn a_replacement_inherits_the_licence_share_and_a_new_name_needs_one() {
    let now = Instant::now();
    let licence = Licence::default();
    let mut d = Directory::default();
    d.admit(record(1, 1, "pc1", now), &licence, 1, 0).expect("room for one");
    let (slot, old) = d
        .admit(record(2, 1, "pc1", now), &licence, 1, 0)
        .expect("same name replaces");
    assert_eq!(old.map(|o| o.id), Some(1));
    assert_eq!(licence.used(), 1, "the share moved, none was added");
    assert_eq!(
        d.admit(record(3, 1, "pc2", now), &licence, 1, 0).map(|_| ()),
        Err(AdmitError::Licence)
    );
    assert_eq!(
        d.find(kid(1), "pc1").map(|r| r.id),
        Some(2),
        "a refusal leaves the others alone"
    );
    assert!(d.remove_if(slot, 1).is_none(), "a stale registration removes nothing");
    assert!(d.remove_if(slot, 2).is_some());
    assert_eq!(licence.used(), 0, "the share went with the record");
}

#[test]
fn a_key_at_its_quota_is_refused_while_other_keys_and_replacements_get_in() {
    let now = Instant::now();
    let licence = Licence::default();
    let mut d = Directory::default();
    d.admit(record(1, 1, "a1", now), &licence, 0, 2).expect("a's first");
    d.admit(record(2, 1, "a2", now), &licence, 0, 2).expect("a's second");
    assert_eq!(
        d.admit(record(3, 1, "a3", now), &licence, 0, 2).map(|_| ()),
        Err(AdmitError::KeyQuota)
    );
    assert_eq!(licence.used(), 2, "a refused agent holds no licence share");
    d.admit(record(4, 2, "b1", now), &licence, 0, 2)
        .expect("key 2 has its own quota");
    let (slot, old) = d
        .admit(record(5, 1, "a1", now), &licence, 0, 2)
        .expect("a1 reconnecting keeps its share");
    assert_eq!(old.map(|o| o.id), Some(1));
    assert_eq!(licence.per_key.used(kid(1)), 2);
    assert!(d.remove_if(slot, 5).is_some());
    d.admit(record(6, 1, "a3", now), &licence, 0, 2)
        .expect("room after a1 left");
}

#[test]
fn the_same_name_under_two_keys_is_two_agents() {
    let now = Instant::now();
    let licence = Licence::default();
    let mut d = Directory::default();
    d.admit(record(1, 1, "pc1", now), &licence, 0, 0).expect("no limit");
    let (_, old) = d.admit(record(2, 2, "pc1", now), &licence, 0, 0).expect("no limit");
    assert!(old.is_none());
    assert_eq!(d.list(kid(1)).len(), 1);
    assert_eq!(d.list(kid(2)).len(), 1);
}

#[test]
fn ownership_is_stable_and_in_range() {
    for workers in 1..9 {
        for name in ["pc1", "kiosk-7", "ä"] {
            let w = owner_of(kid(3), name, workers);
            assert!(w < workers);
            assert_eq!(w, owner_of(kid(3), name, workers));
        }
    }
    assert_eq!(owner_of(kid(3), "pc1", 0), 0, "no division by zero");
}

#[derive(Debug, Clone)]
enum Op {
    Register { k: u8, name: u8 },
    Drop { n: usize },
    Timeout { secs: u64 },
    RemoveKey { k: u8 },
    Poll { n: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3u8, 0..4u8).prop_map(|(k, name)| Op::Register { k, name }),
        2 => any::<usize>().prop_map(|n| Op::Drop { n }),
        1 => (0..40u64).prop_map(|secs| Op::Timeout { secs }),
        1 => (0..3u8).prop_map(|k| Op::RemoveKey { k }),
        2 => any::<usize>().prop_map(|n| Op::Poll { n }),
    ]
}

const MAX_CLIENTS: usize = 7;
/// Below MAX_CLIENTS, so that random histories hit both limits.
const MAX_PER_KEY: usize = 3;
const DEADLINE: Duration = Duration::from_secs(30);

proptest! {
    /// Random histories of register / replace / drop / timeout / key
    /// removal keep one record per key and name, the index true to the
    /// slab, the licence and each key's quota equal to the records and
    /// never past their maximum,
    /// and no record of a removed key.
    #[test]
    fn random_histories_keep_the_directory_consistent(ops in proptest::collection::vec(op(), 1..150)) {
        let t0 = Instant::now();
        let mut now = t0;
        let licence = Licence::default();
        let mut d = Directory::default();
        // (slot, id) of the registrations the model believes are current.
        let mut live: Vec<(usize, u64, u8, u8)> = Vec::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Register { k, name } => {
                    next += 1;
                    let replacing = live.iter().position(|&(_, _, lk, ln)| lk == k && ln == name);
                    let res = d.admit(record(next, k, &name.to_string(), now), &licence, MAX_CLIENTS, MAX_PER_KEY);
                    match (res, replacing) {
                        (Ok((slot, old)), Some(i)) => {
                            prop_assert_eq!(old.map(|o| o.id), Some(live[i].1));
                            live[i] = (slot, next, k, name);
                        }
                        (Ok((slot, old)), None) => {
                            prop_assert!(old.is_none());
                            prop_assert!(live.len() < MAX_CLIENTS);
                            live.push((slot, next, k, name));
                        }
                        (Err(AdmitError::Licence), None) => prop_assert_eq!(live.len(), MAX_CLIENTS),
                        (Err(AdmitError::KeyQuota), None) => {
                            prop_assert_eq!(live.iter().filter(|l| l.2 == k).count(), MAX_PER_KEY);
                        }
                        (Err(e), Some(_)) => prop_assert!(false, "a replacement was refused: {:?}", e),
                    }
                }
                Op::Drop { n } if !live.is_empty() => {
                    let (slot, id, _, _) = live.remove(n % live.len());
                    prop_assert!(d.remove_if(slot, id).is_some());
                    prop_assert!(d.remove_if(slot, id).is_none(), "only once");
                }
                Op::Poll { n } if !live.is_empty() => {
                    let (slot, id, _, _) = live[n % live.len()];
                    d.touch(slot, id, true);
                    if let Some(rec) = d.slab.get_mut(slot) {
                        rec.last_seen = now;
                    }
                }
                Op::Timeout { secs } => {
                    now += Duration::from_secs(secs);
                    let gone = d.remove_where(|r| now.duration_since(r.last_seen) > DEADLINE);
                    let gone: HashSet<u64> = gone.iter().map(|r| r.id).collect();
                    live.retain(|l| !gone.contains(&l.1));
                }
                Op::RemoveKey { k } => {
                    let gone = d.remove_where(|r| r.kid == kid(k));
                    prop_assert_eq!(gone.len(), live.iter().filter(|l| l.2 == k).count());
                    live.retain(|l| l.2 != k);
                    prop_assert!(d.iter().all(|r| r.kid != kid(k)), "a removed key leaves no record");
                }
                Op::Drop { .. } | Op::Poll { .. } => {}
            }
            prop_assert_eq!(d.len(), live.len());
            prop_assert_eq!(d.index.len(), d.slab.len(), "one index entry per record");
            prop_assert_eq!(licence.used(), d.len(), "the licence counts the records");
            prop_assert!(licence.used() <= MAX_CLIENTS);
            for k in 0..3u8 {
                let of_key = live.iter().filter(|l| l.2 == k).count();
                prop_assert_eq!(licence.per_key.used(kid(k)), of_key, "the key's quota counts its records");
                prop_assert!(of_key <= MAX_PER_KEY);
            }
            let names: HashSet<(KeyId, &str)> = d.iter().map(|r| (r.kid, r.name.as_str())).collect();
            prop_assert_eq!(names.len(), d.len(), "one record per key and name");
            for &(slot, id, k, name) in &live {
                let found = d.find(kid(k), &name.to_string()).map(|r| (r.id, r.kid));
                prop_assert_eq!(found, Some((id, kid(k))));
                prop_assert!(d.find_slot(slot, id).is_some());
            }
        }
    }
}
