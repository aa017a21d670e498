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
//! sources cannot grow it. Each source's refusals are logged once per
//! [`LOG_WINDOW`] and summed when the window closes; at most
//! [`LOGGED_PER_PART`] sources per part are named per window, the rest
//! are summed as "other sources", so no flood of sources floods the log.
//!
//! No I/O: time is an argument.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Parts the table is split into, each behind its own lock: 16 keeps
/// workers from queueing on one lock however many there are, and each
/// part's bound stays large enough to even out the hash.
const PARTS: usize = 16;

/// Sources remembered after their last unauthenticated connection
/// closed, beyond those the connection cap allows open: 16,384 at about
/// 100 bytes each is under 2 MiB, and covers a refill period's worth of
/// new sources at thousands of connections a second.
pub(crate) const IDLE_SOURCES: usize = 16_384;

/// A source's refusals are logged once per window: the first at once,
/// the rest as one count when the window closes. 10 s keeps a flood to a
/// few lines a minute per source and still tells an operator within
/// seconds.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Sources named in the log per part per window (16 parts: 64 lines per
/// window at most); refusals from the rest are summed as "other sources".
pub(crate) const LOGGED_PER_PART: usize = 4;

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
}

impl SourceRefusal {
    /// A label for counters.
    pub fn label(self) -> &'static str {
        match self {
            SourceRefusal::Unauthenticated(_) => "unauthenticated",
            SourceRefusal::Rate(_) => "rate",
            SourceRefusal::TableFull => "table_full",
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
        }
    }
}

/// A refused connection: why, and whether to log it now (the first of
/// its source's window) or only count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Whose connection.
    pub source: Source,
    /// Why.
    pub why: SourceRefusal,
    /// Log this one; later ones in the window are summed by
    /// [`Sources::sweep`].
    pub log: bool,
}

impl Refused {
    /// The event line for a logged refusal.
    pub fn event_text(&self) -> String {
        format!("Connection refused from {}: {}", self.source, self.why.describe())
    }
}

/// Refusals counted in a window that has closed, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefusalSummary {
    /// The source; `None` for the sources not named in their window.
    pub source: Option<Source>,
    /// Refusals not yet logged.
    pub refused: u64,
}

impl RefusalSummary {
    /// The event line.
    pub fn event_text(&self) -> String {
        let secs = LOG_WINDOW.as_secs();
        match self.source {
            Some(s) => format!("Connections refused from {s}: {} more in the last {secs} s", self.refused),
            None => format!("Connections refused from other sources: {} in the last {secs} s", self.refused),
        }
    }
}

/// One source's state.
#[derive(Debug)]
struct Entry {
    /// Its unauthenticated connections open now.
    open: usize,
    /// Its bucket, in [`TOKEN`] units.
    tokens: u128,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// When its current log window opened, if one is open.
    window: Option<Instant>,
    /// Refusals in that window after the first (which was logged).
    refused: u64,
}

impl Entry {
    fn new(now: Instant, limits: &SourceLimits) -> Entry {
        Entry {
            open: 0,
            tokens: capacity(limits),
            refilled: now,
            window: None,
            refused: 0,
        }
    }

    /// The bucket as it stands at `now`, without changing it.
    fn tokens_at(&self, now: Instant, limits: &SourceLimits) -> u128 {
        let gained = now.saturating_duration_since(self.refilled).as_nanos() * limits.per_sec as u128;
        self.tokens.saturating_add(gained).min(capacity(limits))
    }

    fn refill(&mut self, now: Instant, limits: &SourceLimits) {
        self.tokens = self.tokens_at(now, limits);
        self.refilled = now;
    }

    /// Nothing left to remember: no connection open, no refusal to log,
    /// a full bucket (a new entry would start the same).
    fn idle(&self, now: Instant, limits: &SourceLimits) -> bool {
        self.open == 0 && self.window.is_none() && self.tokens_at(now, limits) >= capacity(limits)
    }
}

fn capacity(limits: &SourceLimits) -> u128 {
    limits.burst as u128 * TOKEN
}

/// One locked part of the table.
struct Part {
    map: HashMap<Source, Entry>,
    limits: SourceLimits,
    /// When this part's log window opened, and how many sources it has
    /// named in it.
    log_window: Option<(Instant, usize)>,
    /// Refusals from sources not named (past [`LOGGED_PER_PART`], or
    /// forgotten with their count), for the "other sources" line.
    unnamed: u64,
}

impl Part {
    /// Most entries this part holds: twice its even share, so an uneven
    /// hash does not refuse a source while other parts have room.
    fn bound(&self) -> usize {
        (self.limits.tracked.div_ceil(PARTS) * 2).max(1)
    }

    /// Makes room for one more entry: drops idle entries and, if that
    /// freed less than an eighth, every entry without an open connection
    /// (their buckets start full again, their counts go to "other
    /// sources"). Each pass leaves an eighth free, so passes are at least
    /// bound/8 insertions apart: O(1) per connection on average. False if
    /// every entry has a connection open.
    fn make_room(&mut self, now: Instant) -> bool {
        let bound = self.bound();
        let limits = self.limits;
        self.map.retain(|_, e| !e.idle(now, &limits));
        if self.map.len() > bound - bound / 8 {
            let mut forgotten = 0;
            self.map.retain(|_, e| {
                let keep = e.open > 0;
                if !keep {
                    forgotten += e.refused;
                }
                keep
            });
            self.unnamed += forgotten;
        }
        self.map.len() < bound
    }

    /// Counts a refusal of `source` and says whether to log it: the
    /// first in its window is, if the part may still name a source.
    fn refuse(&mut self, source: Source, why: SourceRefusal, now: Instant) -> Refused {
        let quiet = Refused { source, why, log: false };
        if let Some(e) = self.map.get_mut(&source).filter(|e| e.window.is_some()) {
            e.refused += 1;
            return quiet;
        }
        if !self.name_in_window(now) {
            self.unnamed += 1;
            return quiet;
        }
        if let Some(e) = self.map.get_mut(&source) {
            e.window = Some(now);
        }
        Refused { source, why, log: true }
    }

    /// Whether one more source may be named in this part's window.
    fn name_in_window(&mut self, now: Instant) -> bool {
        let (opened, named) = match self.log_window {
            Some((opened, named)) if now.saturating_duration_since(opened) < LOG_WINDOW => (opened, named),
            _ => (now, 0),
        };
        let room = named < LOGGED_PER_PART;
        self.log_window = Some((opened, named + usize::from(room)));
        room
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
                    log_window: None,
                    unnamed: 0,
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
        if !part.map.contains_key(&source) && part.map.len() >= part.bound() && !part.make_room(now) {
            let log = part.name_in_window(now);
            if !log {
                part.unnamed += 1;
            }
            return Err(Refused {
                source,
                why: SourceRefusal::TableFull,
                log,
            });
        }
        let limits = part.limits;
        let entry = part.map.entry(source).or_insert_with(|| Entry::new(now, &limits));
        entry.refill(now, &limits);
        let refusal = if entry.open >= limits.unauthenticated {
            Some(SourceRefusal::Unauthenticated(entry.open))
        } else if limits.per_sec > 0 && entry.tokens < TOKEN {
            Some(SourceRefusal::Rate(limits.per_sec))
        } else {
            None
        };
        if let Some(why) = refusal {
            return Err(part.refuse(source, why, now));
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

    /// Closes the log windows that are over, returning one summary per
    /// source refused in them after its first refusal (and one for the
    /// sources not named), and drops what no longer needs remembering.
    /// Sweeps parts `which` of `of` (each worker sweeps its own share).
    pub fn sweep(&self, now: Instant, which: usize, of: usize) -> Vec<RefusalSummary> {
        let mut out = Vec::new();
        for part in self.parts.iter().skip(which).step_by(of.max(1)) {
            let mut part = lock(part);
            let limits = part.limits;
            let window_over = |opened: Instant| now.saturating_duration_since(opened) >= LOG_WINDOW;
            part.map.retain(|&source, e| {
                if e.window.is_some_and(window_over) {
                    if e.refused > 0 {
                        out.push(RefusalSummary {
                            source: Some(source),
                            refused: e.refused,
                        });
                    }
                    e.window = None;
                    e.refused = 0;
                }
                !e.idle(now, &limits)
            });
            if part.log_window.is_none_or(|(opened, _)| window_over(opened)) && part.unnamed > 0 {
                out.push(RefusalSummary {
                    source: None,
                    refused: std::mem::take(&mut part.unnamed),
                });
                part.log_window = None;
            }
        }
        // Summaries of "other sources" from several parts make one line.
        let unnamed: u64 = out.iter().filter(|s| s.source.is_none()).map(|s| s.refused).sum();
        out.retain(|s| s.source.is_some());
        if unnamed > 0 {
            out.push(RefusalSummary {
                source: None,
                refused: unnamed,
            });
        }
        out
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
