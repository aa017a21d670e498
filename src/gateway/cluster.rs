//! The cluster's side threads: one talks to Redis for the workers (claims,
//! lookups, lists, the mirror of this gateway's agents, its lease and the
//! view of the others), one listens on this gateway's pub/sub channel.
//! The workers never wait on Redis for an agent of their own: they queue
//! a request on the board (`core::cluster`) and await its answer with a
//! deadline, or read the view under a short lock. docs/CLUSTER.md has the
//! key layout, the scripts' rules and every message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_channel::oneshot;
use redis::{Connection, RedisResult, Script};

use super::core::cluster::{
    AgentKey, Board, Claimed, Held, Lease, Located, Message, MirrorShare, PinVerdict, REG_LIMIT, Request, StoredAgent,
    Unavailable, View, agents_key, channel_of, gateways_key, held_key, lease_key, licence_key, pins_key, totp_key,
};
use super::core::directory::owner_of;
use super::core::handoff::ShardMsg;
use crate::auth::{KeyId, new_nonce};
use crate::config::{ClusterConfig, redacted_url};
use crate::eventlog::EventLog;
use crate::http::pct_encode;
use crate::proto::AgentSummary;
use crate::timefmt::rfc3339;

/// How long a worker waits for the side thread's answer. A Redis round
/// trip is well under a millisecond on a LAN; a second means Redis or the
/// link is in trouble, and the client gets a 503 (or, registering, is
/// admitted on this gateway's own licence) rather than a hang.
pub(crate) const CLUSTER_TIMEOUT: Duration = Duration::from_secs(1);

/// Deadline of each Redis connect, read and write.
const REDIS_IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between two attempts to reach Redis while it is down.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// Scripts sent per pipeline when many agents are written at once (a
/// reconcile after Redis came back): one round trip per this many.
const PIPELINE_CHUNK: usize = 256;

/// Members a burial script takes from a dead gateway's set per call, so
/// no single script holds Redis for long.
const BURY_CHUNK: usize = 1000;

/// Gateway ids read from the set at most: more are not ours.
const MAX_GATEWAYS: usize = 1000;

/// Claims `agent`'s name for a registration (see docs/CLUSTER.md).
/// KEYS: agents:<kid>, held:<me>, licence. ARGV: field, record, me, reg,
/// at_ms, max, mode (claim | hold | republish), member, prefix, kid.
const CLAIM: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local gw, reg, at = string.match(old, '^(%S+) (%d+) (%d+) ')
  if gw == ARGV[3] and reg == ARGV[4] then return {'same'} end
  if gw and gw ~= ARGV[3] then
    local alive = redis.call('EXISTS', ARGV[9] .. 'lease:' .. gw) == 1
    if alive and ARGV[7] == 'republish' and tonumber(at) > tonumber(ARGV[5]) then
      return {'lost', gw}
    end
    redis.call('SREM', ARGV[9] .. 'held:' .. gw, ARGV[8])
    if alive then
      redis.call('PUBLISH', ARGV[9] .. 'to:' .. gw,
        'replace ' .. ARGV[10] .. ' ' .. reg .. ' ' .. ARGV[3] .. ' ' .. ARGV[1])
    end
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[8])
  return {'replaced', gw or ''}
end
local max = tonumber(ARGV[6])
if ARGV[7] == 'claim' and max > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= max then
  return {'licence'}
end
redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[8])
return {'new'}
";

/// Releases an agent this gateway held, if its record is still ours.
/// KEYS: agents:<kid>, held:<me>, licence. ARGV: field, me, member, reg
/// (empty: any registration of ours).
const RELEASE: &str = r"
redis.call('SREM', KEYS[2], ARGV[3])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local gw, reg = string.match(old, '^(%S+) (%d+) ')
if gw == ARGV[2] and (ARGV[4] == '' or reg == ARGV[4]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
  return 1
end
return 0
";

/// Removes up to ARGV[3] records of dead gateway ARGV[1] (unless its
/// lease came back); returns how many members its set still has, or -1
/// when it is alive. KEYS: held:<dead>, licence. ARGV: dead, prefix, chunk.
const BURY: &str = r"
if redis.call('EXISTS', ARGV[2] .. 'lease:' .. ARGV[1]) == 1 then return -1 end
local members = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
for _, m in ipairs(members) do
  local kid, field = string.match(m, '^(%S+) (%S+)$')
  if kid then
    local hk = ARGV[2] .. 'agents:' .. kid
    local old = redis.call('HGET', hk, field)
    if old and string.match(old, '^(%S+) ') == ARGV[1] then
      redis.call('HDEL', hk, field)
      if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
    end
  end
end
return redis.call('SCARD', KEYS[1])
";

/// Pins a name cluster-wide if it is free. KEYS: pins:<kid>. ARGV: pct
/// name, agent key. Returns new, same or taken.
const PIN: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 'new'
end
if cur == ARGV[2] then return 'same' end
return 'taken'
";

/// Takes a pin back if it is still to this agent key. KEYS: pins:<kid>.
/// ARGV: pct name, agent key.
const UNPIN: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// Accepts a TOTP step once cluster-wide. KEYS: totp:<operator>. ARGV:
/// step, seconds to keep it (past the codes' window).
const STEP: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// How long a used TOTP step is remembered in Redis: well past the
/// window in which a code is accepted (a step either side of 30 s).
const STEP_MEMORY_SECS: u64 = 300;

/// What the cluster counts, for /metrics.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounts {
    /// Redis commands and scripts sent.
    pub redis_ops: AtomicU64,
    /// Agents sent to a less-loaded gateway at registration.
    pub agent_redirects: AtomicU64,
    /// Controls sent to the gateway holding their agent.
    pub control_redirects: AtomicU64,
    /// Local agents dropped because another gateway has a newer
    /// registration of their name.
    pub replaced_elsewhere: AtomicU64,
    /// Times Redis was lost.
    pub redis_failures: AtomicU64,
    /// Sessions relayed here now, for the lease.
    pub sessions: AtomicU64,
    /// Agents told to move away by a drain.
    pub drained: AtomicU64,
    /// Controls' connects relayed to the gateway holding their agent.
    pub control_relays: AtomicU64,
}

/// A clustered gateway's link to the others.
pub(crate) struct Cluster {
    /// This gateway's id.
    pub id: String,
    /// Where it is reached.
    pub advertise: String,
    config: ClusterConfig,
    /// The agents held here and the workers' questions.
    pub board: Arc<Board>,
    /// The live gateways and Redis's state.
    pub view: Mutex<View>,
    /// Counters for /metrics.
    pub counts: ClusterCounts,
    inboxes: Vec<async_channel::Sender<ShardMsg>>,
    events: EventLog,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// This run's boot id, in the lease.
    boot: String,
    /// `ringway drain`: move the agents away, take no new ones.
    draining: AtomicBool,
    /// The drain's pace: agents to move per second (set when it starts).
    drain_rate: AtomicU64,
    /// Releases a name pin in this gateway's own store (set once the
    /// store exists), for `unpin` messages from the others.
    forget_hook: std::sync::OnceLock<ForgetHook>,
    /// With `cross = "relay"`: how this gateway trusts the others'
    /// certificates (`ca_file`, else the system's roots).
    relay_tls: Option<Arc<rustls::ClientConfig>>,
}

/// What an `unpin` message does here: release `name` under the key named
/// (every key: `None`).
pub(crate) type ForgetHook = Box<dyn Fn(Option<&str>, &str) + Send + Sync>;

/// What one gateway's row of the console and `status --cluster` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterRow {
    /// Its id.
    pub id: String,
    /// Where it is reached.
    pub advertise: String,
    /// Agents it holds.
    pub agents: u64,
    /// Sessions it relays.
    pub sessions: u64,
    /// Whether it is draining (`ringway drain`).
    pub draining: bool,
    /// Seconds since it last renewed its lease, when the leases were read.
    pub lease_age_secs: f64,
    /// Whether it is this gateway.
    pub this: bool,
}

/// The cluster as this gateway sees it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterStatus {
    /// This gateway's id.
    pub id: String,
    /// Whether Redis answers.
    pub redis_up: bool,
    /// Why not, if not.
    pub down_reason: String,
    /// Seconds since the leases were last read.
    pub view_age_secs: Option<f64>,
    /// The live gateways.
    pub gateways: Vec<ClusterRow>,
    /// Counters.
    pub redis_ops: u64,
    /// Agents redirected at registration.
    pub agent_redirects: u64,
    /// Controls redirected.
    pub control_redirects: u64,
    /// Controls' connects relayed to the agent's gateway.
    pub control_relays: u64,
    /// Local agents replaced by a newer registration elsewhere.
    pub replaced_elsewhere: u64,
    /// Times Redis was lost.
    pub redis_failures: u64,
    /// Whether this gateway is draining.
    pub draining: bool,
    /// Agents a drain moved away.
    pub drained: u64,
}

impl Cluster {
    /// Starts the side threads for `config`; this gateway is reached at
    /// `advertise`, and `inboxes` reach its workers.
    pub(crate) fn start(
        config: &ClusterConfig,
        advertise: String,
        boot: String,
        inboxes: Vec<async_channel::Sender<ShardMsg>>,
        events: EventLog,
    ) -> Arc<Cluster> {
        let cluster = Arc::new(Cluster {
            id: config.id.clone(),
            advertise,
            config: config.clone(),
            board: Arc::default(),
            view: Mutex::new(View::default()),
            counts: ClusterCounts::default(),
            inboxes,
            events,
            threads: Mutex::default(),
            boot,
            draining: AtomicBool::new(false),
            drain_rate: AtomicU64::new(0),
            forget_hook: std::sync::OnceLock::new(),
            relay_tls: relay_tls(config),
        });
        let mut threads = Vec::new();
        for (name, run) in [
            ("ringway-cluster", Cluster::run_commands as fn(&Arc<Cluster>)),
            ("ringway-cluster-sub", Cluster::run_subscriber),
        ] {
            let c = cluster.clone();
            match std::thread::Builder::new().name(name.into()).spawn(move || run(&c)) {
                Ok(t) => threads.push(t),
                Err(e) => log::error!("cannot start thread {name}: {e}; the cluster directory is not kept"),
            }
        }
        *cluster.threads.lock().unwrap_or_else(|p| p.into_inner()) = threads;
        cluster
    }

    /// Stops the side threads: this gateway's lease and records leave
    /// Redis, so the others stop sending controls here at once.
    pub(crate) fn stop(&self) {
        self.board.lock().stop = true;
        self.board.wake();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// A fresh registration id (random, below [`REG_LIMIT`]).
    pub(crate) fn new_reg() -> u64 {
        let n = new_nonce();
        let mut b = [0u8; 8];
        b.copy_from_slice(&n[..8]);
        u64::from_le_bytes(b) % REG_LIMIT
    }

    /// Notes that this gateway holds `agent` as registration `reg`.
    pub(crate) fn hold(&self, agent: AgentKey, held: Held) -> MirrorShare {
        self.board.hold(agent, held)
    }

    /// Where to send a new agent instead, if this gateway holds more than
    /// its share or is draining: the advertised address and boot id of the
    /// least-loaded gateway.
    pub(crate) fn spread(&self, mine: u64) -> Option<(String, String)> {
        let draining = self.draining.load(Ordering::Relaxed);
        if !self.config.spread && !draining {
            return None;
        }
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        if draining && let Some(me) = view.live.get_mut(&self.id) {
            // The lease says so from the next renewal; the view now.
            me.draining = true;
        }
        let target = view.spread(&self.id, mine, self.config.slack_percent)?;
        view.lease_of(&target).map(|l| (l.advertise.clone(), l.boot.clone()))
    }

    /// Starts or stops a drain (`ringway drain`): while it runs, new
    /// agents are sent to the others and the ones here are told to move,
    /// spread over `drain_secs`; sessions already relayed stay. Returns
    /// what it did, for the caller.
    pub(crate) fn drain(&self, on: bool, held: u64) -> String {
        let was = self.draining.swap(on, Ordering::Relaxed);
        let secs = self.config.drain.as_secs().max(1);
        let text = match (was, on) {
            (false, true) => {
                let rate = held.div_ceil(secs).max(1);
                self.drain_rate.store(rate, Ordering::Relaxed);
                format!(
                    "Draining gateway {}: {held} clients are sent to the other gateways over {secs} s; new clients go there too",
                    self.id
                )
            }
            (true, true) => format!("Gateway {} is draining already", self.id),
            (true, false) => format!("Gateway {} stopped draining: it takes new clients again", self.id),
            (false, false) => format!("Gateway {} is not draining", self.id),
        };
        if was != on {
            self.events.event(text.clone());
            // Renew now, so the others see the state at once.
            self.board.lock().resync = true;
            self.board.wake();
        }
        text
    }

    /// Why Redis is unusable now, if it is (no wait).
    pub(crate) fn down(&self) -> Option<Unavailable> {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        (!view.redis_up).then(|| Unavailable::Redis(view.down_reason.clone()))
    }

    /// Asks the side thread, waiting at most [`CLUSTER_TIMEOUT`].
    async fn ask<T>(
        &self,
        kid: KeyId,
        make: impl FnOnce(oneshot::Sender<Result<T, Unavailable>>) -> Request,
    ) -> Result<T, Unavailable> {
        if let Some(down) = self.down() {
            return Err(down);
        }
        let (tx, rx) = oneshot::channel();
        if self.board.lock().push(kid, make(tx)).is_err() {
            return Err(Unavailable::Busy);
        }
        self.board.wake();
        match compio::time::timeout(CLUSTER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Err(Unavailable::Busy),
        }
    }

    /// Claims `agent`'s name cluster-wide for `held`, within `max_clients`.
    pub(crate) async fn claim(&self, agent: AgentKey, held: Held, max_clients: usize) -> Result<Claimed, Unavailable> {
        let kid = agent.kid;
        self.ask(kid, |reply| Request::Claim {
            agent,
            held,
            max_clients,
            reply,
        })
        .await
    }

    /// Where `agent` is held, cluster-wide.
    pub(crate) async fn locate(&self, agent: AgentKey) -> Result<Located, Unavailable> {
        let kid = agent.kid;
        self.ask(kid, |reply| Request::Locate { agent, reply }).await
    }

    /// Whether TOTP step `step` of `operator` is new cluster-wide (and
    /// now used): a code accepted on one gateway is refused on the others.
    pub(crate) async fn claim_step(&self, operator: &str, step: u64) -> Result<bool, Unavailable> {
        // The operator's own share of the queue, as a key has.
        let tenant = KeyId::of(&format!("operator:{operator}"));
        let operator = operator.to_string();
        self.ask(tenant, |reply| Request::Step { operator, step, reply }).await
    }

    /// Pins `agent`'s name to `key` cluster-wide if it is free, or says
    /// whose it is.
    pub(crate) async fn pin(&self, agent: AgentKey, key: String) -> Result<PinVerdict, Unavailable> {
        let kid = agent.kid;
        self.ask(kid, |reply| Request::Pin { agent, key, reply }).await
    }

    /// Takes back a pin this gateway just made, which its own store then
    /// refused.
    pub(crate) async fn unpin(&self, agent: AgentKey, key: String) -> Result<(), Unavailable> {
        let kid = agent.kid;
        self.ask(kid, |reply| Request::Unpin { agent, key, reply }).await
    }

    /// Whether connects to agents on other gateways are relayed here
    /// (`cross = "relay"`) rather than redirected.
    pub(crate) fn relays(&self) -> bool {
        self.config.relay
    }

    /// The TLS client settings for relaying to an `https://` gateway.
    pub(crate) fn relay_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.relay_tls.clone()
    }

    /// Sets what an `unpin` message from another gateway does here.
    pub(crate) fn on_unpin(&self, hook: ForgetHook) {
        let _ = self.forget_hook.set(hook);
    }

    /// Releases `name`'s pins under keys `kids` (the key named `key`, or
    /// every key) cluster-wide, and tells every other live gateway to
    /// release its own: on a connection of its own (the admin thread's
    /// `agents forget`, never a worker). How many Redis held.
    pub(crate) fn forget_pins(&self, kids: &[KeyId], key: Option<&str>, name: &str) -> Result<usize, String> {
        let down = |e: redis::RedisError| format!("the cluster directory is unavailable: {e}");
        let mut conn = self.connect().map_err(down)?;
        let mut n = 0;
        for kid in kids {
            self.counts.redis_ops.fetch_add(1, Ordering::Relaxed);
            let gone: usize = redis::cmd("HDEL")
                .arg(pins_key(*kid))
                .arg(pct_encode(name))
                .query(&mut conn)
                .map_err(down)?;
            n += gone;
        }
        let others: Vec<String> = {
            let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.live.keys().filter(|id| **id != self.id).cloned().collect()
        };
        let msg = Message::Unpin {
            key: key.map(str::to_string),
            name: name.to_string(),
        }
        .encode();
        for id in others {
            self.counts.redis_ops.fetch_add(1, Ordering::Relaxed);
            redis::cmd("PUBLISH")
                .arg(channel_of(&id))
                .arg(&msg)
                .query::<()>(&mut conn)
                .map_err(down)?;
        }
        Ok(n)
    }

    /// The agents of `kid` on the other live gateways.
    pub(crate) async fn list(&self, kid: KeyId) -> Result<Vec<AgentSummary>, Unavailable> {
        self.ask(kid, |reply| Request::List { kid, reply }).await
    }

    /// The cluster as this gateway sees it now.
    pub fn status(&self) -> ClusterStatus {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let c = &self.counts;
        ClusterStatus {
            id: self.id.clone(),
            redis_up: view.redis_up,
            down_reason: view.down_reason.clone(),
            view_age_secs: view.read_at.map(|t| t.elapsed().as_secs_f64()),
            gateways: view
                .live
                .iter()
                .map(|(id, l)| ClusterRow {
                    id: id.clone(),
                    advertise: l.advertise.clone(),
                    agents: l.agents,
                    sessions: l.sessions,
                    draining: l.draining,
                    lease_age_secs: view.lease_age_ms.get(id).copied().unwrap_or(0) as f64 / 1000.0,
                    this: *id == self.id,
                })
                .collect(),
            redis_ops: c.redis_ops.load(Ordering::Relaxed),
            agent_redirects: c.agent_redirects.load(Ordering::Relaxed),
            control_redirects: c.control_redirects.load(Ordering::Relaxed),
            control_relays: c.control_relays.load(Ordering::Relaxed),
            replaced_elsewhere: c.replaced_elsewhere.load(Ordering::Relaxed),
            redis_failures: c.redis_failures.load(Ordering::Relaxed),
            draining: self.draining.load(Ordering::Relaxed),
            drained: c.drained.load(Ordering::Relaxed),
        }
    }

    /// A Redis client for the config's URL and password.
    fn client(&self) -> RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let mut info = self.config.redis.as_str().into_connection_info()?;
        if let Some(pw) = &self.config.password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        redis::Client::open(info)
    }

    /// Connects, with deadlines on every read and write.
    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.client()?.get_connection_with_timeout(REDIS_IO_TIMEOUT)?;
        conn.set_read_timeout(Some(REDIS_IO_TIMEOUT))?;
        conn.set_write_timeout(Some(REDIS_IO_TIMEOUT))?;
        Ok(conn)
    }

    /// Marks Redis down (once per outage in the log).
    fn set_down(&self, why: &redis::RedisError) {
        let reason = why.to_string();
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        if view.redis_up || view.read_at.is_none() && view.down_reason.is_empty() {
            self.counts.redis_failures.fetch_add(1, Ordering::Relaxed);
            self.events.event(format!(
                "Cluster directory unavailable ({}): {reason}. Serving this gateway's own clients only",
                redacted_url(&self.config.redis)
            ));
        }
        view.redis_up = false;
        view.down_reason = reason;
    }

    /// The commands thread: serves requests, writes the mirror, renews
    /// the lease and reads the view, reconnecting while Redis is down.
    fn run_commands(self: &Arc<Cluster>) {
        let mut link: Option<Link> = None;
        let mut retry_at = Instant::now();
        let renew_every = self.config.lease / 3;
        let mut next_renew = Instant::now();
        let mut next_move = Instant::now();
        let mut was_up = false;
        loop {
            if self.draining.load(Ordering::Relaxed) && Instant::now() >= next_move {
                self.move_some();
                next_move = Instant::now() + Duration::from_secs(1);
            }
            let (requests, dirty, resync, stop) = {
                let mut m = self.board.lock();
                let mut wake_at = if link.is_some() { next_renew } else { retry_at };
                if self.draining.load(Ordering::Relaxed) {
                    wake_at = wake_at.min(next_move);
                }
                if m.requests.is_empty() && (m.dirty.is_empty() || link.is_none()) && !m.resync && !m.stop {
                    let now = Instant::now();
                    if wake_at > now {
                        m = self.board.wait(m, wake_at - now);
                    }
                }
                let dirty: Vec<AgentKey> = if link.is_some() {
                    m.dirty.drain().collect()
                } else {
                    Vec::new()
                };
                let resync = std::mem::take(&mut m.resync);
                (m.take_requests(), dirty, resync, m.stop)
            };
            if stop {
                if let Some(mut l) = link.take() {
                    let _ = l.leave(self);
                }
                for r in requests {
                    answer_unavailable(r, Unavailable::Redis("the gateway is stopping".into()));
                }
                return;
            }
            if link.is_none() && Instant::now() >= retry_at {
                match Link::open(self) {
                    Ok(l) => {
                        link = Some(l);
                        next_renew = Instant::now();
                    }
                    Err(e) => {
                        self.set_down(&e);
                        retry_at = Instant::now() + REDIS_RETRY;
                    }
                }
            }
            let Some(l) = link.as_mut() else {
                let why = self.down().unwrap_or(Unavailable::Busy);
                for r in requests {
                    answer_unavailable(r, why.clone());
                }
                continue;
            };
            let fresh = !was_up;
            let result = (|| -> RedisResult<()> {
                if fresh || resync {
                    // After every (re)connect and (re)subscribe: pub/sub
                    // may have lost messages, Redis may have lost data.
                    let republished = l.reconcile(self)?;
                    l.renew(self)?;
                    if fresh {
                        self.events.event(format!(
                            "Cluster directory available ({}): gateway {} holds {republished} clients",
                            redacted_url(&self.config.redis),
                            self.id
                        ));
                    }
                    next_renew = Instant::now() + renew_every;
                }
                l.serve(self, requests)?;
                l.write_dirty(self, dirty)?;
                if Instant::now() >= next_renew {
                    l.renew(self)?;
                    next_renew = Instant::now() + renew_every;
                }
                Ok(())
            })();
            match result {
                Ok(()) => was_up = true,
                Err(e) => {
                    self.set_down(&e);
                    // What was not written is written after the reconcile
                    // of the next connection, which writes everything.
                    link = None;
                    was_up = false;
                    retry_at = Instant::now() + REDIS_RETRY;
                }
            }
        }
    }

    /// One second of a drain: each worker is told to move its share of
    /// this second's agents away.
    fn move_some(&self) {
        let rate = self.drain_rate.load(Ordering::Relaxed);
        let workers = self.inboxes.len().max(1) as u64;
        let each = rate.div_ceil(workers) as usize;
        for inbox in &self.inboxes {
            // A full inbox skips a second: the drain takes a little longer.
            let _ = inbox.try_send(ShardMsg::MoveAway { count: each });
        }
    }

    /// The subscriber thread: listens on this gateway's channel and hands
    /// each replacement to the worker owning the agent. After every
    /// (re)subscribe it asks the commands thread to reconcile.
    fn run_subscriber(self: &Arc<Cluster>) {
        let channel = channel_of(&self.id);
        loop {
            if self.board.lock().stop {
                return;
            }
            let mut conn = match self.connect() {
                Ok(c) => c,
                Err(_) => {
                    // The commands thread reports the outage.
                    std::thread::sleep(REDIS_RETRY);
                    continue;
                }
            };
            let mut pubsub = conn.as_pubsub();
            if pubsub.subscribe(&channel).is_err() || pubsub.set_read_timeout(Some(REDIS_IO_TIMEOUT)).is_err() {
                std::thread::sleep(REDIS_RETRY);
                continue;
            }
            self.board.lock().resync = true;
            self.board.wake();
            loop {
                if self.board.lock().stop {
                    return;
                }
                match pubsub.get_message() {
                    Ok(msg) => self.on_message(msg.get_payload_bytes()),
                    Err(e) if e.is_timeout() => {}
                    Err(_) => break,
                }
            }
            std::thread::sleep(REDIS_RETRY);
        }
    }

    /// One message from another gateway.
    fn on_message(&self, payload: &[u8]) {
        match Message::decode(payload) {
            Some(Message::Replace { agent, reg, by }) => self.evict(agent, reg, &by),
            // The store's write is an fsync: fine on this thread, never a
            // worker's.
            Some(Message::Unpin { key, name }) => {
                if let Some(hook) = self.forget_hook.get() {
                    hook(key.as_deref(), &name);
                }
            }
            None => log::debug!("cluster: ignored a message of {} bytes", payload.len()),
        }
    }

    /// Tells the agent's owner worker to drop registration `reg`, which
    /// lost its name to a newer one on gateway `by`.
    fn evict(&self, agent: AgentKey, reg: u64, by: &str) {
        let owner = owner_of(agent.kid, &agent.name, self.inboxes.len());
        let msg = ShardMsg::Evict {
            kid: agent.kid,
            name: agent.name,
            reg,
            by: by.to_string(),
        };
        // A full inbox drops it; the next reconcile finds the loser again.
        if self.inboxes[owner].try_send(msg).is_ok() {
            self.counts.replaced_elsewhere.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The TLS client settings a relaying gateway dials the others with; a
/// CA file that cannot be read is logged, and relaying to https then
/// answers 502 with that reason.
fn relay_tls(config: &ClusterConfig) -> Option<Arc<rustls::ClientConfig>> {
    if !config.relay {
        return None;
    }
    let trust = match &config.ca_file {
        Some(path) => crate::tls::Trust::CaFile(path.clone()),
        None => crate::tls::Trust::SystemRoots,
    };
    match crate::tls::client_config(&trust) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!(
                "[cluster] cannot trust the other gateways' certificates: {e}; relaying to https:// gateways fails"
            );
            None
        }
    }
}

/// One session relayed here, counted in the lease for as long as it lives.
pub(crate) struct SessionShare(Arc<Cluster>);

impl SessionShare {
    /// Counts a session that starts now.
    pub(crate) fn new(cluster: &Arc<Cluster>) -> SessionShare {
        cluster.counts.sessions.fetch_add(1, Ordering::Relaxed);
        SessionShare(cluster.clone())
    }
}

impl Drop for SessionShare {
    fn drop(&mut self) {
        self.0.counts.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a request that cannot be served.
fn answer_unavailable(r: Request, why: Unavailable) {
    match r {
        Request::Claim { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Request::Locate { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Request::List { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Request::Step { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Request::Pin { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Request::Unpin { reply, .. } => {
            let _ = reply.send(Err(why));
        }
    }
}

/// Gives the asker Redis's answer, made into what it asked for by `ok`;
/// an error goes to the asker as "unavailable" and back to the caller,
/// which drops the connection.
fn answer<T, U>(
    reply: oneshot::Sender<Result<U, Unavailable>>,
    got: RedisResult<T>,
    ok: impl FnOnce(T) -> U,
) -> RedisResult<()> {
    match got {
        Ok(v) => {
            let _ = reply.send(Ok(ok(v)));
            Ok(())
        }
        Err(e) => {
            let _ = reply.send(Err(Unavailable::Redis(e.to_string())));
            Err(e)
        }
    }
}

/// Milliseconds since 1970.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection to Redis with the scripts loaded, and what this gateway
/// wrote through it.
struct Link {
    conn: Connection,
    claim: Script,
    release: Script,
    bury: Script,
    step: Script,
    pin: Script,
    unpin: Script,
    /// The registration of each agent this gateway wrote as its own.
    written: HashMap<AgentKey, u64>,
}

impl Link {
    fn open(c: &Cluster) -> RedisResult<Link> {
        let mut conn = c.connect()?;
        let (claim, release, bury, step, pin, unpin) = (
            Script::new(CLAIM),
            Script::new(RELEASE),
            Script::new(BURY),
            Script::new(STEP),
            Script::new(PIN),
            Script::new(UNPIN),
        );
        for s in [&claim, &release, &bury, &step, &pin, &unpin] {
            s.prepare_invoke().load(&mut conn)?;
        }
        c.counts.redis_ops.fetch_add(7, Ordering::Relaxed);
        Ok(Link {
            conn,
            claim,
            release,
            bury,
            step,
            pin,
            unpin,
            written: HashMap::new(),
        })
    }

    fn ops(c: &Cluster, n: usize) {
        c.counts.redis_ops.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The claim script's command for `agent` in `mode`.
    fn claim_cmd(&self, c: &Cluster, agent: &AgentKey, held: &Held, max: usize, mode: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.claim.get_hash())
            .arg(3)
            .arg(agents_key(agent.kid))
            .arg(held_key(&c.id))
            .arg(licence_key())
            .arg(pct_encode(&agent.name))
            .arg(&*held.record)
            .arg(&c.id)
            .arg(held.reg.to_string())
            .arg(held.at_ms.to_string())
            .arg(max)
            .arg(mode)
            .arg(agent.member())
            .arg(super::core::cluster::PREFIX)
            .arg(agent.kid.to_string());
        cmd
    }

    /// The release script's command for `agent` (`reg` 0: any of ours).
    fn release_cmd(&self, c: &Cluster, agent: &AgentKey, reg: Option<u64>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.release.get_hash())
            .arg(3)
            .arg(agents_key(agent.kid))
            .arg(held_key(&c.id))
            .arg(licence_key())
            .arg(pct_encode(&agent.name))
            .arg(&c.id)
            .arg(agent.member())
            .arg(reg.map(|r| r.to_string()).unwrap_or_default());
        cmd
    }

    /// Answers the workers' questions.
    fn serve(&mut self, c: &Cluster, requests: Vec<Request>) -> RedisResult<()> {
        let mut requests = requests.into_iter();
        while let Some(r) = requests.next() {
            let result = self.serve_one(c, r);
            if let Err(e) = result {
                let why = Unavailable::Redis(e.to_string());
                for rest in requests {
                    answer_unavailable(rest, why.clone());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn serve_one(&mut self, c: &Cluster, r: Request) -> RedisResult<()> {
        Link::ops(c, 1);
        match r {
            Request::Claim {
                agent,
                held,
                max_clients,
                reply,
            } => {
                let got = self
                    .claim_cmd(c, &agent, &held, max_clients, "claim")
                    .query::<Vec<String>>(&mut self.conn);
                let written = &mut self.written;
                answer(reply, got, |answer| {
                    if answer.first().map(String::as_str) == Some("licence") {
                        Claimed::Licence
                    } else {
                        written.insert(agent, held.reg);
                        Claimed::Yes
                    }
                })
            }
            Request::Locate { agent, reply } => {
                let got: RedisResult<Option<Vec<u8>>> = redis::cmd("HGET")
                    .arg(agents_key(agent.kid))
                    .arg(pct_encode(&agent.name))
                    .query(&mut self.conn);
                answer(reply, got, |raw| {
                    let view = c.view.lock().unwrap_or_else(|p| p.into_inner());
                    let found = raw
                        .as_deref()
                        .and_then(StoredAgent::decode)
                        .and_then(|s| view.lease_of(&s.gw).map(|l| (s.gw, l.clone())));
                    match found {
                        Some((gw, l)) => Located::At {
                            gw,
                            advertise: l.advertise,
                            boot: l.boot,
                        },
                        None => Located::Nowhere,
                    }
                })
            }
            Request::Pin { agent, key, reply } => {
                let got: RedisResult<String> = self
                    .pin
                    .key(pins_key(agent.kid))
                    .arg(pct_encode(&agent.name))
                    .arg(key)
                    .invoke(&mut self.conn);
                answer(reply, got, |v| match v.as_str() {
                    "new" => PinVerdict::New,
                    "same" => PinVerdict::Same,
                    _ => PinVerdict::Taken,
                })
            }
            Request::Unpin { agent, key, reply } => {
                let got: RedisResult<i64> = self
                    .unpin
                    .key(pins_key(agent.kid))
                    .arg(pct_encode(&agent.name))
                    .arg(key)
                    .invoke(&mut self.conn);
                answer(reply, got, |_| ())
            }
            Request::Step { operator, step, reply } => {
                let got: RedisResult<i64> = self
                    .step
                    .key(totp_key(&operator))
                    .arg(step)
                    .arg(STEP_MEMORY_SECS)
                    .invoke(&mut self.conn);
                answer(reply, got, |fresh| fresh == 1)
            }
            Request::List { kid, reply } => {
                let got: RedisResult<Vec<(Vec<u8>, Vec<u8>)>> =
                    redis::cmd("HGETALL").arg(agents_key(kid)).query(&mut self.conn);
                answer(reply, got, |fields| {
                    let view = c.view.lock().unwrap_or_else(|p| p.into_inner());
                    let renewed = rfc3339(SystemTime::now() - view.read_at.map_or(Duration::ZERO, |t| t.elapsed()));
                    fields
                        .iter()
                        .filter_map(|(_, v)| StoredAgent::decode(v))
                        .filter(|s| s.gw != c.id && view.live.contains_key(&s.gw))
                        .map(|s| AgentSummary {
                            gateway: Some(s.gw),
                            last_poll: renewed.clone(),
                            ..s.summary
                        })
                        .collect()
                })
            }
        }
    }

    /// Writes what changed in the mirror: agents that came (if not yet
    /// claimed: admitted while Redis was away) and agents that left.
    fn write_dirty(&mut self, c: &Cluster, dirty: Vec<AgentKey>) -> RedisResult<()> {
        if dirty.is_empty() {
            return Ok(());
        }
        let now: Vec<(AgentKey, Option<Held>)> = {
            let m = c.board.lock();
            dirty
                .into_iter()
                .map(|k| {
                    let s = m.agents.get(&k).cloned();
                    (k, s)
                })
                .collect()
        };
        let mut lost = Vec::new();
        for chunk in now.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            let mut claims = Vec::new();
            for (agent, stored) in chunk {
                match stored {
                    Some(s) if self.written.get(agent) != Some(&s.reg) => {
                        // Admitted while Redis was away or slow: the
                        // newer registration of the name wins.
                        pipe.add_command(self.claim_cmd(c, agent, s, 0, "republish"));
                        claims.push((agent, s.reg));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(reg) = self.written.remove(agent) {
                            pipe.add_command(self.release_cmd(c, agent, Some(reg))).ignore();
                        }
                    }
                }
            }
            if pipe.cmd_iter().next().is_none() {
                continue;
            }
            Link::ops(c, pipe.cmd_iter().count());
            let answers: Vec<Vec<String>> = pipe.query(&mut self.conn)?;
            for ((agent, reg), answer) in claims.into_iter().zip(answers) {
                if answer.first().map(String::as_str) == Some("lost") {
                    lost.push((agent.clone(), reg, answer.get(1).cloned().unwrap_or_default()));
                } else {
                    self.written.insert(agent.clone(), reg);
                }
            }
        }
        for (agent, reg, by) in lost {
            c.evict(agent, reg, &by);
        }
        Ok(())
    }

    /// Makes Redis hold exactly this gateway's agents: every held agent
    /// is written again (a name held by a live gateway with a newer
    /// registration is given up here), and every record of this gateway
    /// that no agent here has any more is removed. Returns how many
    /// agents it holds.
    fn reconcile(&mut self, c: &Cluster) -> RedisResult<usize> {
        self.written.clear();
        Link::ops(c, 2);
        redis::cmd("SADD")
            .arg(gateways_key())
            .arg(&c.id)
            .query::<()>(&mut self.conn)?;
        // The lease first, so the scripts below see this gateway alive.
        self.set_lease(c)?;
        let agents: Vec<(AgentKey, Held)> = {
            let mut m = c.board.lock();
            m.dirty.clear();
            m.agents.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        let mut lost = Vec::new();
        for chunk in agents.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            for (agent, stored) in chunk {
                pipe.add_command(self.claim_cmd(c, agent, stored, 0, "republish"));
            }
            Link::ops(c, chunk.len());
            let answers: Vec<Vec<String>> = pipe.query(&mut self.conn)?;
            for ((agent, stored), answer) in chunk.iter().zip(answers) {
                if answer.first().map(String::as_str) == Some("lost") {
                    let by = answer.get(1).cloned().unwrap_or_default();
                    lost.push((agent.clone(), stored.reg, by));
                } else {
                    self.written.insert(agent.clone(), stored.reg);
                }
            }
        }
        for (agent, reg, by) in lost {
            c.evict(agent, reg, &by);
        }
        Link::ops(c, 1);
        let members: Vec<String> = redis::cmd("SMEMBERS").arg(held_key(&c.id)).query(&mut self.conn)?;
        let stale: Vec<AgentKey> = members
            .iter()
            .filter_map(|m| AgentKey::from_member(m))
            .filter(|k| !self.written.contains_key(k))
            .collect();
        let stray: HashSet<&String> = members.iter().filter(|m| AgentKey::from_member(m).is_none()).collect();
        for chunk in stale.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            for agent in chunk {
                pipe.add_command(self.release_cmd(c, agent, None)).ignore();
            }
            Link::ops(c, chunk.len());
            pipe.query::<()>(&mut self.conn)?;
        }
        for m in stray {
            Link::ops(c, 1);
            redis::cmd("SREM")
                .arg(held_key(&c.id))
                .arg(m)
                .query::<()>(&mut self.conn)?;
        }
        Ok(self.written.len())
    }

    /// Writes this gateway's lease.
    fn set_lease(&mut self, c: &Cluster) -> RedisResult<()> {
        let lease = Lease {
            agents: c.board.lock().agents.len() as u64,
            sessions: c.counts.sessions.load(Ordering::Relaxed),
            boot: c.boot.clone(),
            draining: c.draining.load(Ordering::Relaxed),
            advertise: c.advertise.clone(),
        };
        Link::ops(c, 1);
        redis::cmd("SET")
            .arg(lease_key(&c.id))
            .arg(lease.encode())
            .arg("PX")
            .arg(c.config.lease.as_millis() as u64)
            .query::<()>(&mut self.conn)
    }

    /// Renews the lease, reads the others', and buries the dead.
    fn renew(&mut self, c: &Cluster) -> RedisResult<()> {
        self.set_lease(c)?;
        Link::ops(c, 2);
        redis::cmd("SADD")
            .arg(gateways_key())
            .arg(&c.id)
            .query::<()>(&mut self.conn)?;
        let mut ids: Vec<String> = redis::cmd("SMEMBERS").arg(gateways_key()).query(&mut self.conn)?;
        ids.retain(|id| crate::config::valid_cluster_id(id));
        ids.truncate(MAX_GATEWAYS);
        let leases: Vec<Option<Vec<u8>>> = if ids.is_empty() {
            Vec::new()
        } else {
            Link::ops(c, 1);
            let mut cmd = redis::cmd("MGET");
            for id in &ids {
                cmd.arg(lease_key(id));
            }
            cmd.query(&mut self.conn)?
        };
        let mut live = std::collections::BTreeMap::new();
        let mut ages = std::collections::BTreeMap::new();
        let mut dead = Vec::new();
        for (id, lease) in ids.into_iter().zip(leases) {
            match lease.as_deref().and_then(Lease::decode) {
                Some(l) => {
                    live.insert(id, l);
                }
                None => dead.push(id),
            }
        }
        // Agents held, as the claims wrote them: exact now, where a lease
        // says what its gateway held when it last renewed. Spreading
        // decides on these.
        if !live.is_empty() {
            let mut pipe = redis::pipe();
            for id in live.keys() {
                pipe.cmd("SCARD").arg(held_key(id)).cmd("PTTL").arg(lease_key(id));
            }
            Link::ops(c, 2 * live.len());
            let answers: Vec<(u64, i64)> = pipe.query(&mut self.conn)?;
            let lease_ms = c.config.lease.as_millis() as i64;
            for ((id, lease), (n, ttl)) in live.iter_mut().zip(answers) {
                lease.agents = n;
                // Time since its gateway last renewed it (a key without a
                // TTL, -1, or gone since, -2, counts as just renewed).
                ages.insert(id.clone(), (lease_ms - ttl.max(0).min(lease_ms)).max(0) as u64);
            }
        }
        {
            let mut view = c.view.lock().unwrap_or_else(|p| p.into_inner());
            view.live = live;
            view.lease_age_ms = ages;
            view.sent.clear();
            view.kept = 0;
            view.redis_up = true;
            view.down_reason.clear();
            view.read_at = Some(Instant::now());
        }
        for id in dead {
            self.bury(c, &id)?;
        }
        Ok(())
    }

    /// Removes dead gateway `id`'s records, in chunks, then the gateway.
    fn bury(&mut self, c: &Cluster, id: &str) -> RedisResult<()> {
        loop {
            Link::ops(c, 1);
            let left: i64 = self
                .bury
                .key(held_key(id))
                .key(licence_key())
                .arg(id)
                .arg(super::core::cluster::PREFIX)
                .arg(BURY_CHUNK)
                .invoke(&mut self.conn)?;
            if left < 0 {
                return Ok(());
            }
            if left == 0 {
                break;
            }
        }
        Link::ops(c, 1);
        redis::cmd("SREM")
            .arg(gateways_key())
            .arg(id)
            .query::<()>(&mut self.conn)?;
        log::info!("cluster: gateway {id}'s lease expired; its clients were removed from the directory");
        Ok(())
    }

    /// On shutdown: this gateway's records and lease leave Redis.
    fn leave(&mut self, c: &Cluster) -> RedisResult<()> {
        Link::ops(c, 1);
        redis::cmd("DEL").arg(lease_key(&c.id)).query::<()>(&mut self.conn)?;
        self.bury(c, &c.id.clone())
    }
}
