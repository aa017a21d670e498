//! Capacity for admin connections: a total, and a share per source so one
//! address cannot hold every slot. A slot is taken before a connection is
//! served and given back when its [`Slot`] drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which share a peer's connections count against: its IPv4 address, or
/// its IPv6 /64 (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4(u32),
    /// The top 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The share `ip` counts against.
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            // Invariant: shifting a u128 right by 64 leaves 64 bits.
            IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every slot is taken.
    Full,
    /// This source holds its whole share.
    SourceFull,
}

/// A bounded set of slots with a per-source share.
#[derive(Debug)]
pub struct Slots {
    /// Slots in all.
    total: usize,
    /// Slots one source may hold.
    per_source: usize,
    /// Slots held: in all, and per source (entries at zero are removed,
    /// so the map never holds more than `total` entries).
    held: Mutex<(usize, HashMap<Source, usize>)>,
}

/// One taken slot; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    source: Source,
}

impl Slots {
    /// `total` slots, at most `per_source` of them for one source.
    pub fn new(total: usize, per_source: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_source,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a slot for `source`, or says why there is none.
    pub fn take(self: &Arc<Self>, source: Source) -> Result<Slot, Busy> {
        // A panic while holding the lock leaves plain counts behind, which
        // stay correct: nothing is half-updated between the two lines.
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_source) = &mut *held;
        if *all >= self.total {
            return Err(Busy::Full);
        }
        let mine = by_source.entry(source).or_insert(0);
        if *mine >= self.per_source {
            return Err(Busy::SourceFull);
        }
        *mine += 1;
        *all += 1;
        Ok(Slot {
            slots: self.clone(),
            source,
        })
    }

    /// The limits, for messages.
    pub fn limits(&self) -> (usize, usize) {
        (self.total, self.per_source)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_source) = &mut *held;
        *all = all.saturating_sub(1);
        if let Some(mine) = by_source.get_mut(&self.source) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ip: &str) -> Source {
        Source::of(ip.parse().expect("an IP address"))
    }

    #[test]
    fn one_source_gets_its_share_and_the_total_holds() {
        let slots = Slots::new(3, 2);
        let a1 = slots.take(source("10.0.0.1")).expect("a first slot");
        let _a2 = slots.take(source("10.0.0.1")).expect("a second slot");
        assert_eq!(slots.take(source("10.0.0.1")).err(), Some(Busy::SourceFull));
        let _b1 = slots.take(source("10.0.0.2")).expect("another source's slot");
        assert_eq!(slots.take(source("10.0.0.3")).err(), Some(Busy::Full));
        drop(a1);
        let _c1 = slots
            .take(source("10.0.0.3"))
            .expect("a slot given back is taken again");
        assert_eq!(slots.held.lock().expect("not poisoned").1.len(), 3);
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        assert_eq!(source("2001:db8::1"), source("2001:db8::ffff:2"));
        assert_ne!(source("2001:db8::1"), source("2001:db8:0:1::1"));
        assert_eq!(source("::ffff:10.0.0.1"), source("10.0.0.1"));
        assert_ne!(source("::"), source("0.0.0.0"));
    }

    #[test]
    fn sources_at_zero_leave_the_table() {
        let slots = Slots::new(4, 4);
        let taken: Vec<Slot> = (1..=4)
            .map(|i| slots.take(source(&format!("10.0.0.{i}"))).expect("a slot"))
            .collect();
        drop(taken);
        let held = slots.held.lock().expect("not poisoned");
        assert_eq!((held.0, held.1.len()), (0, 0));
    }
}
