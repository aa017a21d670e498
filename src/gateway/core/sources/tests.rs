use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn limits(unauthenticated: usize, per_sec: usize, burst: usize) -> SourceLimits {
    SourceLimits {
        unauthenticated,
        per_sec,
        burst,
        tracked: 1024,
    }
}

fn table(l: SourceLimits) -> Arc<Sources> {
    Arc::new(Sources::new(l))
}

fn why(r: Result<Unauthenticated, Refused>) -> Refused {
    match r {
        Ok(_) => panic!("expected a refusal"),
        Err(refused) => refused,
    }
}

#[test]
fn a_source_is_refused_past_its_unauthenticated_limit_until_one_closes_or_proves() {
    let t = table(limits(2, 0, 1));
    let now = Instant::now();
    let a = t.admit(v4(1), now).expect("first");
    let b = t.admit(v4(1), now).expect("second");
    let refused = why(t.admit(v4(1), now));
    assert_eq!(
        refused,
        Refused {
            source: Source::of(v4(1)),
            why: SourceRefusal::Unauthenticated(2),
        }
    );
    assert_eq!(
        refused.event_text(),
        "Connection refused from 192.0.2.1: it has 2 connections open that have not proven a key"
    );
    let other = t.admit(v4(2), now).expect("another source has its own count");
    assert_eq!((t.open(v4(1)), t.open(v4(2))), (2, 1));

    drop(a);
    assert_eq!(t.open(v4(1)), 1, "a closed connection gives its place back");
    let c = t.admit(v4(1), now).expect("room again");
    b.proven();
    assert_eq!(t.open(v4(1)), 1, "a proven connection no longer counts");
    let _d = t.admit(v4(1), now).expect("room after the proof");
    drop((c, other));
}

#[test]
fn addresses_in_one_ipv6_64_are_one_source_and_mapped_ipv4_is_ipv4() {
    let one: Ipv6Addr = "2001:db8:1:2::1".parse().expect("literal");
    let same: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().expect("literal");
    let next: Ipv6Addr = "2001:db8:1:3::1".parse().expect("literal");
    assert_eq!(Source::of(one.into()), Source::of(same.into()));
    assert_ne!(Source::of(one.into()), Source::of(next.into()));
    assert_eq!(Source::of(one.into()).to_string(), "2001:db8:1:2::/64");
    let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().expect("literal");
    assert_eq!(Source::of(mapped.into()), Source::of(v4(7)));
    assert_eq!(Source::of(mapped.into()).to_string(), "192.0.2.7");

    let t = table(limits(1, 0, 1));
    let _held = t.admit(one.into(), Instant::now()).expect("first in the /64");
    let refused = why(t.admit(same.into(), Instant::now()));
    assert_eq!(
        refused.why,
        SourceRefusal::Unauthenticated(1),
        "another address of the /64"
    );
    assert!(
        t.admit(next.into(), Instant::now()).is_ok(),
        "the next /64 is another source"
    );
}

#[test]
fn the_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
    let t = table(limits(100, 2, 3));
    let start = Instant::now();
    for _ in 0..3 {
        drop(t.admit(v4(1), start).expect("within the burst"));
    }
    assert_eq!(why(t.admit(v4(1), start)).why, SourceRefusal::Rate(2));
    let at = |ms: u64| start + Duration::from_millis(ms);
    assert!(t.admit(v4(1), at(499)).is_err(), "half a token after 499 ms at 2/s");
    drop(t.admit(v4(1), at(500)).expect("one token after 500 ms"));
    assert!(t.admit(v4(1), at(500)).is_err(), "and only one");
    // Ten seconds refill 20 tokens, but the bucket holds 3.
    for _ in 0..3 {
        drop(t.admit(v4(1), at(10_500)).expect("a full bucket"));
    }
    assert!(t.admit(v4(1), at(10_500)).is_err(), "the burst caps the refill");
}

#[test]
fn frequent_looks_lose_no_fraction_of_a_token() {
    // 1 a second, looked at every millisecond: exactly one token per 1000.
    let t = table(limits(100, 1, 1));
    let start = Instant::now();
    drop(t.admit(v4(1), start).expect("the burst"));
    let mut admitted = 0;
    for ms in 1..=3000 {
        if let Ok(ticket) = t.admit(v4(1), start + Duration::from_millis(ms)) {
            admitted += 1;
            drop(ticket);
        }
    }
    assert_eq!(admitted, 3);
}

#[test]
fn a_proven_connection_gives_its_token_back_and_a_closed_one_does_not() {
    let t = table(limits(100, 1, 2));
    let now = Instant::now();
    for i in 0..1000 {
        let ticket = t.admit(v4(1), now).unwrap_or_else(|_| panic!("proof {i} was refused"));
        ticket.proven();
    }
    drop(t.admit(v4(1), now).expect("first unproven"));
    drop(t.admit(v4(1), now).expect("second unproven"));
    assert_eq!(why(t.admit(v4(1), now)).why, SourceRefusal::Rate(1));
}

#[test]
fn the_rate_limit_off_refuses_only_by_count() {
    let t = table(limits(3, 0, 1));
    let now = Instant::now();
    for _ in 0..10_000 {
        drop(t.admit(v4(1), now).expect("no bucket"));
    }
    let held: Vec<_> = (0..3).map(|_| t.admit(v4(1), now).expect("within the count")).collect();
    assert_eq!(why(t.admit(v4(1), now)).why, SourceRefusal::Unauthenticated(3));
    drop(held);
}

#[test]
fn workers_sweep_disjoint_parts_that_cover_the_table() {
    let t = table(limits(1, 1, 1));
    let start = Instant::now();
    for i in 0..64 {
        // An empty bucket keeps the entry until it has refilled.
        drop(t.admit(v4(i), start).expect("first"));
    }
    let refilled = start + Duration::from_secs(1);
    t.sweep(start, 0, 1);
    assert_eq!(t.len(), 64, "nothing is dropped before its bucket is full");
    t.sweep(refilled, 0, 2);
    let left = t.len();
    assert!(left > 0 && left < 64, "one worker's half drops its own: {left} left");
    t.sweep(refilled, 1, 2);
    assert_eq!(t.len(), 0, "the other half drops the rest");
}

#[test]
fn a_flood_of_sources_stays_within_the_bound_and_never_forgets_an_open_connection() {
    let bounded = SourceLimits {
        tracked: 64,
        ..limits(1, 1, 10)
    };
    let t = table(bounded);
    let now = Instant::now();
    let kept = t.admit(v4(1), now).expect("a source holding a connection");
    for i in 0..20_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        // Each takes a token, so its entry is not idle: only the bound
        // removes it.
        drop(t.admit(ip, now).expect("room is made"));
    }
    assert!(t.len() <= 2 * 64 + PARTS, "{} sources tracked", t.len());
    assert_eq!(t.open(v4(1)), 1, "the open connection is still counted");
    assert_eq!(why(t.admit(v4(1), now)).why, SourceRefusal::Unauthenticated(1));
    drop(kept);
    t.sweep(now + Duration::from_secs(10), 0, 1);
    assert_eq!(t.len(), 0, "idle sources with full buckets are dropped");
}

#[test]
fn a_table_full_of_open_connections_refuses_new_sources_until_one_closes() {
    let tiny = SourceLimits {
        tracked: 1,
        ..limits(1, 0, 1)
    };
    let t = table(tiny);
    let now = Instant::now();
    let mut held = Vec::new();
    let mut refused = None;
    // 16 parts of 2: the 33rd source cannot fit, and one before it may not.
    for i in 0..=32u8 {
        match t.admit(v4(i), now) {
            Ok(ticket) => held.push(ticket),
            Err(r) => {
                refused = Some((i, r));
                break;
            }
        }
    }
    let (i, r) = refused.expect("a full table refuses");
    assert_eq!(r.why, SourceRefusal::TableFull);
    assert!(held.len() <= 32);
    held.clear();
    assert!(t.admit(v4(i), now).is_ok(), "closed connections make room");
}

#[test]
fn a_lowered_limit_applies_to_new_connections() {
    let t = table(limits(4, 0, 1));
    let now = Instant::now();
    let held: Vec<_> = (0..3).map(|_| t.admit(v4(1), now).expect("within 4")).collect();
    t.set_limits(limits(2, 0, 1));
    assert_eq!(t.open(v4(1)), 3, "open connections stay");
    assert_eq!(why(t.admit(v4(1), now)).why, SourceRefusal::Unauthenticated(3));
    drop(held);
    assert!(t.admit(v4(1), now).is_ok());
}

#[test]
fn sign_ins_have_a_burst_then_ten_a_minute_per_source() {
    let t = table(limits(4, 0, 1));
    let now = Instant::now();
    for i in 0..SIGNIN_BURST {
        assert!(t.take_signin(v4(1), now).is_ok(), "sign-in {i} is within the burst");
    }
    assert_eq!(
        t.take_signin(v4(1), now).expect_err("spent").why,
        SourceRefusal::SignIns
    );
    assert!(t.take_signin(v4(2), now).is_ok(), "another source has its own bucket");
    let later = now + Duration::from_secs(6);
    assert!(t.take_signin(v4(1), later).is_ok(), "one more after 6 s");
    assert_eq!(
        t.take_signin(v4(1), later).expect_err("spent").why,
        SourceRefusal::SignIns
    );
    // A spent bucket is remembered: the entry is not idle until it is full.
    t.sweep(later, 0, 1);
    assert_eq!(
        t.take_signin(v4(1), later).expect_err("spent").why,
        SourceRefusal::SignIns
    );
}

proptest! {
    /// Whatever the order of accepts, closes and proofs, a source's count
    /// is exactly its connections not yet closed or proven, never above
    /// the limit.
    #[test]
    fn the_count_is_the_tickets_alive(ops in proptest::collection::vec((0u8..3, 0u8..4), 1..200)) {
        let t = table(limits(3, 0, 1));
        let now = Instant::now();
        let mut alive: Vec<Vec<Unauthenticated>> = (0..3).map(|_| Vec::new()).collect();
        for (source, op) in ops {
            let held = &mut alive[source as usize];
            match op {
                0 | 1 => match t.admit(v4(source), now) {
                    Ok(ticket) => held.push(ticket),
                    Err(r) => prop_assert_eq!(held.len(), 3, "refused {:?} below the limit", r),
                },
                2 => drop(held.pop()),
                _ => {
                    if let Some(ticket) = held.pop() {
                        ticket.proven();
                    }
                }
            }
            for s in 0..3u8 {
                prop_assert_eq!(t.open(v4(s)), alive[s as usize].len());
            }
        }
    }
}
