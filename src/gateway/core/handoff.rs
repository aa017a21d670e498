//! What workers send each other: connections moving to the worker that
//! will serve them, and small requests answered over oneshot channels.
//! Plain data: attaching a connection to a runtime is the flows' job
//! (`flows::handover`).

use crate::auth::agentkey::AgentPublicKey;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use super::drain::DrainStart;
use super::permit::Permit;
use super::stats::WorkerSnapshot;
use crate::auth::KeyId;
use crate::config::Config;
use crate::conn::Conn;
use crate::proto::{AgentSummary, SessionId};

/// A connection detached from the worker that accepted it: the
/// descriptor, its TLS state if any, and the bytes read past the request
/// head.
pub(crate) struct Handoff {
    /// A duplicate of the accepted socket, owned by no runtime.
    pub fd: OwnedFd,
    /// TLS state (holding decrypted data not yet read) and ciphertext not
    /// yet given to it.
    pub tls: Option<(Box<rustls::Connection>, Vec<u8>)>,
    /// The peer's address, for logs and the console.
    pub peer: SocketAddr,
    /// Bytes already read after the request head; delivered first.
    pub early: Vec<u8>,
}

/// A registration on its way to the agent's owner.
pub(crate) struct Registration {
    /// The agent's socket and the bytes it sent after its head.
    pub handoff: Handoff,
    /// The key it proved.
    pub kid: KeyId,
    /// Its checked name.
    pub name: String,
    /// Its MAC address as it reported it (sanitised).
    pub mac: String,
    /// Its own IP address as it reported it.
    pub local_ip: String,
    /// Its operating system as it reported it.
    pub os: String,
    /// Its agent key, checked against the request's proof; `None` only
    /// while names are not pinned (an agent older than agent keys).
    pub agent_key: Option<AgentPublicKey>,
    /// Where it came from, if it moved (`Ringway-Previous`, checked):
    /// `failover from <gateway>` or `failback from <gateway>`, for the
    /// arrival's event line.
    pub previous: Option<String>,
    /// Its share of the connection cap.
    pub permit: Permit,
}

/// An agent's data connection on its way to the control's worker.
pub(crate) struct JoinRequest {
    /// The data connection.
    pub handoff: Handoff,
    /// The session it joins; its `worker` names the receiving worker.
    pub sid: SessionId,
    /// The key the agent proved.
    pub kid: KeyId,
    /// The agent's name.
    pub agent: String,
    /// Its share of the connection cap.
    pub permit: Permit,
}

/// The agent's data connection, delivered to the waiting control.
pub(crate) struct Joined {
    /// The data connection, attached to the control's worker.
    pub stream: Conn,
    /// Bytes it sent after its head.
    pub early: Vec<u8>,
    /// Its share of the connection cap, held as long as the relay runs.
    pub permit: Permit,
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
        /// The key the control proved.
        kid: KeyId,
        /// The agent's name.
        name: String,
        /// The session to open.
        sid: SessionId,
        /// Where the answer goes.
        reply: oneshot::Sender<OpenResult>,
    },
    /// An agent's data connection for a session whose control is here.
    Join(Box<JoinRequest>),
    /// The agent cannot serve session `sid`.
    Fail {
        /// The session.
        sid: SessionId,
        /// The agent's key.
        kid: KeyId,
        /// The agent's name.
        name: String,
    },
    /// Drop registration `reg` of agent (kid, name): a newer one holds
    /// the name on gateway `by` of the cluster.
    Evict {
        /// The agent's key.
        kid: KeyId,
        /// Its name.
        name: String,
        /// The cluster registration that lost the name.
        reg: u64,
        /// The gateway that has it now.
        by: String,
    },
    /// A drain's second: tell up to `count` agents to move away.
    MoveAway {
        /// How many.
        count: usize,
    },
    /// The agents of key `kid` that this worker owns.
    List {
        /// The key.
        kid: KeyId,
        /// Where the list goes.
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
    /// Drain for a shutdown: close the listeners, tell agents goodbye,
    /// refuse waiting sessions, and give running ones `grace` to finish;
    /// the counts go to `reply`.
    Shutdown {
        /// How long running sessions may go on.
        grace: Duration,
        /// Where the drain's starting counts go.
        reply: std::sync::mpsc::Sender<DrainStart>,
    },
    /// End a drain now (a second signal): close what is left.
    CutShort,
}
