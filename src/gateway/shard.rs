//! One worker: a pinned thread's io_uring runtime, its listeners, the
//! agents it owns, and the sessions whose control connected to it.
//!
//! Everything in a `Shard` is touched by its own thread only (`Rc`,
//! `RefCell`), so the hot path takes no lock. Other workers reach it through
//! its inbox: sockets handed over with the bytes already read, and small
//! requests answered over oneshot channels.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::{TcpListener, TcpStream};
use futures_channel::oneshot;
use slab::Slab;

use super::Shared;
use super::agent::Registration;
use super::control::{JoinRequest, Pending, SessionInfo};
use super::directory::{AgentRecord, Directory};
use super::stats::{AgentRow, SessionRow, Stats, StatsSnapshot, WorkerSnapshot};
use crate::auth::{KeyId, KeyRing};
use crate::config::Config;
use crate::conn::Conn;
use crate::eventlog::sanitize;
use crate::proto::{AgentSummary, SessionId, ToAgent};
use crate::timefmt::rfc3339;
use crate::tls::TlsConn;

/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS) before trying
/// again: retrying at once would spin a core while nothing can change.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How often a worker looks for agents past their heartbeat deadline. One
/// sweep a second over a slab of records replaces a timer per agent; an
/// agent is dropped at most this long after its deadline.
const HEARTBEAT_SWEEP: Duration = Duration::from_secs(1);

/// How long a stopping worker waits for its agents to be told goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A connection moving from the worker that accepted it to the one that
/// will serve it: the descriptor, its TLS state if any, and the bytes read
/// past the request head.
pub(crate) struct Handoff {
    fd: OwnedFd,
    /// TLS state (holding decrypted data not yet read) and ciphertext not
    /// yet given to it.
    tls: Option<(Box<rustls::Connection>, Vec<u8>)>,
    /// The peer's address, for logs and the console.
    pub peer: SocketAddr,
    /// Bytes already read after the request head; delivered first.
    pub early: Vec<u8>,
}

impl Handoff {
    /// Detaches `conn` from this worker's runtime.
    pub fn new(conn: Conn, peer: SocketAddr, early: Vec<u8>) -> io::Result<Self> {
        let (stream, tls) = match conn {
            Conn::Plain(s) => (s, None),
            Conn::Tls(t) => {
                let (s, state, pending) = t.into_parts();
                (s, Some((Box::new(state), pending)))
            }
        };
        // A duplicate descriptor outlives the runtime-bound original, which
        // is closed when `stream` drops at the end of this function.
        let fd = stream.as_fd().try_clone_to_owned()?;
        Ok(Self { fd, tls, peer, early })
    }

    /// Attaches the connection to the current worker's runtime.
    pub fn into_conn(self) -> io::Result<(Conn, SocketAddr, Vec<u8>)> {
        let stream = TcpStream::from_std(std::net::TcpStream::from(self.fd))?;
        let conn = match self.tls {
            None => Conn::Plain(stream),
            Some((state, pending)) => Conn::Tls(Box::new(TlsConn::new(stream, *state, pending))),
        };
        Ok((conn, self.peer, self.early))
    }
}

/// What an agent's owner answers to "open session S".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenResult {
    /// The agent was told.
    Sent,
    /// No agent of that name with that key.
    NotFound,
    /// The agent's channel is backed up.
    Busy,
}

/// Messages between workers.
pub(crate) enum ShardMsg {
    /// An agent registration accepted elsewhere; this worker owns the agent.
    Register(Box<Registration>),
    /// Tell agent (kid, name) to open session `sid`.
    Open {
        kid: KeyId,
        name: String,
        sid: SessionId,
        reply: oneshot::Sender<OpenResult>,
    },
    /// An agent's data connection for a session whose control is here.
    Join(Box<JoinRequest>),
    /// The agent cannot serve session `sid`.
    Fail { sid: SessionId, kid: KeyId, name: String },
    /// The agents of key `kid` that this worker owns.
    List {
        kid: KeyId,
        reply: oneshot::Sender<Vec<AgentSummary>>,
    },
    /// A new configuration: apply keys, CMPI and limits to live state.
    Reload(Arc<Config>),
    /// Start accepting on these listeners (one per new address).
    AddListeners(Vec<(SocketAddr, std::net::TcpListener)>),
    /// Stop accepting on these addresses.
    RemoveListeners(Vec<SocketAddr>),
    /// Report agents, sessions and counters to the admin thread.
    Snapshot(std::sync::mpsc::Sender<WorkerSnapshot>),
    /// Stop: goodbye to agents, close listeners, end the thread.
    Shutdown,
}

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
    pub pending: RefCell<Slab<Pending>>,
    /// Sessions relaying on this worker.
    pub sessions: RefCell<Slab<SessionInfo>>,
    /// Agent channel tasks still running (shutdown waits for them).
    pub live_agents: Cell<usize>,
    /// Counters for the console and /metrics.
    pub stats: Stats,
    /// Accept tasks by listen address; dropping a handle closes its listener.
    acceptors: RefCell<Vec<(SocketAddr, compio::runtime::JoinHandle<()>)>>,
    /// Source of registration ids, unique on this worker.
    next_id: Cell<u64>,
}

impl Shard {
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

    /// Sends a message to worker `to`, waiting for room in its inbox.
    pub async fn send_to(&self, to: usize, msg: ShardMsg) -> Result<(), ()> {
        self.shared.inboxes[to].send(msg).await.map_err(|_| ())
    }

    /// Removes the agents `doomed` picks, telling each why, logging each
    /// and freeing its licence slot. Their channel tasks end when they see
    /// their outbox close.
    pub fn evict(&self, doomed: impl Fn(&AgentRecord) -> bool, reason: &str) {
        let gone = self.directory.borrow_mut().remove_where(doomed);
        for rec in gone {
            let _ = rec.outbox.try_send(ToAgent::Bye(reason.to_string()));
            self.shared
                .agents_connected
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            self.event(format!("Client {} Disconnected", sanitize(&rec.name)));
        }
    }

    /// Drops every agent silent past the heartbeat deadline (2 x CMPI +
    /// 10 s), each with its log lines. One pass finds them and one removes
    /// them, so a mass expiry (a network cut dropping thousands at once)
    /// costs two scans of the slab, not one per agent.
    pub fn expire_silent(&self) {
        let deadline = self.config().heartbeat_deadline();
        let now = Instant::now();
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
}

/// A worker's life: accept on its listeners, serve its inbox, stop on
/// `Shutdown`.
pub(crate) async fn run(
    index: usize,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    inbox: async_channel::Receiver<ShardMsg>,
    shared: Arc<Shared>,
    config: Arc<Config>,
) {
    let keys = Rc::new(KeyRing::new(config.keys.iter().cloned()));
    let shard = Rc::new(Shard {
        index,
        shared,
        config: RefCell::new(config),
        keys: RefCell::new(keys),
        directory: RefCell::new(Directory::default()),
        pending: RefCell::new(Slab::new()),
        sessions: RefCell::new(Slab::new()),
        live_agents: Cell::new(0),
        stats: Stats::default(),
        acceptors: RefCell::new(Vec::new()),
        next_id: Cell::new(1),
    });
    add_listeners(&shard, listeners);
    let sweeper = compio::runtime::spawn({
        let shard = shard.clone();
        async move {
            loop {
                compio::time::sleep(HEARTBEAT_SWEEP).await;
                shard.expire_silent();
            }
        }
    });

    while let Ok(msg) = inbox.recv().await {
        match msg {
            ShardMsg::Shutdown => break,
            other => handle(&shard, other),
        }
    }

    // Dropping an accept task's handle cancels it and closes its listener.
    shard.acceptors.borrow_mut().clear();
    drop(sweeper);
    shard.evict(|_| true, "shutdown");
    let give_up = Instant::now() + SHUTDOWN_GRACE;
    while shard.live_agents.get() > 0 && Instant::now() < give_up {
        compio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn handle(shard: &Rc<Shard>, msg: ShardMsg) {
    match msg {
        ShardMsg::Register(reg) => {
            compio::runtime::spawn(super::agent::serve_handed(shard.clone(), reg)).detach();
        }
        ShardMsg::Open { kid, name, sid, reply } => {
            let _ = reply.send(shard.open_local(kid, &name, sid));
        }
        ShardMsg::Join(req) => {
            compio::runtime::spawn(super::control::join_handed(shard.clone(), req)).detach();
        }
        ShardMsg::Fail { sid, kid, name } => super::control::fail_pending(shard, sid, kid, &name),
        ShardMsg::List { kid, reply } => {
            let _ = reply.send(shard.directory.borrow().list(kid));
        }
        ShardMsg::Reload(config) => reload(shard, config),
        ShardMsg::AddListeners(listeners) => add_listeners(shard, listeners),
        ShardMsg::RemoveListeners(addrs) => {
            shard.acceptors.borrow_mut().retain(|(a, _)| !addrs.contains(a));
        }
        ShardMsg::Snapshot(reply) => {
            let _ = reply.send(snapshot(shard));
        }
        ShardMsg::Shutdown => {}
    }
}

fn add_listeners(shard: &Rc<Shard>, listeners: Vec<(SocketAddr, std::net::TcpListener)>) {
    for (addr, l) in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => {
                let task = compio::runtime::spawn(accept_loop(shard.clone(), l));
                shard.acceptors.borrow_mut().push((addr, task));
            }
            Err(e) => log::error!("worker {}: cannot use listener {addr}: {e}", shard.index),
        }
    }
}

/// Applies a new configuration to this worker's live state: agents and
/// sessions of removed keys are closed, the rest keep running; a new CMPI
/// is pushed to every agent.
fn reload(shard: &Shard, config: Arc<Config>) {
    let keys = Rc::new(KeyRing::new(config.keys.iter().cloned()));
    let old_cmpi = shard.config().cmpi;
    *shard.keys.borrow_mut() = keys.clone();
    *shard.config.borrow_mut() = config.clone();

    shard.evict(|rec| !keys.contains(rec.kid), "key-removed");
    // Dropping a session's record drops its kill switch, which ends its relay.
    shard.sessions.borrow_mut().retain(|_, s| keys.contains(s.kid));
    for (_, p) in shard.pending.borrow_mut().iter_mut() {
        if !keys.contains(p.kid()) {
            p.cancel();
        }
    }
    if config.cmpi != old_cmpi {
        for rec in shard.directory.borrow().iter() {
            let _ = rec.outbox.try_send(ToAgent::Cmpi(config.cmpi.as_secs()));
        }
    }
}

fn snapshot(shard: &Shard) -> WorkerSnapshot {
    let agents = shard
        .directory
        .borrow()
        .iter()
        .map(|r| AgentRow {
            name: r.name.clone(),
            local_ip: r.local_ip.clone(),
            mac: r.mac.clone(),
            external_addr: r.external.to_string(),
            key_id: r.kid.to_string(),
            worker: shard.index,
            connected_since: rfc3339(r.connected_since),
            last_poll: rfc3339(r.last_poll),
            os: r.os.clone(),
            sessions: 0,
        })
        .collect();
    let st = &shard.stats;
    let mut stats = StatsSnapshot {
        accepted: st.accepted.get(),
        registrations: st.registrations.get(),
        handshakes: st.handshakes.get(),
        handshake_failures: st
            .handshake_failures
            .borrow()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        heartbeat_expired: st.heartbeat_expired.get(),
        sessions_total: st.sessions_total.get(),
        bytes_to_agent: st.bytes_to_agent_closed.get(),
        bytes_to_control: st.bytes_to_control_closed.get(),
        pending: shard.pending.borrow().len(),
        auth_failures: st
            .auth_failures
            .borrow()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        rejected: st.rejected.borrow().clone(),
    };
    let sessions: Vec<SessionRow> = shard
        .sessions
        .borrow()
        .iter()
        .map(|(_, s)| {
            let (up, down) = (s.counters.a_to_b.get(), s.counters.b_to_a.get());
            stats.bytes_to_agent += up;
            stats.bytes_to_control += down;
            SessionRow {
                control: s.control.clone(),
                operator: None,
                agent: s.agent.clone(),
                key_id: s.kid.to_string(),
                started: rfc3339(s.started),
                bytes_to_agent: up,
                bytes_to_control: down,
                worker: shard.index,
            }
        })
        .collect();
    WorkerSnapshot {
        worker: shard.index,
        agents,
        sessions,
        stats,
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                Stats::inc(&shard.stats.accepted);
                // An IPv4 peer on a dual-stack [::] listener arrives as
                // ::ffff:a.b.c.d; logs and the console show it as IPv4.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let Some(permit) = shard.shared.connection_permit() else {
                    Stats::bump(&shard.stats.rejected, 503);
                    compio::runtime::spawn(super::frontdoor::refuse_full(stream)).detach();
                    continue;
                };
                // Relayed interactive traffic (ssh keystrokes, 64-byte
                // pings) must not wait for Nagle; keepalive finds peers
                // that vanished without a FIN.
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_keepalive(true);
                compio::runtime::spawn(super::frontdoor::handle(shard.clone(), stream, peer, permit)).detach();
            }
            Err(e) => {
                log::warn!("worker {}: accept failed: {e}", shard.index);
                compio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
