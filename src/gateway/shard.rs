//! The state a worker's flows run against: what all workers share
//! ([`Shared`]) and what one worker owns ([`Shard`]).
//!
//! Everything in a `Shard` is touched by its own thread only (`Rc`,
//! `RefCell`), so the hot path takes no lock. Other workers reach it
//! through its inbox (`ShardMsg`), served by `worker`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{FutureExt, Shared as SharedFuture, select};

use super::core::directory::{AgentRecord, Directory};
use super::core::gauge::Gauge;
use super::core::handoff::{Joined, OpenResult, ShardMsg};
use super::core::pairing::{Pairing, PairingLimits};
use super::core::permit::{Counter, Licence, Permit};
use super::core::sessions::Sessions;
use super::core::signin_history::SignInHistory;
use super::core::signins::SignIns;
use super::core::sources::{IDLE_SOURCES, SourceLimits, Sources, Unauthenticated};
use super::core::stats::Stats;
use super::heap::HeapCounts;
use crate::approve::Approver;
use crate::audit::Audit;
use crate::auth::scram::MockVerifiers;
use crate::auth::ticket::{TICKET_KEY_BYTES, TicketKey};
use crate::auth::{BootId, KeyId, KeyRing, NonceCache, unix_now};
use crate::config::{Config, Limits};
use crate::conn::Conn;
use crate::eventlog::{EventLog, sanitize};
use crate::proto::{SessionId, ToAgent};

/// How long a flow waits for another worker's answer (a list of its
/// agents, whether an agent was told to open a session). A worker answers
/// between two events of its loop, in microseconds; two seconds means it
/// is wedged, and the client gets a 503 saying so rather than a hang.
pub(crate) const CROSS_WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why another worker did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AskError {
    /// Its inbox stayed full, or its answer did not come, within
    /// [`CROSS_WORKER_TIMEOUT`].
    Timeout,
    /// It has stopped.
    Gone,
}

/// What every worker shares. Nothing here is touched on the relay path.
pub(crate) struct Shared {
    /// Each worker's inbox, by worker index.
    pub inboxes: Vec<async_channel::Sender<ShardMsg>>,
    /// Licence shares: one per connected agent, across all workers, and
    /// one per agent of each key.
    pub licence: Licence,
    /// Shares of the connection cap: one per open connection.
    pub connections: Counter,
    /// The connection cap now (reload may change it).
    pub max_connections: AtomicUsize,
    /// Unauthenticated connections and new-connection buckets by source.
    pub sources: Arc<Sources>,
    /// Proof nonces seen, per key, for replay protection: each worker's
    /// key ring holds the same per-key sets.
    pub nonces: NonceCache,
    /// This run's boot id: in every answer, and what plain-HTTP proofs
    /// must be signed with, so none made for an earlier run is accepted.
    pub boot: BootId,
    /// The administrator's event log.
    pub events: EventLog,
    /// What signs tickets and answers unknown operator names: made from
    /// the ticket key once operators are configured (at start, or by the
    /// first reload that adds one), then kept for the process's life.
    pub signin_keys: OnceLock<SignInKeys>,
    /// Failures, locks and TOTP steps per operator, for every worker.
    pub signins: SignIns,
    /// Agent name pins: opened at start while `[auth] pin_agent_names`
    /// is on (or by the first reload that turns it on), then kept.
    pub pins: OnceLock<super::pins::PinStore>,
    /// Asks the approval hook, off the event loops, for every worker.
    pub approver: Arc<Approver>,
    /// The audit trail (`[audit]`), for every worker.
    pub audit: Audit,
    /// The latest sign-ins, for the console's history page.
    pub signin_history: std::sync::Mutex<SignInHistory>,
    /// Accepted connections and the heap trimmer's counts (`heap`).
    pub heap: Arc<HeapCounts>,
    /// The cluster's side threads, if `[cluster]` is configured.
    pub cluster: Option<Arc<super::cluster::Cluster>>,
}

/// The keys the sign-in flows use, both from the ticket key.
pub(crate) struct SignInKeys {
    /// Signs and checks tickets.
    pub ticket: TicketKey,
    /// Verifiers for names no operator has.
    pub mock: MockVerifiers,
}

impl SignInKeys {
    /// Both from the ticket key's bytes.
    pub fn new(bytes: &[u8; TICKET_KEY_BYTES]) -> SignInKeys {
        SignInKeys {
            ticket: TicketKey::new(bytes),
            mock: MockVerifiers::new(bytes),
        }
    }
}

impl Shared {
    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// A share of the connection cap, if one is free.
    pub fn connection_permit(&self) -> Option<Permit> {
        let max = self.max_connections.load(std::sync::atomic::Ordering::Acquire);
        self.connections.take(max)
    }
}

/// The pending-session table as a worker holds it: a waiting control is
/// woken through its oneshot.
pub(crate) type PendingTable = Pairing<oneshot::Sender<Joined>>;

/// One worker's state.
pub(crate) struct Shard {
    /// This worker's index, also the `worker` field of its session ids.
    pub index: usize,
    /// What all workers share.
    pub shared: Arc<Shared>,
    /// The running configuration.
    pub config: RefCell<Arc<Config>>,
    /// The running keys, looked up by id.
    pub keys: RefCell<Rc<KeyRing>>,
    /// Agents this worker owns.
    pub directory: RefCell<Directory>,
    /// Sessions whose control waits here for its agent.
    pub pending: RefCell<PendingTable>,
    /// Sessions relaying on this worker.
    pub sessions: RefCell<Sessions>,
    /// Agent channel tasks still running (a drain waits for them).
    pub live_agents: Gauge,
    /// Connections this worker's front door is serving, sessions
    /// included (a drain waits for them).
    pub connections: Rc<Gauge>,
    /// This worker's connections that have not proven a key, by socket,
    /// so that `verify`, which sees only the connection, can release the
    /// one it proved. An entry goes before its socket closes (see
    /// [`Unproven`]), so a descriptor names one connection here.
    pub unproven: RefCell<HashMap<RawFd, Unauthenticated>>,
    /// Whether a shutdown is draining this worker.
    pub draining: Draining,
    /// Counters for the console and /metrics.
    pub stats: Stats,
    /// Source of registration ids, unique on this worker.
    next_id: Cell<u64>,
}

/// The per-source limits a configuration asks for, given the connection
/// cap: the table remembers every source the cap lets hold a connection,
/// plus [`IDLE_SOURCES`] more.
pub(crate) fn source_limits(limits: &Limits, connection_cap: usize) -> SourceLimits {
    SourceLimits {
        unauthenticated: limits.unauthenticated_per_source(connection_cap),
        per_sec: limits.new_connections_per_source_per_sec,
        burst: limits.new_connections_burst_per_source,
        tracked: connection_cap.saturating_add(IDLE_SOURCES),
    }
}

/// The pairing shares a configuration asks for.
pub(crate) fn pairing_limits(config: &Config) -> PairingLimits {
    PairingLimits {
        total: config.limits.max_pending_sessions,
        per_key: config.limits.max_pending_per_key,
        per_control: config.limits.max_pending_per_control,
    }
}

impl Shard {
    /// A worker's state before it serves anything.
    pub fn new(index: usize, shared: Arc<Shared>, config: Arc<Config>) -> Self {
        let keys = KeyRing::new(&config.keys, &shared.nonces, unix_now());
        Self {
            index,
            shared,
            keys: RefCell::new(Rc::new(keys)),
            pending: RefCell::new(Pairing::new(pairing_limits(&config))),
            config: RefCell::new(config),
            directory: RefCell::new(Directory::default()),
            sessions: RefCell::new(Sessions::default()),
            live_agents: Gauge::default(),
            connections: Rc::default(),
            unproven: RefCell::default(),
            draining: Draining::default(),
            stats: Stats::default(),
            next_id: Cell::new(1),
        }
    }

    /// A fresh id for an agent registration.
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// A snapshot of the running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers()
    }

    /// Queues an event log line.
    pub fn event(&self, text: String) {
        self.shared.events.event(text);
    }

    /// Queues an event log line that the peer at `source` could repeat at
    /// will (a failed proof), so that its repeats are summarised.
    pub fn event_from(&self, source: IpAddr, text: String) {
        self.shared.events.event_from(source, text);
    }

    /// Asks worker `to` a question and waits for its answer, both within
    /// [`CROSS_WORKER_TIMEOUT`]. Giving up drops only the question (it
    /// carries no connection).
    pub async fn ask<T>(
        &self,
        to: usize,
        question: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<T, AskError> {
        let (reply, answer) = oneshot::channel();
        let msg = question(reply);
        let inbox = &self.shared.inboxes[to];
        let asked = async {
            inbox.send(msg).await.map_err(|_| AskError::Gone)?;
            answer.await.map_err(|_| AskError::Gone)
        };
        compio::time::timeout(CROSS_WORKER_TIMEOUT, asked)
            .await
            .unwrap_or(Err(AskError::Timeout))
    }

    /// Hands a connection to worker `to` without waiting: a full inbox
    /// (that worker is far behind) gives the message back, so the caller
    /// can still answer its peer with a 503 instead of dropping it.
    pub fn hand_to(&self, to: usize, msg: ShardMsg) -> Result<(), ShardMsg> {
        self.shared.inboxes[to].try_send(msg).map_err(|e| e.into_inner())
    }

    /// Removes the agents `doomed` picks, telling each why and logging
    /// each; their licence shares go with their records. Their channel
    /// tasks end when they see their outbox close.
    pub fn evict(&self, doomed: impl Fn(&AgentRecord) -> bool, reason: &str) {
        let gone = self.directory.borrow_mut().remove_where(doomed);
        for rec in gone {
            let _ = rec.outbox.try_send(ToAgent::Bye(reason.to_string()));
            self.event(format!("Client {} Disconnected", sanitize(&rec.name)));
        }
    }

    /// Drops every agent silent past the heartbeat deadline (2 x CMPI +
    /// 10 s), each with its log lines. One pass finds them and one removes
    /// them, so a mass expiry (a network cut dropping thousands at once)
    /// costs two scans of the slab, not one per agent.
    pub fn expire_silent(&self, now: Instant) {
        let deadline = self.config().heartbeat_deadline();
        let silent: HashSet<u64> = {
            let directory = self.directory.borrow();
            let mut silent = HashSet::new();
            for rec in directory.iter().filter(|r| now.duration_since(r.last_seen) > deadline) {
                Stats::inc(&self.stats.heartbeat_expired);
                self.event(format!(
                    "Client {} timed out: no poll for {} s",
                    sanitize(&rec.name),
                    deadline.as_secs()
                ));
                silent.insert(rec.id);
            }
            silent
        };
        if !silent.is_empty() {
            self.evict(|r| silent.contains(&r.id), "timeout");
        }
    }

    /// The connection proved a key: it leaves its source's count of
    /// unauthenticated connections and gives its token back.
    pub fn proven(&self, conn: &Conn) {
        let ticket = self.unproven.borrow_mut().remove(&conn.tcp().as_raw_fd());
        if let Some(ticket) = ticket {
            ticket.proven();
        }
    }

    /// Resolves once no connection is being served and no agent channel
    /// runs on this worker: what a drain waits for.
    pub async fn idle(&self) {
        while self.connections.get() > 0 || self.live_agents.get() > 0 {
            let (a, b) = (pin!(self.connections.changed()), pin!(self.live_agents.changed()));
            select(a, b).await;
        }
    }

    /// Tells an agent this worker owns to open a session.
    pub fn open_local(&self, kid: KeyId, name: &str, sid: SessionId) -> OpenResult {
        match self.directory.borrow().find(kid, name) {
            None => OpenResult::NotFound,
            Some(rec) => match rec.outbox.try_send(ToAgent::Open(sid)) {
                Ok(()) => OpenResult::Sent,
                Err(_) => OpenResult::Busy,
            },
        }
    }

    /// Takes the sender a control waits on, if session `sid` is waiting
    /// here for this agent of this key.
    pub fn take_waiter(&self, sid: SessionId, kid: KeyId, agent: &str) -> Option<oneshot::Sender<Joined>> {
        self.pending
            .borrow_mut()
            .take_waiter(sid.slot as usize, &sid.token, kid, agent)
    }

    /// The agent said it cannot serve `sid`: fail the waiting control
    /// (502). Dropping the waiter's sender wakes the control with it.
    pub fn fail_waiter(&self, sid: SessionId, kid: KeyId, agent: &str) {
        drop(self.take_waiter(sid, kid, agent));
    }
}

/// A connection's entry in [`Shard::unproven`], removed when this is
/// dropped. The front door holds it for the connection's whole life and
/// declares it first, so it goes after the connection has been dropped,
/// in the same poll: no other connection can have reused the descriptor
/// by then.
pub(crate) struct Unproven {
    shard: Rc<Shard>,
    fd: RawFd,
}

impl Unproven {
    /// Enters the connection on `fd` with its place in its source's count.
    pub fn hold(shard: &Rc<Shard>, fd: RawFd, ticket: Unauthenticated) -> Unproven {
        shard.unproven.borrow_mut().insert(fd, ticket);
        Unproven {
            shard: Rc::clone(shard),
            fd,
        }
    }
}

impl Drop for Unproven {
    fn drop(&mut self) {
        // Taken out before it is dropped, so the ticket's own drop runs
        // with the table free.
        let ticket = self.shard.unproven.borrow_mut().remove(&self.fd);
        drop(ticket);
    }
}

/// Whether this worker is draining, and a signal for the connections
/// that must stop waiting when it starts (those not yet routed).
pub(crate) struct Draining {
    started: Cell<bool>,
    /// Dropped when the drain starts, which completes every clone of
    /// `signal`.
    trigger: RefCell<Option<oneshot::Sender<()>>>,
    signal: SharedFuture<oneshot::Receiver<()>>,
}

impl Default for Draining {
    fn default() -> Self {
        let (trigger, signal) = oneshot::channel();
        Self {
            started: Cell::new(false),
            trigger: RefCell::new(Some(trigger)),
            signal: signal.shared(),
        }
    }
}

impl Draining {
    /// Starts the drain: every [`Draining::started`] future completes.
    pub fn start(&self) {
        self.started.set(true);
        self.trigger.borrow_mut().take();
    }

    /// Whether the drain has started.
    pub fn is_started(&self) -> bool {
        self.started.get()
    }

    /// Completes when the drain starts (at once if it has).
    pub fn started(&self) -> impl Future<Output = ()> + use<> {
        self.signal.clone().map(|_| ())
    }
}
