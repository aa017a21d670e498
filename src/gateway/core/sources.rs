//! Connections that have not proven a key yet, counted per source, and
//! the rate at which each source opens new ones (a token bucket). A
//! source is an IPv4 address or an IPv6 /64: a host picks any address in
//! its /64 at will, so counting per address would count nothing.
//!
//! One table for all workers, not one per worker with the limits divided:
//! the kernel deals one source's connections over the workers' listeners
//! by a hash of their ports, so a divided share would refuse a source at
//! a fraction of its limit on one worker while the other sat idle. The
//! table is touched when a connection is accepted and once more when it
//! proves a key or closes, never on the relay path, so a lock per part
//! costs nothing that shows.
//!
//! A connection leaves its source's count once it proves a key: agents
//! behind one NAT are then limited by the per-key quota and the licence,
//! not by sharing an address. Proving a key also gives back the token the
//! connection took, so the bucket slows only connections that do not
//! authenticate (probes, floods) and never a site of honest agents or a
//! control opening sessions in a loop.
//!
//! Bounded: at most [`SourceLimits::tracked`] sources (sources with open
//! connections are bounded by the connection cap anyway; the rest are
//! kept only until their bucket is full again and their refusals are
//! logged). A table at its bound first drops what it no longer needs,
//! then forgets idle sources' buckets, so a flood of spoofed or hopping
//! sources cannot grow it. Refusals are for the caller to log, through
//! the event log's per-source summaries (`EventLog::event_from`).
//!
//! No I/O: time is an argument.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Parts the table is split into, each behind its own lock: 16 keeps
/// workers from queueing on one lock however many there are, and each
/// part's bound stays large enough to even out the hash.
const PARTS: usize = 16;

/// Sources remembered after their last unauthenticated connection
/// closed, beyond those the connection cap allows open: 16,384 at about
/// 80 bytes each is under 1.5 MiB, and covers a refill period's worth of
/// new sources at thousands of connections a second.
pub(crate) const IDLE_SOURCES: usize = 16_384;

/// Sign-ins a source may start a minute once its burst is spent: an
/// operator mistyping a password a few times is never slowed, while one
/// address can try at most 600 passwords an hour, and can lock at most two
/// operators (at the default five failures) a minute.
pub(crate) const SIGNINS_PER_MINUTE: u128 = 10;

/// Sign-ins a source may start at once: a team behind one NAT starting
/// its shift together.
pub(crate) const SIGNIN_BURST: u128 = 20;

/// A token in the bucket's units: nanotokens, so that refilling by
/// `elapsed nanoseconds x rate` is exact however often it runs.
const TOKEN: u128 = 1_000_000_000;

/// Where a connection comes from, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    /// The source of a peer address: IPv4 as it is (an IPv4-mapped IPv6
    /// address too), IPv6 cut to its /64.
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                Source(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The limits the table applies, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceLimits {
    /// Unauthenticated connections one source may have open.
    pub unauthenticated: usize,
    /// Tokens a source's bucket gains per second; 0 turns buckets off.
    pub per_sec: usize,
    /// A bucket's size: how many connections a source may open at once.
    pub burst: usize,
    /// Most sources the table holds.
    pub tracked: usize,
}

/// Why a source's connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceRefusal {
    /// The source has this many unauthenticated connections open already.
    Unauthenticated(usize),
    /// The source's bucket is empty: it opens new connections faster than
    /// this many a second, past its burst.
    Rate(usize),
    /// The table is full of sources with connections open.
    TableFull,
    /// The source's sign-in bucket is empty ([`SIGNINS_PER_MINUTE`]).
    SignIns,
}

impl SourceRefusal {
    /// A label for counters.
    pub fn label(self) -> &'static str {
        match self {
            SourceRefusal::Unauthenticated(_) => "unauthenticated",
            SourceRefusal::Rate(_) => "rate",
            SourceRefusal::TableFull => "table_full",
            SourceRefusal::SignIns => "sign_ins",
        }
    }

    /// Why, for the event log.
    pub fn describe(self) -> String {
        match self {
            SourceRefusal::Unauthenticated(n) => {
                format!("it has {n} connections open that have not proven a key")
            }
            SourceRefusal::Rate(n) => format!("it opens new connections faster than {n} a second"),
            SourceRefusal::TableFull => "too many sources have connections open".to_string(),
            SourceRefusal::SignIns => format!("it starts sign-ins faster than {SIGNINS_PER_MINUTE} a minute"),
        }
    }
}

/// A refused connection: whose, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Whose connection.
    pub source: Source,
    /// Why.
    pub why: SourceRefusal,
}

impl Refused {
    /// The event line.
    pub fn event_text(&self) -> String {
        format!("Connection refused from {}: {}", self.source, self.why.describe())
    }
}

/// One source's state.
#[derive(Debug)]
struct Entry {
    /// Its unauthenticated connections open now.
    open: usize,
    /// Its bucket, in [`TOKEN`] units.
    tokens: u128,
    /// Its sign-in bucket, in [`TOKEN`] units.
    signins: u128,
    /// When `tokens` and `signins` were last brought up to date.
    refilled: Instant,
}

impl Entry {
    fn new(now: Instant, limits: &SourceLimits) -> Entry {
        Entry {
            open: 0,
            tokens: capacity(limits),
            signins: SIGNIN_BURST * TOKEN,
            refilled: now,
        }
    }

    /// The bucket as it stands at `now`, without changing it.
    fn tokens_at(&self, now: Instant, limits: &SourceLimits) -> u128 {
        let gained = now.saturating_duration_since(self.refilled).as_nanos() * limits.per_sec as u128;
        self.tokens.saturating_add(gained).min(capacity(limits))
    }

    /// The sign-in bucket as it stands at `now`.
    fn signins_at(&self, now: Instant) -> u128 {
        let gained = now.saturating_duration_since(self.refilled).as_nanos() * SIGNINS_PER_MINUTE / 60;
        self.signins.saturating_add(gained).min(SIGNIN_BURST * TOKEN)
    }

    fn refill(&mut self, now: Instant, limits: &SourceLimits) {
        self.tokens = self.tokens_at(now, limits);
        self.signins = self.signins_at(now);
        self.refilled = now;
    }

    /// Nothing left to remember: no connection open and a full bucket (a
    /// new entry would start the same).
    fn idle(&self, now: Instant, limits: &SourceLimits) -> bool {
        self.open == 0
            && self.tokens_at(now, limits) >= capacity(limits)
            && self.signins_at(now) >= SIGNIN_BURST * TOKEN
    }
}

fn capacity(limits: &SourceLimits) -> u128 {
    limits.burst as u128 * TOKEN
}

/// One locked part of the table.
struct Part {
    map: HashMap<Source, Entry>,
    limits: SourceLimits,
}

impl Part {
    /// Most entries this part holds: twice its even share, so an uneven
    /// hash does not refuse a source while other parts have room.
    fn bound(&self) -> usize {
        (self.limits.tracked.div_ceil(PARTS) * 2).max(1)
    }

    /// Makes room for one more entry: drops idle entries and, if that
    /// freed less than an eighth, every entry without an open connection
    /// (their buckets start full again). Each pass leaves an eighth free,
    /// so passes are at least bound/8 insertions apart: O(1) per
    /// connection on average. False if every entry has a connection open.
    fn make_room(&mut self, now: Instant) -> bool {
        let bound = self.bound();
        let limits = self.limits;
        self.map.retain(|_, e| !e.idle(now, &limits));
        if self.map.len() > bound - bound / 8 {
            self.map.retain(|_, e| e.open > 0);
        }
        self.map.len() < bound
    }
}

impl Part {
    /// `source`'s entry, brought up to `now`: made if need be, room made
    /// first at the bound, or the table is full.
    fn entry_at(&mut self, source: Source, now: Instant) -> Result<&mut Entry, Refused> {
        if !self.map.contains_key(&source) && self.map.len() >= self.bound() && !self.make_room(now) {
            return Err(Refused {
                source,
                why: SourceRefusal::TableFull,
            });
        }
        let limits = self.limits;
        let entry = self.map.entry(source).or_insert_with(|| Entry::new(now, &limits));
        entry.refill(now, &limits);
        Ok(entry)
    }
}

/// The per-source table, shared by every worker.
pub(crate) struct Sources {
    parts: Vec<Mutex<Part>>,
    /// Keyed per process, so no one can aim sources at one part.
    hasher: RandomState,
}

impl Sources {
    /// An empty table with these limits.
    pub fn new(limits: SourceLimits) -> Sources {
        let parts = (0..PARTS)
            .map(|_| {
                Mutex::new(Part {
                    map: HashMap::new(),
                    limits,
                })
            })
            .collect();
        Sources {
            parts,
            hasher: RandomState::new(),
        }
    }

    fn part(&self, source: Source) -> MutexGuard<'_, Part> {
        let index = (self.hasher.hash_one(source) % PARTS as u64) as usize;
        lock(&self.parts[index])
    }

    /// Applies new limits (a reload). Connections already open stay; a
    /// source over a lowered limit is refused until it is under it.
    pub fn set_limits(&self, limits: SourceLimits) {
        for part in &self.parts {
            lock(part).limits = limits;
        }
    }

    /// Counts a new connection from `ip` that has not proven a key: takes
    /// a place in its source's count and a token from its bucket, or
    /// refuses it. The place is given back when the ticket is dropped
    /// (the connection closed) or proven.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Unauthenticated, Refused> {
        let source = Source::of(ip);
        let mut part = self.part(source);
        let limits = part.limits;
        let entry = part.entry_at(source, now)?;
        if entry.open >= limits.unauthenticated {
            return Err(Refused {
                source,
                why: SourceRefusal::Unauthenticated(entry.open),
            });
        }
        if limits.per_sec > 0 && entry.tokens < TOKEN {
            return Err(Refused {
                source,
                why: SourceRefusal::Rate(limits.per_sec),
            });
        }
        if limits.per_sec > 0 {
            entry.tokens -= TOKEN;
        }
        entry.open += 1;
        Ok(Unauthenticated {
            sources: Arc::clone(self),
            source,
            proven: false,
        })
    }

    /// Takes one sign-in from `ip`'s source's bucket ([`SIGNIN_BURST`],
    /// then [`SIGNINS_PER_MINUTE`]), or refuses it. The entry is made if
    /// need be, under the same bound as [`Sources::admit`]'s.
    pub fn take_signin(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let source = Source::of(ip);
        let mut part = self.part(source);
        let entry = part.entry_at(source, now)?;
        if entry.signins < TOKEN {
            return Err(Refused {
                source,
                why: SourceRefusal::SignIns,
            });
        }
        entry.signins -= TOKEN;
        Ok(())
    }

    /// Gives back a connection's place and, if it proved a key, its token.
    fn release(&self, source: Source, proven: bool) {
        let mut part = self.part(source);
        let limits = part.limits;
        if let Some(e) = part.map.get_mut(&source) {
            e.open = e.open.saturating_sub(1);
            if proven && limits.per_sec > 0 {
                e.tokens = (e.tokens + TOKEN).min(capacity(&limits));
            }
        }
    }

    /// Drops the entries with nothing left to remember, in parts `which`
    /// of `of` (each worker sweeps its own share, once a second), so the
    /// table shrinks back after a flood without waiting to be full.
    pub fn sweep(&self, now: Instant, which: usize, of: usize) {
        for part in self.parts.iter().skip(which).step_by(of.max(1)) {
            let mut part = lock(part);
            let limits = part.limits;
            part.map.retain(|_, e| !e.idle(now, &limits));
        }
    }

    /// Unauthenticated connections open from `ip`'s source.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        let source = Source::of(ip);
        self.part(source).map.get(&source).map_or(0, |e| e.open)
    }

    /// Sources in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| lock(p).map.len()).sum()
    }
}

fn lock(part: &Mutex<Part>) -> MutexGuard<'_, Part> {
    // Poisoned only if a panic hit mid-update of plain counters; they are
    // still usable.
    part.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's place in its source's count of unauthenticated
/// connections. Dropping it (the connection closed) gives the place back;
/// [`Unauthenticated::proven`] gives back its token too.
pub(crate) struct Unauthenticated {
    sources: Arc<Sources>,
    source: Source,
    /// Set by [`Unauthenticated::proven`], so the drop refunds the token.
    proven: bool,
}

impl Unauthenticated {
    /// The connection proved a key: it no longer counts against its
    /// source, and its token goes back to the bucket.
    pub fn proven(mut self) {
        self.proven = true;
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.sources.release(self.source, self.proven);
    }
}

#[cfg(test)]
mod tests;
