//! One worker: a pinned thread's io_uring runtime, its listeners, the
//! agents it owns, and the sessions whose control connected to it.
//!
//! Everything in a `Shard` is touched by its own thread only (`Rc`,
//! `RefCell`), so the hot path takes no lock. Other workers reach it through
//! its inbox: sockets handed over with the bytes already read, and small
//! requests answered over oneshot channels.

use std::cell::{Cell, RefCell};
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
use super::directory::Directory;
use crate::auth::{KeyId, KeyRing};
use crate::config::Config;
use crate::proto::{AgentSummary, SessionId, ToAgent};

/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS) before trying
/// again: retrying at once would spin a core while nothing can change.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How long a stopping worker waits for its agents to be told goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A socket moving from the worker that accepted it to the one that will
/// serve it: the descriptor and the bytes read past the request head.
pub(crate) struct Handoff {
    fd: OwnedFd,
    /// The peer's address, for logs and the console.
    pub peer: SocketAddr,
    /// Bytes already read after the request head; delivered first.
    pub early: Vec<u8>,
}

impl Handoff {
    /// Detaches `stream` from this worker's runtime.
    pub fn new(stream: TcpStream, peer: SocketAddr, early: Vec<u8>) -> io::Result<Self> {
        // A duplicate descriptor outlives the runtime-bound original, which
        // is closed when `stream` drops at the end of this function.
        let fd = stream.as_fd().try_clone_to_owned()?;
        Ok(Self { fd, peer, early })
    }

    /// Attaches the socket to the current worker's runtime.
    pub fn into_stream(self) -> io::Result<(TcpStream, SocketAddr, Vec<u8>)> {
        let stream = TcpStream::from_std(std::net::TcpStream::from(self.fd))?;
        Ok((stream, self.peer, self.early))
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
    listeners: Vec<std::net::TcpListener>,
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
        next_id: Cell::new(1),
    });

    let mut acceptors = Vec::with_capacity(listeners.len());
    for l in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => acceptors.push(compio::runtime::spawn(accept_loop(shard.clone(), l))),
            Err(e) => log::error!("worker {index}: cannot use listener: {e}"),
        }
    }

    while let Ok(msg) = inbox.recv().await {
        match msg {
            ShardMsg::Shutdown => break,
            other => handle(&shard, other),
        }
    }

    // Dropping an accept task's handle cancels it and closes its listener.
    drop(acceptors);
    let goodbyes = shard.directory.borrow_mut().drain();
    for rec in goodbyes {
        let _ = rec.outbox.try_send(ToAgent::Bye("shutdown".into()));
        shard.event(format!("Client {} Disconnected", crate::eventlog::sanitize(&rec.name)));
    }
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
        ShardMsg::Shutdown => {}
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Relayed interactive traffic (ssh keystrokes, 64-byte
                // pings) must not wait for Nagle; keepalive finds peers
                // that vanished without a FIN.
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_keepalive(true);
                compio::runtime::spawn(super::frontdoor::handle(shard.clone(), stream, peer)).detach();
            }
            Err(e) => {
                log::warn!("worker {}: accept failed: {e}", shard.index);
                compio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
