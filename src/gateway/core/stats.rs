//! Per-worker counters and the snapshots the admin listener reads.
//!
//! Counters are plain `Cell`s on the worker that owns them: nothing on the
//! relay path touches an atomic or a lock. The admin thread asks each
//! worker for a snapshot through its inbox.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use serde::Serialize;

/// One worker's counters since start.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Connections accepted by this worker's listeners.
    pub accepted: Cell<u64>,
    /// TLS handshakes completed.
    pub handshakes: Cell<u64>,
    /// TLS handshakes that failed, by `error` or `timeout`.
    pub handshake_failures: RefCell<BTreeMap<&'static str, u64>>,
    /// TLS agent channels handed from rustls to the gateway's own record
    /// layer (`tls::record`).
    pub tls_channels_compact: Cell<u64>,
    /// Agent registrations completed (101 sent) on this worker.
    pub registrations: Cell<u64>,
    /// Agents dropped for missing their heartbeat deadline.
    pub heartbeat_expired: Cell<u64>,
    /// Relay sessions started.
    pub sessions_total: Cell<u64>,
    /// Bytes control → agent of sessions that have ended.
    pub bytes_to_agent_closed: Cell<u64>,
    /// Bytes agent → control of sessions that have ended.
    pub bytes_to_control_closed: Cell<u64>,
    /// Failed key proofs, by reason (`AuthError::label`).
    pub auth_failures: RefCell<BTreeMap<&'static str, u64>>,
    /// Requests answered with an error status, by status code.
    pub rejected: RefCell<BTreeMap<u16, u64>>,
    /// Connections refused for their source, by reason
    /// (`SourceRefusal::label`).
    pub source_refusals: RefCell<BTreeMap<&'static str, u64>>,
    /// Agent registrations refused by their key's quota.
    pub key_quota_refusals: Cell<u64>,
    /// Agent registrations refused because their name is pinned to
    /// another machine's agent key (409).
    pub pin_refusals: Cell<u64>,
    /// Operator sign-ins, by outcome (`ok` or why not).
    pub sign_ins: RefCell<BTreeMap<&'static str, u64>>,
    /// Browses and connects refused for their ticket, by reason.
    pub ticket_refusals: RefCell<BTreeMap<&'static str, u64>>,
    /// Connects put to the approval hook, by outcome (`yes`, `no`, `busy`).
    pub approvals: RefCell<BTreeMap<&'static str, u64>>,
    /// `GET /v1/health` probes answered (agents on a secondary checking
    /// whether their primary is back).
    pub health_probes: Cell<u64>,
}

impl Stats {
    /// Adds one to a labelled counter.
    pub fn bump<K: Ord>(map: &RefCell<BTreeMap<K, u64>>, key: K) {
        *map.borrow_mut().entry(key).or_insert(0) += 1;
    }

    /// Adds one to a plain counter.
    pub fn inc(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

/// An agent as the console shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AgentRow {
    /// Its name.
    pub name: String,
    /// Its own IP address as it reported it.
    pub local_ip: String,
    /// Its MAC address as it reported it.
    pub mac: String,
    /// Where its channel comes from.
    pub external_addr: String,
    /// The name of the key it proved (never the key, nor its wire id,
    /// which is derived from the key).
    pub key: String,
    /// The worker that owns it.
    pub worker: usize,
    /// RFC 3339 UTC.
    pub connected_since: String,
    /// RFC 3339 UTC.
    pub last_poll: String,
    /// Its operating system as it reported it.
    pub os: String,
    /// Relay sessions open to it now.
    pub sessions: usize,
}

/// A relay session as the console shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SessionRow {
    /// The control's name.
    pub control: String,
    /// The operator signed in on the control (none until operators exist).
    pub operator: Option<String>,
    /// The agent's name.
    pub agent: String,
    /// The name of the key both proved.
    pub key: String,
    /// RFC 3339 UTC.
    pub started: String,
    /// Bytes control → agent so far.
    pub bytes_to_agent: u64,
    /// Bytes agent → control so far.
    pub bytes_to_control: u64,
    /// The worker relaying it.
    pub worker: usize,
}

/// Counter values of one worker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    /// Connections accepted by this worker's listeners.
    pub accepted: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// TLS handshakes that failed, by `error` or `timeout`.
    pub handshake_failures: BTreeMap<String, u64>,
    /// TLS agent channels handed to the gateway's own record layer.
    pub tls_channels_compact: u64,
    /// Agent registrations completed on this worker.
    pub registrations: u64,
    /// Agents dropped for missing their heartbeat deadline.
    pub heartbeat_expired: u64,
    /// Relay sessions started.
    pub sessions_total: u64,
    /// Bytes control → agent, ended and running sessions.
    pub bytes_to_agent: u64,
    /// Bytes agent → control, ended and running sessions.
    pub bytes_to_control: u64,
    /// Sessions waiting for their agent.
    pub pending: usize,
    /// Failed key proofs, by reason.
    pub auth_failures: BTreeMap<String, u64>,
    /// Requests answered with an error status, by status code.
    pub rejected: BTreeMap<u16, u64>,
    /// Connections refused for their source, by reason.
    pub source_refusals: BTreeMap<String, u64>,
    /// Agent registrations refused by their key's quota.
    pub key_quota_refusals: u64,
    /// Agent registrations refused as pinned to another agent key.
    pub pin_refusals: u64,
    /// Operator sign-ins, by outcome.
    pub sign_ins: BTreeMap<String, u64>,
    /// Browses and connects refused for their ticket, by reason.
    pub ticket_refusals: BTreeMap<String, u64>,
    /// Connects put to the approval hook, by outcome.
    pub approvals: BTreeMap<String, u64>,
    /// `GET /v1/health` probes answered.
    pub health_probes: u64,
}

/// Everything one worker reports to the admin listener.
#[derive(Debug, Clone, Default)]
pub struct WorkerSnapshot {
    /// The worker's index.
    pub worker: usize,
    /// Agents it owns.
    pub agents: Vec<AgentRow>,
    /// Sessions it relays.
    pub sessions: Vec<SessionRow>,
    /// Its counters.
    pub stats: StatsSnapshot,
}

/// What the admin listener gets back from one round of snapshots: the
/// workers that answered in time, and how many were asked, so an answer
/// built from fewer can say so instead of silently showing fewer agents.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The snapshots that came back within the deadline, in worker order.
    pub workers: Vec<WorkerSnapshot>,
    /// Workers asked (all of them).
    pub asked: usize,
}

impl Snapshot {
    /// Whether every worker answered.
    pub fn complete(&self) -> bool {
        self.workers.len() == self.asked
    }
}
