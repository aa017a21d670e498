//! The gateway: listeners, workers, and what they share.
//!
//! `start` binds every listen address on the calling thread (so a bad
//! address is refused before anything runs), then starts one worker per
//! core. Each worker is a pinned thread with its own io_uring runtime and
//! its own SO_REUSEPORT listener on every address; the kernel spreads new
//! connections across them. See docs/ARCHITECTURE.md for the hand-offs.

//!
//! # Layers
//! Each layer uses only the ones below it (docs/ARCHITECTURE.md draws it):
//! - this file (lifecycle: start, reload, snapshot, shutdown),
//!   `listeners` and `worker` (the loop, accept, inbox);
//! - `frontdoor`: sniff TLS or plain, handshake, read the head, route;
//! - `flows`: agent registration and channel, control browse and
//!   connect, the agent's join;
//! - `shard`: the state those flows run against;
//! - `core`, with no I/O: directory, pairing, sessions, hand-off
//!   messages, replies, permits and quotas, per-source limits, the
//!   drain's counts and gauges, counters.

mod cluster;
mod core;
mod flows;
mod frontdoor;
mod heap;
mod listeners;
mod pins;
mod shard;
mod state;
mod worker;

pub use self::cluster::{ClusterRow, ClusterStatus};
pub use self::core::signin_history::{SIGNIN_HISTORY, SignInEntry};
pub use self::core::stats::{AgentRow, SessionRow, Snapshot, StatsSnapshot, WorkerSnapshot};
/// The front door's check of a parsed head, for the fuzz entry points.
pub(crate) use self::frontdoor::servable;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use self::core::drain::{DrainEnd, DrainStart};
use self::core::handoff::ShardMsg;
use self::core::permit::{Counter, Licence};
use self::core::signins::SignIns;
use self::core::sources::Sources;
use self::listeners::{allowed_cpus, bind_all};
use self::pins::PinStore;
use self::shard::{Shared, SignInKeys, source_limits};
use crate::audit::Audit;
use crate::auth::{BootId, NonceCache};
use crate::config::Config;
use crate::eventlog::EventLog;

/// Messages queued to one worker from the others. Each is a connection
/// hand-off or a short request; 1024 covers a burst of registrations while
/// bounding what a stalled worker can make the others hold.
const INBOX_CAPACITY: usize = 1024;

/// Why the gateway did not start.
#[derive(Debug)]
pub enum StartError {
    /// A listen address could not be bound.
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        error: io::Error,
    },
    /// A worker's io_uring runtime could not be built.
    Runtime(io::Error),
    /// The state folder, its ticket key or its name pins could not be
    /// made or read.
    State(String),
    /// The audit file could not be opened.
    Audit(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            StartError::Runtime(e) => write!(f, "cannot start an io_uring event loop: {e}"),
            StartError::State(why) => f.write_str(why),
            StartError::Audit(e) => write!(f, "audit trail: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// How long the admin thread waits for the workers' snapshots. A worker
/// answers between two events of its loop; seconds mean it is wedged.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    /// The running configuration and, per configured listen address, the
    /// address actually bound (port 0 resolved). Reload swaps both.
    state: Mutex<Running>,
    /// The workers; each ends with its drain's counts.
    threads: Mutex<Vec<JoinHandle<DrainEnd>>>,
    /// The side thread that gives freed heap back; it ends with the gateway.
    _trimmer: heap::Trimmer,
}

/// The running configuration, and each configured listen address paired
/// with the address actually bound.
type Running = (Arc<Config>, Vec<(SocketAddr, SocketAddr)>);

/// What a reload did, for the caller to report.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Things that could not be applied live, one line each.
    pub warnings: Vec<String>,
}

impl Gateway {
    /// Binds the configured addresses and starts the workers.
    pub fn start(config: Config, events: EventLog) -> Result<Gateway, StartError> {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.workers
        };
        let signin_keys = OnceLock::new();
        if !config.operators.is_empty() {
            let key = state::ticket_key(&config.state_dir).map_err(StartError::State)?;
            let _ = signin_keys.set(SignInKeys::new(&key));
        }
        let pins = OnceLock::new();
        if config.auth.pin_agent_names {
            let store = PinStore::open(&config.state_dir, config.limits.max_pins).map_err(StartError::State)?;
            let _ = pins.set(store);
        }
        let audit = Audit::start(config.audit.clone()).map_err(StartError::Audit)?;
        let (listeners, addrs) = bind_all(&config.listen, workers)?;

        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| async_channel::bounded(INBOX_CAPACITY)).unzip();
        let cap = connection_cap(config.limits.max_connections);
        let boot = BootId::random();
        let cluster = config.cluster.as_ref().map(|c| {
            // Unless given, the first listen address as bound (the config
            // check refused an unspecified one).
            let advertise = c.advertise.clone().unwrap_or_else(|| {
                let scheme = if config.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", addrs[0])
            });
            cluster::Cluster::start(c, advertise, boot.to_string(), senders.clone(), events.clone())
        });
        let shared = Arc::new(Shared {
            inboxes: senders,
            licence: Licence::default(),
            connections: Counter::default(),
            max_connections: AtomicUsize::new(cap),
            sources: Arc::new(Sources::new(source_limits(&config.limits, cap))),
            nonces: NonceCache::default(),
            boot,
            events,
            signin_keys,
            signins: SignIns::default(),
            pins,
            approver: Arc::default(),
            audit,
            signin_history: Mutex::default(),
            heap: Arc::default(),
            cluster,
        });

        if let Some(cluster) = &shared.cluster {
            // Another gateway's `agents forget` releases the name here too.
            let weak = Arc::downgrade(&shared);
            cluster.on_unpin(Box::new(move |key, name| {
                let Some(shared) = weak.upgrade() else { return };
                let Some(store) = shared.pins.get() else { return };
                match store.forget(name, key) {
                    Ok(keys) => {
                        for k in keys {
                            shared.events.event(format!(
                                "Client {} (key {k}): name pin released by the administrator of another gateway",
                                crate::eventlog::sanitize(name)
                            ));
                        }
                    }
                    Err(e) => log::warn!("cannot release the pin of {}: {e}", crate::eventlog::sanitize(name)),
                }
            }));
        }
        let cpus = allowed_cpus();
        let config = Arc::new(config);
        let bound: Vec<(SocketAddr, SocketAddr)> = config.listen.iter().copied().zip(addrs.iter().copied()).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(workers);
        for (index, (listeners, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let shared = shared.clone();
            let config = config.clone();
            let ready = ready_tx.clone();
            let cpu = cpus.get(index % cpus.len().max(1)).copied();
            let thread = std::thread::Builder::new()
                .name(format!("ringway-w{index}"))
                .spawn(move || {
                    let mut builder = compio::runtime::RuntimeBuilder::new();
                    if let Some(cpu) = cpu {
                        builder.thread_affinity(HashSet::from([cpu]));
                    }
                    let runtime = match builder.build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return DrainEnd::default();
                        }
                    };
                    // Ready once its listeners and their spare descriptors
                    // are set up, so "Listening on port" means accepting.
                    let ready = move || {
                        let _ = ready.send(Ok(()));
                    };
                    runtime.block_on(worker::run(index, listeners, inbox, shared, config, ready))
                })
                .map_err(StartError::Runtime)?;
            threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(StartError::Runtime(e)),
                Err(_) => return Err(StartError::Runtime(io::Error::other("a worker thread died at start"))),
            }
        }
        for addr in &addrs {
            shared.events.event(format!("Listening on port {addr}"));
        }
        let trimmer = heap::spawn(shared.heap.clone());
        Ok(Gateway {
            shared,
            state: Mutex::new((config, bound)),
            threads: Mutex::new(threads),
            _trimmer: trimmer,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Running> {
        // Poisoned only if a reload panicked; the state is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The addresses actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.state().1.iter().map(|&(_, bound)| bound).collect()
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.state().0.clone()
    }

    /// Agents connected across all workers.
    pub fn agents_connected(&self) -> usize {
        self.shared.licence.used()
    }

    /// Times freed heap went back to the kernel, and the microseconds
    /// that took (see `heap`).
    pub fn heap_trims(&self) -> (u64, u64) {
        self.shared.heap.trims()
    }

    /// Starts (`on`) or stops a drain of this cluster gateway: what it
    /// did, or why it cannot.
    pub fn drain(&self, on: bool) -> Result<String, String> {
        match &self.shared.cluster {
            None => Err("this gateway is not in a cluster ([cluster] is not configured): nothing to drain to".into()),
            Some(c) => Ok(c.drain(on, self.shared.licence.agents.used() as u64)),
        }
    }

    /// The cluster as this gateway sees it, if `[cluster]` is configured.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.shared.cluster.as_ref().map(|c| c.status())
    }

    /// Connections open now, and the cap.
    pub fn connections(&self) -> (usize, usize) {
        (
            self.shared.connections.used(),
            self.shared.max_connections.load(Ordering::Acquire),
        )
    }

    /// Applies a checked configuration to the running gateway: keys,
    /// CMPI, licence, limits and the event log apply to live state; new
    /// listen addresses are bound before removed ones close, and a failed
    /// bind keeps the old addresses. Established agents and sessions are
    /// kept, except those of removed keys.
    pub fn reload(&self, mut new: Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut state = self.state();
        let (old, bound) = (&state.0, &state.1);
        let events = &self.shared.events;
        events.event("Reloading configuration");

        if new.workers != old.workers {
            report.warnings.push(format!(
                "workers = {} needs a restart; {} keep running",
                new.workers,
                self.shared.workers()
            ));
            new.workers = old.workers;
        }
        if new.cluster != old.cluster {
            report
                .warnings
                .push("changing [cluster] needs a restart; the running cluster settings stay".into());
            new.cluster = old.cluster.clone();
        }
        let old_ids: std::collections::BTreeSet<_> = old.keys.iter().map(|k| k.id()).collect();
        let new_ids: std::collections::BTreeSet<_> = new.keys.iter().map(|k| k.id()).collect();
        if old_ids != new_ids {
            events.event("Reloading Gateway Keys");
        }

        self.reload_operators(old, &new, &mut report);
        self.reload_pins(&new, &mut report);

        let added: Vec<SocketAddr> = new.listen.iter().filter(|a| !old.listen.contains(a)).copied().collect();
        let removed: Vec<(SocketAddr, SocketAddr)> =
            bound.iter().filter(|(a, _)| !new.listen.contains(a)).copied().collect();
        let mut new_bound = bound.clone();
        if !added.is_empty() || !removed.is_empty() {
            match bind_all(&added, self.shared.workers()) {
                Err(e) => {
                    if let StartError::Bind { addr, .. } = &e {
                        events.event(format!("Failed to bind to listening port {addr} - {e}"));
                    }
                    report.warnings.push(format!("{e}; the old listen addresses stay"));
                    new.listen = old.listen.clone();
                }
                Ok((per_worker, addrs)) => {
                    for (inbox, listeners) in self.shared.inboxes.iter().zip(per_worker) {
                        let _ = inbox.send_blocking(ShardMsg::AddListeners(listeners));
                    }
                    let gone: Vec<SocketAddr> = removed.iter().map(|&(_, b)| b).collect();
                    for inbox in &self.shared.inboxes {
                        let _ = inbox.send_blocking(ShardMsg::RemoveListeners(gone.clone()));
                    }
                    new_bound.retain(|(a, _)| new.listen.contains(a));
                    new_bound.extend(added.iter().copied().zip(addrs.iter().copied()));
                    events.event(
                        "Listen port has changed. Established clients and sessions are kept; new connections use the new ports",
                    );
                    for addr in &addrs {
                        events.event(format!("Listening on port {addr}"));
                    }
                    for (_, addr) in &removed {
                        events.event(format!("Stopped listening on port {addr}"));
                    }
                }
            }
        }

        if new.audit != old.audit
            && let Err(e) = self.shared.audit.reconfigure(new.audit.clone())
        {
            report.warnings.push(format!("audit settings not applied: {e}"));
        }

        if new.log != old.log {
            match &new.log {
                Some(log) => {
                    if let Err(e) = events.reconfigure(log.clone()) {
                        report.warnings.push(format!("event log settings not applied: {e}"));
                    }
                }
                None => report.warnings.push("removing [log] needs a restart".into()),
            }
        }

        let cap = connection_cap(new.limits.max_connections);
        self.shared.max_connections.store(cap, Ordering::Release);
        self.shared.sources.set_limits(source_limits(&new.limits, cap));
        let new = Arc::new(new);
        for inbox in &self.shared.inboxes {
            let _ = inbox.send_blocking(ShardMsg::Reload(new.clone()));
        }
        *state = (new, new_bound);
        drop(state);
        // Inboxes are served in order, so a worker that answers a snapshot
        // has applied the reload: once all have, say so.
        let answered = self.snapshot().workers.len();
        if answered == self.shared.workers() {
            events.event("Configuration reloaded");
        } else {
            report.warnings.push(format!(
                "only {answered} of {} workers confirmed the reload",
                self.shared.workers()
            ));
        }
        report
    }

    /// The pins' part of a reload: the store opened if pinning is turned
    /// on for the first time, and a new `max_pins` applied.
    fn reload_pins(&self, new: &Config, report: &mut ReloadReport) {
        if new.auth.pin_agent_names && self.shared.pins.get().is_none() {
            match PinStore::open(&new.state_dir, new.limits.max_pins) {
                Ok(store) => {
                    let _ = self.shared.pins.set(store);
                }
                Err(e) => report
                    .warnings
                    .push(format!("{e}; agents cannot register until it is fixed")),
            }
        }
        if let Some(store) = self.shared.pins.get() {
            store.set_max(new.limits.max_pins);
        }
    }

    /// Releases the pin of agent `name` under the gateway key named
    /// `key`, or under every key: a line for the administrator, or why
    /// not. The event log records each pin released.
    pub fn forget_pin(&self, name: &str, key: Option<&str>) -> Result<String, String> {
        let store = self
            .shared
            .pins
            .get()
            .ok_or("this gateway keeps no agent name pins ([auth] pin_agent_names = false)")?;
        let keys = store.forget(name, key)?;
        let shown = crate::eventlog::sanitize(name);
        // In a cluster the name is released on every gateway: Redis holds
        // the cluster's pins, under each key's id.
        if let Some(cluster) = &self.shared.cluster {
            let config = self.config();
            let kids: Vec<crate::auth::KeyId> = config
                .keys
                .iter()
                .filter(|k| key.is_none_or(|want| k.name() == want))
                .map(|k| k.id())
                .collect();
            let released = cluster.forget_pins(&kids, key, name)?;
            if keys.is_empty() && released > 0 {
                self.shared.events.event(format!(
                    "Client {shown}: name pin released cluster-wide by the administrator"
                ));
                return Ok(format!("released the pin of client {shown} in the cluster"));
            }
        }
        if keys.is_empty() {
            return Err(match key {
                Some(k) => format!("no pin for client {shown} with key {}", crate::eventlog::sanitize(k)),
                None => format!("no pin for client {shown}"),
            });
        }
        for k in &keys {
            self.shared.events.event(format!(
                "Client {shown} (key {k}): name pin released by the administrator"
            ));
        }
        Ok(format!(
            "released the pin of client {shown} (key {})",
            keys.join(", key ")
        ))
    }

    /// The operators' part of a reload: the ticket key made if operators
    /// appear for the first time; the sign-in records of removed
    /// operators dropped; a line for each operator removed or changed,
    /// whose tickets no longer admit and whose sessions the workers end.
    fn reload_operators(&self, old: &Config, new: &Config, report: &mut ReloadReport) {
        if !new.operators.is_empty() && self.shared.signin_keys.get().is_none() {
            match state::ticket_key(&new.state_dir) {
                Ok(key) => {
                    let _ = self.shared.signin_keys.set(SignInKeys::new(&key));
                }
                Err(e) => report
                    .warnings
                    .push(format!("{e}; operators cannot sign in until it is fixed")),
            }
        }
        self.shared
            .signins
            .retain(|name| new.operators.iter().any(|o| o.name == name));
        for op in &old.operators {
            let what = match new.operators.iter().find(|o| o.name == op.name) {
                None => "was removed",
                Some(o) if o.generation != op.generation => "was changed",
                Some(_) => continue,
            };
            self.shared.events.event(format!(
                "Operator {} {what}: its tickets are revoked and its sessions are ended",
                op.name
            ));
        }
    }

    /// The latest operator sign-ins, newest first (at most
    /// [`SIGNIN_HISTORY`]).
    pub fn signins(&self) -> Vec<SignInEntry> {
        self.shared
            .signin_history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .newest_first()
    }

    /// Every worker's agents, sessions and counters. All workers are asked
    /// first and then awaited under one deadline (2 s), so wedged workers
    /// cost it once, not once each; one that does not answer in time is
    /// left out, and [`Snapshot::asked`] says so.
    pub fn snapshot(&self) -> Snapshot {
        let replies: Vec<_> = self
            .shared
            .inboxes
            .iter()
            .filter_map(|inbox| {
                let (tx, rx) = std::sync::mpsc::channel();
                // Never wait for room: a worker whose inbox is full is too
                // far behind to answer in time, and counts as not answering.
                inbox.try_send(ShardMsg::Snapshot(tx)).is_ok().then_some(rx)
            })
            .collect();
        let deadline = std::time::Instant::now() + SNAPSHOT_TIMEOUT;
        let workers = replies
            .into_iter()
            .filter_map(|rx| {
                rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                    .ok()
            })
            .collect();
        Snapshot {
            workers,
            asked: self.shared.workers(),
        }
    }

    /// Starts a graceful shutdown: every worker stops accepting, tells its
    /// agents `BYE shutdown`, answers waiting sessions 503 and lets running
    /// sessions finish for `[limits] shutdown_grace_secs`; logs the counts.
    /// Returns once every worker has started (or two seconds passed); see
    /// [`Gateway::wait_stopped`] and [`Gateway::cut_short`].
    pub fn begin_shutdown(&self) {
        let grace = self.config().limits.shutdown_grace;
        let (reply, counts) = std::sync::mpsc::channel();
        for inbox in &self.shared.inboxes {
            let msg = ShardMsg::Shutdown {
                grace,
                reply: reply.clone(),
            };
            let _ = inbox.send_blocking(msg);
        }
        drop(reply);
        let mut total = DrainStart::default();
        for _ in 0..self.shared.workers() {
            match counts.recv_timeout(SNAPSHOT_TIMEOUT) {
                Ok(started) => total += started,
                Err(_) => break,
            }
        }
        self.shared.events.event(total.event_text(grace));
    }

    /// Ends a drain now (a second SIGTERM or SIGINT): what is still
    /// running is closed.
    pub fn cut_short(&self) {
        for inbox in &self.shared.inboxes {
            // A worker already done has dropped its inbox: nothing to do.
            let _ = inbox.send_blocking(ShardMsg::CutShort);
        }
    }

    /// Waits for every worker to finish its drain, then logs how it went:
    /// as soon as the last session ends, or when the grace is over.
    pub fn wait_stopped(&self) {
        let grace = self.config().limits.shutdown_grace;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut total = DrainEnd::default();
        for t in threads {
            // A worker that panicked has nothing left to count.
            total += t.join().unwrap_or_default();
        }
        // Once the agents have gone: the lease and what is left of this
        // gateway's records leave Redis.
        if let Some(cluster) = &self.shared.cluster {
            cluster.stop();
        }
        self.shared.events.event(total.event_text(grace));
    }

    /// A whole graceful shutdown: [`Gateway::begin_shutdown`], then
    /// [`Gateway::wait_stopped`].
    pub fn shutdown(&self) {
        self.begin_shutdown();
        self.wait_stopped();
    }
}

/// Descriptors kept back from the connection cap for listeners, io_uring
/// rings, the event log, the admin listener and the libraries' own files.
const FD_RESERVE: usize = 256;

/// The connection cap: as configured, or the open-file limit less
/// [`FD_RESERVE`], so the gateway refuses clearly before the kernel does.
fn connection_cap(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE)
        .max(64)
}
