//! What a clustered gateway shares with the others through Redis, with no
//! I/O: the key layout, the records and messages as text, the cluster
//! view and the spreading rule, and the board between the workers and the
//! cluster's side thread (`gateway::cluster`). docs/CLUSTER.md describes
//! every key and message named here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use futures_channel::oneshot;

use crate::auth::KeyId;
use crate::http::{pct_decode, pct_encode};
use crate::proto::AgentSummary;

/// Prefix of every key and channel, so one Redis can hold other data.
pub(crate) const PREFIX: &str = "ringway:";

/// The set of gateway ids that ever joined.
pub(crate) fn gateways_key() -> String {
    format!("{PREFIX}gateways")
}

/// Gateway `id`'s lease (a string with a TTL): present while it lives.
pub(crate) fn lease_key(id: &str) -> String {
    format!("{PREFIX}lease:{id}")
}

/// The agents of key `kid`, cluster-wide: a hash, field = agent name.
pub(crate) fn agents_key(kid: KeyId) -> String {
    format!("{PREFIX}agents:{kid}")
}

/// The agents gateway `id` holds: a set of `<kid> <pct name>`, so a dead
/// gateway's records can be found and removed.
pub(crate) fn held_key(id: &str) -> String {
    format!("{PREFIX}held:{id}")
}

/// The cluster-wide count of registered agents, for `max_clients`.
pub(crate) fn licence_key() -> String {
    format!("{PREFIX}licence")
}

/// The agent keys names are pinned to, cluster-wide, under key `kid`: a
/// hash, field = agent name, percent-encoded.
pub(crate) fn pins_key(kid: KeyId) -> String {
    format!("{PREFIX}pins:{kid}")
}

/// The step of the last TOTP code an operator used, cluster-wide.
pub(crate) fn totp_key(operator: &str) -> String {
    format!("{PREFIX}totp:{}", pct_encode(operator))
}

/// The pub/sub channel gateway `id` listens on.
pub(crate) fn channel_of(id: &str) -> String {
    format!("{PREFIX}to:{id}")
}

/// An agent's name under its key: what is unique cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AgentKey {
    /// The key the agent proved.
    pub kid: KeyId,
    /// Its name.
    pub name: String,
}

impl AgentKey {
    /// The member of a `held:` set: `<kid> <pct name>`.
    pub fn member(&self) -> String {
        format!("{} {}", self.kid, pct_encode(&self.name))
    }

    /// Parses a `held:` member back.
    pub fn from_member(member: &str) -> Option<AgentKey> {
        let (kid, name) = member.split_once(' ')?;
        Some(AgentKey {
            kid: parse_kid(kid)?,
            name: pct_decode(name).filter(|n| crate::proto::valid_name(n))?,
        })
    }
}

/// A key id from its hex form.
pub(crate) fn parse_kid(text: &str) -> Option<KeyId> {
    let mut id = [0u8; 8];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(KeyId(id))
}

/// Largest record, lease or message read from Redis: anything longer is
/// not ours and is ignored.
pub(crate) const MAX_RECORD_BYTES: usize = 4096;

/// One agent's record in `agents:<kid>` (field: its name, percent-
/// encoded): `<gw> <reg> <at_ms> <summary JSON>`, so the Lua scripts can
/// read holder and registration without a JSON parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAgent {
    /// The gateway that holds its channel.
    pub gw: String,
    /// The registration, unique across the cluster (below 2^53, so Lua's
    /// numbers hold it): a newer one of the same name replaces it.
    pub reg: u64,
    /// When it registered, milliseconds since 1970, to tell the newer of
    /// two registrations after a split.
    pub at_ms: u64,
    /// What browse shows (its `last_poll` is the time of registration;
    /// browse puts the holder's lease renewal there).
    pub summary: AgentSummary,
}

/// Registration ids are below this, so Lua's doubles hold them exactly.
pub(crate) const REG_LIMIT: u64 = 1 << 53;

impl StoredAgent {
    /// The record as stored.
    pub fn encode(&self) -> String {
        // A struct of strings always encodes.
        let json = serde_json::to_string(&self.summary).unwrap_or_default();
        format!("{} {} {} {json}", self.gw, self.reg, self.at_ms)
    }

    /// A stored record, if it is one of ours and not oversized.
    pub fn decode(text: &[u8]) -> Option<StoredAgent> {
        if text.len() > MAX_RECORD_BYTES {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let mut it = text.splitn(4, ' ');
        let gw = it.next().filter(|g| crate::config::valid_cluster_id(g))?;
        let reg = it.next()?.parse().ok().filter(|r| *r < REG_LIMIT)?;
        let at_ms = it.next()?.parse().ok()?;
        let summary: AgentSummary = serde_json::from_str(it.next()?).ok()?;
        crate::proto::valid_name(&summary.name).then(|| StoredAgent {
            gw: gw.to_string(),
            reg,
            at_ms,
            summary,
        })
    }
}

/// An agent as the mirror holds it until the side thread has written it:
/// its registration and the record as stored, one string (a handful of
/// bytes more than Redis's copy), not the fields apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The registration.
    pub reg: u64,
    /// When it registered, ms since 1970.
    pub at_ms: u64,
    /// [`StoredAgent::encode`]'s text.
    pub record: Box<str>,
}

impl Held {
    /// What the mirror keeps of `stored`.
    pub fn of(stored: &StoredAgent) -> Held {
        Held {
            reg: stored.reg,
            at_ms: stored.at_ms,
            record: stored.encode().into_boxed_str(),
        }
    }
}

/// A gateway's lease value: `1 <agents> <sessions> <boot> <state>
/// <advertise>`, `<state>` being `serving` or `draining`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Agents it holds.
    pub agents: u64,
    /// Sessions it relays.
    pub sessions: u64,
    /// Its boot id, which plain-HTTP proofs sent to it are signed with:
    /// a `307` there carries it, saving the client a `stale_boot` round trip.
    pub boot: String,
    /// Whether it is moving its agents away and takes no new ones.
    pub draining: bool,
    /// Where controls and agents reach it.
    pub advertise: String,
}

impl Lease {
    /// The value as stored.
    pub fn encode(&self) -> String {
        let state = if self.draining { "draining" } else { "serving" };
        format!(
            "1 {} {} {} {state} {}",
            self.agents, self.sessions, self.boot, self.advertise
        )
    }

    /// Parses a lease value; `None` for anything else.
    pub fn decode(text: &[u8]) -> Option<Lease> {
        if text.len() > MAX_RECORD_BYTES {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let mut it = text.split(' ');
        if it.next()? != "1" {
            return None;
        }
        let agents = it.next()?.parse().ok()?;
        let sessions = it.next()?.parse().ok()?;
        let boot = it.next().filter(|b| crate::auth::BootId::parse(b).is_some())?;
        let draining = match it.next()? {
            "serving" => false,
            "draining" => true,
            _ => return None,
        };
        let advertise = it.next()?;
        (it.next().is_none() && crate::config::valid_advertise(advertise)).then(|| Lease {
            agents,
            sessions,
            boot: boot.to_string(),
            draining,
            advertise: advertise.to_string(),
        })
    }
}

/// A message on a gateway's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// `replace <kid> <reg> <by> <pct name>`: registration `reg` of the
    /// agent lost its name to a newer one on gateway `by`.
    Replace {
        /// The agent.
        agent: AgentKey,
        /// The registration replaced (the receiver's own).
        reg: u64,
        /// The gateway that holds the newer one.
        by: String,
    },
    /// `unpin <pct key name | -> <pct name>`: the administrator released
    /// the agent name's pin under that gateway key (every key: `-`) on
    /// another gateway; release it here too.
    Unpin {
        /// The gateway key's name, or `None` for every key.
        key: Option<String>,
        /// The agent name.
        name: String,
    },
}

impl Message {
    /// The message as published (the claim script writes `replace` in
    /// Lua, the same text).
    pub fn encode(&self) -> String {
        match self {
            Message::Replace { agent, reg, by } => {
                format!("replace {} {reg} {by} {}", agent.kid, pct_encode(&agent.name))
            }
            Message::Unpin { key, name } => format!(
                "unpin {} {}",
                key.as_deref().map_or("-".to_string(), pct_encode),
                pct_encode(name)
            ),
        }
    }

    /// Parses a message; `None` for one this version does not know.
    pub fn decode(text: &[u8]) -> Option<Message> {
        if text.len() > MAX_RECORD_BYTES {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let mut it = text.splitn(5, ' ');
        match it.next()? {
            "replace" => {
                let kid = parse_kid(it.next()?)?;
                let reg = it.next()?.parse().ok()?;
                let by = it.next()?;
                let name = pct_decode(it.next()?).filter(|n| crate::proto::valid_name(n))?;
                crate::config::valid_cluster_id(by).then(|| Message::Replace {
                    agent: AgentKey { kid, name },
                    reg,
                    by: by.to_string(),
                })
            }
            "unpin" => {
                let key = match it.next()? {
                    "-" => None,
                    k => Some(pct_decode(k).filter(|k| !k.is_empty() && k.len() <= 256)?),
                };
                let name = pct_decode(it.next()?).filter(|n| crate::proto::valid_name(n))?;
                it.next().is_none().then_some(Message::Unpin { key, name })
            }
            _ => None,
        }
    }
}

/// What this gateway knows of the cluster: the live gateways (their
/// leases, read every third of the lease time) and whether Redis answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// The live gateways, this one included once its lease is written.
    pub live: BTreeMap<String, Lease>,
    /// Agents sent to each gateway since the leases were read: their
    /// counts lag, so spreading adds what it sent itself.
    pub sent: HashMap<String, u64>,
    /// Agents this gateway decided to keep since then: registrations in
    /// flight are not in the licence count yet.
    pub kept: u64,
    /// Whether the last exchange with Redis worked.
    pub redis_up: bool,
    /// Why Redis is not usable, for 503s and the console.
    pub down_reason: String,
    /// When the leases were last read.
    pub read_at: Option<Instant>,
    /// Each live gateway's lease age when the leases were read, in ms.
    pub lease_age_ms: BTreeMap<String, u64>,
}

impl View {
    /// Gateway `id`'s lease, if it is live.
    pub fn lease_of(&self, id: &str) -> Option<&Lease> {
        self.live.get(id)
    }

    /// Where to send a new agent instead of admitting it here, if this
    /// gateway (`me`, holding `local` agents) would go above its share of
    /// the cluster plus `slack_percent`; counts the redirect in `sent`,
    /// or the agent kept in `kept`. `None`: admit it here.
    pub fn spread(&mut self, me: &str, local: u64, slack_percent: u64) -> Option<String> {
        if !self.redis_up || self.live.len() < 2 {
            return None;
        }
        let at_read = self.live.get(me)?.agents;
        if self.live.get(me).is_some_and(|l| l.draining) {
            // Draining: every new agent goes to the least-loaded other.
            let target = self.least_loaded(me)?.0;
            *self.sent.entry(target.clone()).or_insert(0) += 1;
            return Some(target);
        }
        // Registrations kept but not admitted yet count as held.
        let mine = local.max(at_read + self.kept);
        let target = self.spread_target(me, mine, slack_percent);
        match &target {
            Some(t) => *self.sent.entry(t.clone()).or_insert(0) += 1,
            None => self.kept += 1,
        }
        target
    }

    /// [`View::spread`]'s rule, counting nothing.
    fn spread_target(&self, me: &str, mine: u64, slack_percent: u64) -> Option<String> {
        let count = |id: &str, lease: &Lease| -> u64 {
            if id == me {
                mine
            } else {
                lease.agents + self.sent.get(id).copied().unwrap_or(0)
            }
        };
        let total: u64 = self.live.iter().map(|(id, l)| count(id, l)).sum::<u64>() + 1;
        let n = self.live.len() as u64;
        // ceil(total / n * (100 + slack) / 100), in integers.
        let ceiling = (total * (100 + slack_percent)).div_ceil(n * 100);
        if mine < ceiling {
            return None;
        }
        let (target, load) = self.least_loaded(me)?;
        (load + 1 < mine).then_some(target)
    }

    /// The live gateway other than `me`, not draining, with the fewest
    /// agents (counting those sent to it since the leases were read).
    fn least_loaded(&self, me: &str) -> Option<(String, u64)> {
        self.live
            .iter()
            .filter(|(id, l)| id.as_str() != me && !l.draining)
            .map(|(id, l)| (id.clone(), l.agents + self.sent.get(id).copied().unwrap_or(0)))
            .min_by_key(|(id, load)| (*load, id.clone()))
    }
}

/// Why the cluster could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// Redis is down or refused: the reason, for the 503.
    Redis(String),
    /// The side thread's queue is full or it did not answer in time.
    Busy,
}

impl Unavailable {
    /// The reason as a 503 gives it.
    pub fn reason(&self) -> String {
        match self {
            Unavailable::Redis(why) => format!("the cluster directory is unavailable: {why}"),
            Unavailable::Busy => "the cluster directory did not answer in time".into(),
        }
    }
}

/// The answer to a claim: may this registration have its name cluster-wide?
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// Yes; the name was free, or this gateway's, or another's that is
    /// now told to drop it.
    Yes,
    /// No: the cluster holds `max_clients` agents.
    Licence,
}

/// A name's pin, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PinVerdict {
    /// It was free and is now pinned to this agent key.
    New,
    /// It is pinned to this agent key already.
    Same,
    /// It is pinned to another machine's agent key.
    Taken,
}

/// Where an agent is, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Located {
    /// On live gateway `gw`, reached at `advertise`.
    At {
        /// Its id.
        gw: String,
        /// Where it is reached.
        advertise: String,
        /// Its boot id.
        boot: String,
    },
    /// No live gateway holds it.
    Nowhere,
}

/// A worker's question for the side thread.
pub(crate) enum Request {
    /// Claim `agent`'s name for registration `stored` here, within the
    /// cluster's licence of `max_clients` (0: none).
    Claim {
        /// The agent.
        agent: AgentKey,
        /// Its record.
        held: Held,
        /// The licence.
        max_clients: usize,
        /// The answer.
        reply: oneshot::Sender<Result<Claimed, Unavailable>>,
    },
    /// Where is `agent`?
    Locate {
        /// The agent.
        agent: AgentKey,
        /// The answer.
        reply: oneshot::Sender<Result<Located, Unavailable>>,
    },
    /// Pin `agent`'s name to agent key `key` (its text) cluster-wide if
    /// it is free, or say whose it is.
    Pin {
        /// The agent.
        agent: AgentKey,
        /// The agent key, as its text.
        key: String,
        /// The answer.
        reply: oneshot::Sender<Result<PinVerdict, Unavailable>>,
    },
    /// Take back the pin of `agent`'s name if it is still to `key`.
    Unpin {
        /// The agent.
        agent: AgentKey,
        /// The agent key, as its text.
        key: String,
        /// The answer.
        reply: oneshot::Sender<Result<(), Unavailable>>,
    },
    /// Accept TOTP step `step` of `operator` cluster-wide: `true` if no
    /// gateway accepted it (or a later one) before.
    Step {
        /// The operator.
        operator: String,
        /// The step of the code it gave.
        step: u64,
        /// The answer.
        reply: oneshot::Sender<Result<bool, Unavailable>>,
    },
    /// The agents of `kid` held by other live gateways.
    List {
        /// The key.
        kid: KeyId,
        /// The answer.
        reply: oneshot::Sender<Result<Vec<AgentSummary>, Unavailable>>,
    },
}

/// Requests queued to the side thread at most; a worker whose request
/// does not fit gets [`Unavailable::Busy`] at once. Each is one Redis
/// round trip, so this is well under a second of work.
pub(crate) const MAX_REQUESTS: usize = 4096;

/// Requests one key may have queued: a tenant registering a storm cannot
/// take the whole queue from the others.
pub(crate) const MAX_REQUESTS_PER_KEY: usize = MAX_REQUESTS / 4;

/// The agents this gateway holds, as the side thread mirrors them to
/// Redis: registration id and record per agent, and the names whose
/// record changed since the side thread last wrote them.
#[derive(Default)]
pub(crate) struct Mirror {
    /// The agents held here now.
    pub agents: HashMap<AgentKey, Held>,
    /// Agents added or removed since the last write.
    pub dirty: HashSet<AgentKey>,
    /// Questions waiting for the side thread.
    pub requests: VecDeque<Request>,
    /// Queued requests per key.
    pub queued_per_key: HashMap<KeyId, usize>,
    /// Asked to stop.
    pub stop: bool,
    /// The subscriber (re)subscribed: reconcile everything.
    pub resync: bool,
}

impl Mirror {
    /// Queues a request unless the queue or its key's share is full.
    pub fn push(&mut self, kid: KeyId, request: Request) -> Result<(), Request> {
        let mine = self.queued_per_key.get(&kid).copied().unwrap_or(0);
        if self.requests.len() >= MAX_REQUESTS || mine >= MAX_REQUESTS_PER_KEY {
            return Err(request);
        }
        *self.queued_per_key.entry(kid).or_insert(0) += 1;
        self.requests.push_back(request);
        Ok(())
    }

    /// Takes every queued request.
    pub fn take_requests(&mut self) -> Vec<Request> {
        self.queued_per_key.clear();
        self.requests.drain(..).collect()
    }
}

/// The mirror and the signal that wakes the side thread, shared by the
/// workers and it.
#[derive(Default)]
pub(crate) struct Board {
    mirror: Mutex<Mirror>,
    wake: Condvar,
}

impl Board {
    /// The mirror, locked.
    pub fn lock(&self) -> MutexGuard<'_, Mirror> {
        // Poisoned only by a panic between two plain map updates.
        self.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the side thread.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits, at most `timeout`, for a wake-up.
    pub fn wait<'a>(&self, guard: MutexGuard<'a, Mirror>, timeout: std::time::Duration) -> MutexGuard<'a, Mirror> {
        match self.wake.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// Records that this gateway holds `agent` as `stored`, and returns
    /// the share whose drop says it no longer does.
    pub fn hold(self: &Arc<Self>, agent: AgentKey, held: Held) -> MirrorShare {
        let reg = held.reg;
        {
            let mut m = self.lock();
            m.agents.insert(agent.clone(), held);
            m.dirty.insert(agent.clone());
        }
        self.wake();
        MirrorShare {
            board: self.clone(),
            agent,
            reg,
        }
    }
}

/// An agent record's place in the mirror: dropped with the record (on
/// every path a record leaves the directory), it removes the agent from
/// the mirror unless a newer registration of the name took its place.
pub(crate) struct MirrorShare {
    board: Arc<Board>,
    agent: AgentKey,
    reg: u64,
}

impl MirrorShare {
    /// The registration this share is for.
    pub fn reg(&self) -> u64 {
        self.reg
    }
}

impl Drop for MirrorShare {
    fn drop(&mut self) {
        let removed = {
            let mut m = self.board.lock();
            if m.agents.get(&self.agent).is_some_and(|s| s.reg == self.reg) {
                m.agents.remove(&self.agent);
                m.dirty.insert(self.agent.clone());
                true
            } else {
                false
            }
        };
        if removed {
            self.board.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "00112233445566778899aabbccddeeff";

    fn lease(agents: u64) -> Lease {
        Lease {
            agents,
            sessions: 0,
            boot: BOOT.into(),
            draining: false,
            advertise: "http://127.0.0.1:1".into(),
        }
    }

    fn view(loads: &[(&str, u64)]) -> View {
        View {
            live: loads.iter().map(|(id, n)| (id.to_string(), lease(*n))).collect(),
            redis_up: true,
            ..View::default()
        }
    }

    fn summary(name: &str) -> AgentSummary {
        AgentSummary {
            name: name.into(),
            external_addr: "127.0.0.1:5".into(),
            connected_since: "2026-12-03T00:00:00Z".into(),
            last_poll: "2026-12-03T00:00:00Z".into(),
            mac: String::new(),
            local_ip: String::new(),
            os: String::new(),
            gateway: None,
        }
    }

    #[test]
    fn records_leases_and_messages_read_back() {
        let s = StoredAgent {
            gw: "gw1".into(),
            reg: 7,
            at_ms: 1,
            summary: summary("pc 1/ü"),
        };
        assert!(s.encode().starts_with("gw1 7 1 {"), "{}", s.encode());
        assert_eq!(StoredAgent::decode(s.encode().as_bytes()), Some(s));
        assert_eq!(StoredAgent::decode(b"gw1 9007199254740992 1 {}"), None);
        assert_eq!(StoredAgent::decode(&vec![b' '; MAX_RECORD_BYTES + 1]), None);
        let l = lease(3);
        assert_eq!(l.encode(), format!("1 3 0 {BOOT} serving http://127.0.0.1:1"));
        assert_eq!(Lease::decode(l.encode().as_bytes()), Some(l.clone()));
        let d = Lease { draining: true, ..l };
        assert_eq!(Lease::decode(d.encode().as_bytes()), Some(d));
        for bad in [
            format!("2 3 0 {BOOT} serving http://a:1"),
            format!("1 3 0 {BOOT} serving ftp://a:1"),
            format!("1 3 0 {BOOT} resting http://a:1"),
            format!("1 3 0 {BOOT} serving http://a:1 extra"),
            "1 3 0 nothex serving http://a:1".to_string(),
        ] {
            assert_eq!(Lease::decode(bad.as_bytes()), None, "{bad}");
        }
        let m = Message::Replace {
            agent: AgentKey {
                kid: KeyId([1; 8]),
                name: "pc 1".into(),
            },
            reg: 9,
            by: "gw2".into(),
        };
        assert_eq!(m.encode(), "replace 0101010101010101 9 gw2 pc%201");
        assert_eq!(Message::decode(m.encode().as_bytes()), Some(m));
        assert_eq!(Message::decode(b"replace 01 9 gw2 pc"), None);
        assert_eq!(Message::decode(b"replace 0101010101010101 9 g:w pc"), None);
        assert_eq!(Message::decode(b"hello"), None);
        for m in [
            Message::Unpin {
                key: Some("main key".into()),
                name: "pc 1".into(),
            },
            Message::Unpin {
                key: None,
                name: "pc1".into(),
            },
        ] {
            assert_eq!(Message::decode(m.encode().as_bytes()), Some(m));
        }
        assert_eq!(
            Message::encode(&Message::Unpin {
                key: None,
                name: "a b".into()
            }),
            "unpin - a%20b"
        );
        assert_eq!(Message::decode(b"unpin - "), None);
        assert_eq!(Message::decode(b"unpin - a b"), None);
        let k = AgentKey {
            kid: KeyId([2; 8]),
            name: "a b".into(),
        };
        assert_eq!(AgentKey::from_member(&k.member()), Some(k));
        assert_eq!(AgentKey::from_member("zz a"), None);
    }

    #[test]
    fn spreading_keeps_every_gateway_within_its_share_and_slack() {
        // 300 agents all dial gw1: what it keeps and where it sends the
        // rest, the others admitting what they are sent.
        let mut v = view(&[("gw1", 0), ("gw2", 0), ("gw3", 0)]);
        let mut held: BTreeMap<&str, u64> = [("gw1", 0), ("gw2", 0), ("gw3", 0)].into();
        for i in 0..300 {
            // Half of them arrive before any is admitted: the licence
            // count lags what was decided.
            let mine = if i < 150 { 0 } else { held["gw1"] };
            match v.spread("gw1", mine, 20) {
                None => *held.get_mut("gw1").expect("gw1") += 1,
                Some(to) => *held.get_mut(to.as_str()).expect("known") += 1,
            }
        }
        assert_eq!(held.values().sum::<u64>(), 300);
        for (id, n) in &held {
            assert!((80..=120).contains(n), "{id} holds {n}: {held:?}");
        }
    }

    #[test]
    fn no_spreading_alone_without_redis_or_towards_a_busier_gateway() {
        assert_eq!(view(&[("gw1", 0)]).spread("gw1", 50, 0), None);
        let mut down = view(&[("gw1", 0), ("gw2", 0)]);
        down.redis_up = false;
        assert_eq!(down.spread("gw1", 50, 0), None);
        // Before its own lease is read, a gateway does not know its share.
        assert_eq!(view(&[("gw2", 0), ("gw3", 0)]).spread("gw1", 50, 0), None);
        assert_eq!(view(&[("gw1", 0), ("gw2", 50)]).spread("gw1", 50, 0), None);
        assert_eq!(
            view(&[("gw1", 0), ("gw2", 10)]).spread("gw1", 50, 20),
            Some("gw2".into())
        );
    }

    #[test]
    fn a_draining_gateway_sends_every_agent_away_and_gets_none() {
        let mut v = view(&[("gw1", 5), ("gw2", 9), ("gw3", 7)]);
        if let Some(l) = v.live.get_mut("gw1") {
            l.draining = true;
        }
        assert_eq!(v.spread("gw1", 5, 20), Some("gw3".into()));
        assert_eq!(v.spread("gw1", 5, 20), Some("gw3".into()));
        assert_eq!(
            v.spread("gw1", 5, 20),
            Some("gw2".into()),
            "gw3 has 9 counting the two sent"
        );
        // gw2 and gw3 never pick the draining gw1, however light.
        let mut v = view(&[("gw1", 0), ("gw2", 90), ("gw3", 0)]);
        if let Some(l) = v.live.get_mut("gw1") {
            l.draining = true;
        }
        assert_eq!(v.spread("gw2", 90, 20), Some("gw3".into()));
    }

    #[test]
    fn a_share_leaves_the_mirror_only_if_no_newer_registration_took_the_name() {
        let board = Arc::new(Board::default());
        let agent = AgentKey {
            kid: KeyId([3; 8]),
            name: "pc1".into(),
        };
        let stored = |reg| StoredAgent {
            gw: "gw1".into(),
            reg,
            at_ms: reg,
            summary: summary("pc1"),
        };
        let old = board.hold(agent.clone(), Held::of(&stored(1)));
        let new = board.hold(agent.clone(), Held::of(&stored(2)));
        board.lock().dirty.clear();
        drop(old);
        assert_eq!(board.lock().agents.get(&agent).map(|s| s.reg), Some(2));
        assert!(board.lock().dirty.is_empty());
        drop(new);
        assert!(board.lock().agents.is_empty());
        assert!(board.lock().dirty.contains(&agent));
    }

    #[test]
    fn one_key_cannot_fill_the_request_queue() {
        let mut m = Mirror::default();
        let ask = |kid: KeyId| {
            let (reply, _) = oneshot::channel();
            Request::List { kid, reply }
        };
        for _ in 0..MAX_REQUESTS_PER_KEY {
            assert!(m.push(KeyId([1; 8]), ask(KeyId([1; 8]))).is_ok());
        }
        assert!(m.push(KeyId([1; 8]), ask(KeyId([1; 8]))).is_err());
        assert!(m.push(KeyId([2; 8]), ask(KeyId([2; 8]))).is_ok());
        assert_eq!(m.take_requests().len(), MAX_REQUESTS_PER_KEY + 1);
        assert!(m.push(KeyId([1; 8]), ask(KeyId([1; 8]))).is_ok());
    }
}
