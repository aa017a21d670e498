//! One worker's life: a pinned thread's io_uring runtime running its
//! accept loops, its heartbeat sweeper and its inbox. The top of the
//! gateway's layers: it hands accepted connections to the front door and
//! inbox messages to the flows.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpListener;

use super::core::handoff::ShardMsg;
use super::core::reply::Refusal;
use super::core::stats::{AgentRow, SessionRow, Stats, StatsSnapshot, WorkerSnapshot};
use super::flows::{agent, join};
use super::frontdoor::refuse_unread;
use super::shard::{Shard, Shared, pairing_limits};
use crate::auth::KeyRing;
use crate::config::Config;
use crate::proto::ToAgent;
use crate::timefmt::rfc3339;

/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS) before trying
/// again: retrying at once would spin a core while nothing can change.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How often a worker looks for agents past their heartbeat deadline,
/// reclaims pending slots past theirs and closes its share of the
/// per-source log windows. One sweep a second over the slabs replaces a
/// timer per agent; an agent is dropped at most this long after its
/// deadline.
const HEARTBEAT_SWEEP: Duration = Duration::from_secs(1);

/// How long a stopping worker waits for its agents to be told goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accept tasks by listen address; dropping a handle closes its listener.
type Acceptors = RefCell<Vec<(SocketAddr, compio::runtime::JoinHandle<()>)>>;

/// A worker's life: accept on its listeners, serve its inbox, stop on
/// `Shutdown`.
pub(crate) async fn run(
    index: usize,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    inbox: async_channel::Receiver<ShardMsg>,
    shared: Arc<Shared>,
    config: Arc<Config>,
) {
    let shard = Rc::new(Shard::new(index, shared, config));
    let acceptors = Acceptors::default();
    add_listeners(&shard, &acceptors, listeners);
    let sweeper = compio::runtime::spawn(sweep(shard.clone()));

    while let Ok(msg) = inbox.recv().await {
        match msg {
            ShardMsg::Shutdown => break,
            other => handle(&shard, &acceptors, other),
        }
    }

    // Dropping an accept task's handle cancels it and closes its listener.
    acceptors.borrow_mut().clear();
    drop(sweeper);
    shard.evict(|_| true, "shutdown");
    let give_up = Instant::now() + SHUTDOWN_GRACE;
    while shard.live_agents.get() > 0 && Instant::now() < give_up {
        compio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Once a second: agents past their heartbeat deadline, pending slots
/// past theirs, and this worker's share of the per-source log windows.
async fn sweep(shard: Rc<Shard>) {
    loop {
        compio::time::sleep(HEARTBEAT_SWEEP).await;
        let now = Instant::now();
        shard.expire_silent(now);
        shard.pending.borrow_mut().expire(now);
        for summary in shard.shared.sources.sweep(now, shard.index, shard.workers()) {
            shard.event(summary.event_text());
        }
    }
}

fn handle(shard: &Rc<Shard>, acceptors: &Acceptors, msg: ShardMsg) {
    match msg {
        ShardMsg::Register(reg) => {
            compio::runtime::spawn(agent::serve_handed(shard.clone(), reg)).detach();
        }
        ShardMsg::Open { kid, name, sid, reply } => {
            let _ = reply.send(shard.open_local(kid, &name, sid));
        }
        ShardMsg::Join(req) => {
            compio::runtime::spawn(join::join_handed(shard.clone(), req)).detach();
        }
        ShardMsg::Fail { sid, kid, name } => join::fail_pending(shard, sid, kid, &name),
        ShardMsg::List { kid, reply } => {
            let _ = reply.send(shard.directory.borrow().list(kid));
        }
        ShardMsg::Reload(config) => reload(shard, config),
        ShardMsg::AddListeners(listeners) => add_listeners(shard, acceptors, listeners),
        ShardMsg::RemoveListeners(addrs) => {
            acceptors.borrow_mut().retain(|(a, _)| !addrs.contains(a));
        }
        ShardMsg::Snapshot(reply) => {
            let _ = reply.send(snapshot(shard));
        }
        ShardMsg::Shutdown => {}
    }
}

fn add_listeners(shard: &Rc<Shard>, acceptors: &Acceptors, listeners: Vec<(SocketAddr, std::net::TcpListener)>) {
    for (addr, l) in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => {
                let task = compio::runtime::spawn(accept_loop(shard.clone(), l));
                acceptors.borrow_mut().push((addr, task));
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
    shard.sessions.borrow_mut().end_where(|kid| !keys.contains(kid));
    let mut pending = shard.pending.borrow_mut();
    pending.cancel_where(|kid| !keys.contains(kid));
    pending.set_limits(pairing_limits(&config));
    drop(pending);
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
        source_refusals: st
            .source_refusals
            .borrow()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        key_quota_refusals: st.key_quota_refusals.get(),
    };
    let sessions: Vec<SessionRow> = shard
        .sessions
        .borrow()
        .iter()
        .map(|s| {
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
                    compio::runtime::spawn(refuse_unread(stream, Refusal::AtConnectionLimit)).detach();
                    continue;
                };
                let unproven = match shard.shared.sources.admit(peer.ip(), Instant::now()) {
                    Ok(ticket) => ticket,
                    Err(refused) => {
                        let why = Refusal::Source(refused.why);
                        Stats::bump(&shard.stats.source_refusals, refused.why.label());
                        Stats::bump(&shard.stats.rejected, why.status());
                        if refused.log {
                            shard.event(refused.event_text());
                        }
                        compio::runtime::spawn(refuse_unread(stream, why)).detach();
                        continue;
                    }
                };
                // Relayed interactive traffic (ssh keystrokes, 64-byte
                // pings) must not wait for Nagle; keepalive finds peers
                // that vanished without a FIN.
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_keepalive(true);
                let served = super::frontdoor::handle(shard.clone(), stream, peer, permit, unproven);
                compio::runtime::spawn(served).detach();
            }
            Err(e) => {
                log::warn!("worker {}: accept failed: {e}", shard.index);
                compio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
