//! One worker's life: a pinned thread's io_uring runtime running its
//! accept loops, its heartbeat sweeper and its inbox, until a shutdown's
//! drain is over. The top of the gateway's layers: it hands accepted
//! connections to the front door and inbox messages to the flows.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpListener;
use futures_util::future::{Either, select};

use super::core::drain::{DrainEnd, DrainStart};
use super::core::handoff::{Handoff, ShardMsg};
use super::core::reply::Refusal;
use super::core::stats::{AgentRow, SessionRow, Stats, StatsSnapshot, WorkerSnapshot};
use super::flows::answer::reject;
use super::flows::handover::attach;
use super::flows::{agent, join};
use super::frontdoor::refuse_unread;
use super::shard::{Shard, Shared, pairing_limits};
use crate::auth::{KeyRing, unix_now};
use crate::config::Config;
use crate::eventlog::sanitize;
use crate::proto::ToAgent;
use crate::timefmt::rfc3339;

/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS) before trying
/// again: retrying at once would spin a core while nothing can change.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How often a run of failed accepts is logged. At the open-file limit
/// every accept fails, 20 times a second per listener at the pause above;
/// a line each would flood stderr and the journal while saying nothing
/// new, so the first is logged and the rest are counted, with one line
/// per interval and one when accepting works again.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How often a worker looks for agents past their heartbeat deadline,
/// reclaims pending slots past theirs and drops its share of the source
/// table's idle entries. One sweep a second over the slabs replaces a
/// timer per agent; an agent is dropped at most this long after its
/// deadline.
const HEARTBEAT_SWEEP: Duration = Duration::from_secs(1);

/// Once a drain is over, how long the sessions it ends and the agents
/// still writing their `BYE` get to close before the runtime drops them:
/// a closing socket needs a poll or two, not seconds.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One listener's accept task.
struct Acceptor {
    /// The address it serves.
    addr: SocketAddr,
    /// Dropping it cancels the task, which closes the listener once the
    /// cancelled accept has completed.
    task: compio::runtime::JoinHandle<()>,
    /// A second descriptor of the same socket, to stop it listening at
    /// once (see [`Acceptor::close`]).
    socket: std::net::TcpListener,
}

impl Acceptor {
    /// Stops listening now and ends the task. Shutting a listening socket
    /// down closes it to new connections there and then (the kernel
    /// refuses them, and resets those queued and not yet accepted),
    /// whereas the close that follows the task's end waits for the
    /// runtime to finish cancelling its accept.
    fn close(self) {
        if let Err(e) = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Both) {
            log::debug!("shutting down listener {}: {e}", self.addr);
        }
        drop(self.task);
    }
}

/// This worker's accept tasks.
type Acceptors = RefCell<Vec<Acceptor>>;

/// A worker's life: accept on its listeners and serve its inbox; on
/// `Shutdown`, drain (see [`start_drain`]) until its connections are gone,
/// the grace is over or `CutShort` comes; then close the rest.
pub(crate) async fn run(
    index: usize,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    inbox: async_channel::Receiver<ShardMsg>,
    shared: Arc<Shared>,
    config: Arc<Config>,
    ready: impl FnOnce(),
) -> DrainEnd {
    let shard = Rc::new(Shard::new(index, shared, config));
    let acceptors = Acceptors::default();
    add_listeners(&shard, &acceptors, listeners);
    ready();
    let sweeper = compio::runtime::spawn(sweep(shard.clone()));

    let mut grace_until: Option<Instant> = None;
    let mut running = 0;
    let mut cut_short = false;
    loop {
        let msg = match grace_until {
            None => inbox.recv().await.ok(),
            // The inbox is still served while draining: other workers'
            // hand-offs, the admin's snapshots.
            Some(deadline) => {
                let next = pin!(inbox.recv());
                let over = pin!(compio::time::timeout_at(deadline, shard.idle()));
                match select(next, over).await {
                    Either::Left((msg, _)) => msg.ok(),
                    Either::Right(_) => None,
                }
            }
        };
        match msg {
            None => break,
            // Once is enough: a second request changes nothing.
            Some(ShardMsg::Shutdown { reply, .. }) if grace_until.is_some() => {
                let _ = reply.send(DrainStart::default());
            }
            Some(ShardMsg::Shutdown { grace, reply }) => {
                let started = start_drain(&shard, &acceptors);
                running = started.sessions;
                let _ = reply.send(started);
                grace_until = Some(Instant::now() + grace);
            }
            Some(ShardMsg::CutShort) => {
                cut_short = true;
                break;
            }
            Some(other) => handle(&shard, &acceptors, other),
        }
    }

    let cut = close_the_rest(&shard).await;
    drop(sweeper);
    DrainEnd {
        finished: running.saturating_sub(cut),
        cut,
        cut_short: cut_short && cut > 0,
    }
}

/// Once a second: agents past their heartbeat deadline, pending slots
/// past theirs, and this worker's share of the source table's idle
/// entries.
async fn sweep(shard: Rc<Shard>) {
    loop {
        compio::time::sleep(HEARTBEAT_SWEEP).await;
        let now = Instant::now();
        shard.expire_silent(now);
        shard.pending.borrow_mut().expire(now);
        shard.shared.sources.sweep(now, shard.index, shard.workers());
    }
}

/// Starts this worker's drain: connections not yet routed are dropped and
/// new requests refused (503), the listeners close, every agent is told
/// `BYE shutdown` and every waiting session is refused (503); running
/// sessions go on.
fn start_drain(shard: &Shard, acceptors: &Acceptors) -> DrainStart {
    shard.draining.start();
    for acceptor in std::mem::take(&mut *acceptors.borrow_mut()) {
        acceptor.close();
    }
    let agents = shard.directory.borrow().iter().count();
    shard.evict(|_| true, "shutdown");
    let pending = shard.pending.borrow_mut().cancel_where(|_| true);
    DrainStart {
        agents,
        pending,
        sessions: shard.sessions.borrow().len(),
    }
}

/// Ends the sessions still running (each logs its end), tells any agent
/// that registered late goodbye, and gives them all [`CLOSE_WAIT`] to
/// close; returns how many sessions were cut.
async fn close_the_rest(shard: &Shard) -> usize {
    let cut = shard.sessions.borrow_mut().end_where(|_| true);
    shard.evict(|_| true, "shutdown");
    let _ = compio::time::timeout(CLOSE_WAIT, shard.idle()).await;
    cut
}

/// Answers a connection handed over during a drain with 503.
async fn refuse_handed(shard: Rc<Shard>, handoff: Handoff) {
    let _served = shard.connections.enter();
    match attach(handoff) {
        Ok((conn, _, _)) => reject(&shard, &conn, Refusal::ShuttingDown).await,
        Err(e) => log::debug!("cannot adopt a socket to refuse it: {e}"),
    }
}

fn handle(shard: &Rc<Shard>, acceptors: &Acceptors, msg: ShardMsg) {
    let draining = shard.draining.is_started();
    match msg {
        ShardMsg::Register(reg) if draining => {
            compio::runtime::spawn(refuse_handed(shard.clone(), reg.handoff)).detach();
        }
        ShardMsg::Join(req) if draining => {
            compio::runtime::spawn(refuse_handed(shard.clone(), req.handoff)).detach();
        }
        // A reload during a drain must not open what the drain closed.
        ShardMsg::AddListeners(_) if draining => {}
        ShardMsg::Register(reg) => {
            compio::runtime::spawn(agent::serve_handed(shard.clone(), reg)).detach();
        }
        ShardMsg::Open { kid, name, sid, reply } => {
            let _ = reply.send(shard.open_local(kid, &name, sid));
        }
        ShardMsg::Join(req) => {
            compio::runtime::spawn(join::join_handed(shard.clone(), req)).detach();
        }
        ShardMsg::Fail { sid, kid, name } => shard.fail_waiter(sid, kid, &name),
        ShardMsg::Evict { kid, name, reg, by } => {
            let gone = shard.directory.borrow_mut().remove_cluster_reg(kid, &name, reg);
            if let Some(rec) = gone {
                let _ = rec.outbox.try_send(ToAgent::Bye("replaced".into()));
                shard.event(format!(
                    "Client {} replaced: a new connection came to gateway {} (old one from {} closed)",
                    sanitize(&rec.name),
                    sanitize(&by),
                    rec.external
                ));
            }
        }
        ShardMsg::MoveAway { count } => {
            let ids: Vec<u64> = shard.directory.borrow().iter().take(count).map(|r| r.id).collect();
            let gone = shard.directory.borrow_mut().remove_where(|r| ids.contains(&r.id));
            for rec in gone {
                let _ = rec.outbox.try_send(ToAgent::Bye("moved".into()));
                shard.event(format!(
                    "Client {} Disconnected (moved: gateway draining)",
                    sanitize(&rec.name)
                ));
            }
            if let Some(c) = &shard.shared.cluster {
                c.counts
                    .drained
                    .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        ShardMsg::List { kid, reply } => {
            let _ = reply.send(shard.directory.borrow().list(kid));
        }
        ShardMsg::Reload(config) => reload(shard, config),
        ShardMsg::AddListeners(listeners) => add_listeners(shard, acceptors, listeners),
        ShardMsg::RemoveListeners(addrs) => {
            let all = std::mem::take(&mut *acceptors.borrow_mut());
            let (gone, kept): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| addrs.contains(&a.addr));
            *acceptors.borrow_mut() = kept;
            gone.into_iter().for_each(Acceptor::close);
        }
        ShardMsg::Snapshot(reply) => {
            let _ = reply.send(snapshot(shard));
        }
        // Served by `run`.
        ShardMsg::Shutdown { .. } | ShardMsg::CutShort => {}
    }
}

fn add_listeners(shard: &Rc<Shard>, acceptors: &Acceptors, listeners: Vec<(SocketAddr, std::net::TcpListener)>) {
    for (addr, l) in listeners {
        match l.try_clone().and_then(|socket| Ok((socket, TcpListener::from_std(l)?))) {
            Ok((socket, l)) => {
                // The spare descriptor is taken here, before the worker
                // reports ready, so the gateway's descriptors are all open
                // once "Listening on port" is logged.
                let task = compio::runtime::spawn(accept_loop(shard.clone(), l, SpareFd::open()));
                acceptors.borrow_mut().push(Acceptor { addr, task, socket });
            }
            Err(e) => log::error!("worker {}: cannot use listener {addr}: {e}", shard.index),
        }
    }
}

/// Applies a new configuration to this worker's live state: agents and
/// sessions of removed keys are closed, the rest keep running; a new CMPI
/// is pushed to every agent.
fn reload(shard: &Shard, config: Arc<Config>) {
    let keys = Rc::new(KeyRing::new(&config.keys, &shard.shared.nonces, unix_now()));
    let old_cmpi = shard.config().cmpi;
    *shard.keys.borrow_mut() = keys.clone();
    *shard.config.borrow_mut() = config.clone();

    shard.evict(|rec| !keys.contains(rec.kid), "key-removed");
    // A session opened by an operator the new config removed or changed
    // ends with it (Gateway::reload logs which operators).
    let operator_stays = |(name, generation): &(String, u64)| {
        config
            .operators
            .iter()
            .any(|o| o.name == *name && o.generation == *generation)
    };
    shard
        .sessions
        .borrow_mut()
        .end_where(|s| !keys.contains(s.kid) || s.operator.as_ref().is_some_and(|o| !operator_stays(o)));
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
    let keys = shard.keys.borrow().clone();
    let agents = shard
        .directory
        .borrow()
        .iter()
        .map(|r| AgentRow {
            name: r.name.clone(),
            local_ip: r.local_ip.clone(),
            mac: r.mac.clone(),
            external_addr: r.external.to_string(),
            key: keys.name_of(r.kid).to_string(),
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
        tls_channels_compact: st.tls_channels_compact.get(),
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
        pin_refusals: st.pin_refusals.get(),
        sign_ins: st.sign_ins.borrow().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ticket_refusals: st
            .ticket_refusals
            .borrow()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        approvals: st.approvals.borrow().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        health_probes: st.health_probes.get(),
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
                operator: s.operator.as_ref().map(|(name, _)| name.clone()),
                agent: s.agent.clone(),
                key: keys.name_of(s.kid).to_string(),
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

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, mut spare: SpareFd) {
    let mut failures = AcceptFailures::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if !spare.restore() {
                    // It came in on the spare's descriptor: the process is
                    // still at its open-file limit, so it hears why and is
                    // closed.
                    Stats::bump(&shard.stats.rejected, 503);
                    refuse_unread(stream, Refusal::AtConnectionLimit, shard.shared.boot).await;
                    spare.restore();
                    continue;
                }
                if let Some(n) = failures.recovered() {
                    log::warn!(
                        "worker {}: accepting again ({n} more failed accepts since the last warning)",
                        shard.index
                    );
                }
                Stats::inc(&shard.stats.accepted);
                shard.shared.heap.accepted_one();
                // An IPv4 peer on a dual-stack [::] listener arrives as
                // ::ffff:a.b.c.d; logs and the console show it as IPv4.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let Some(permit) = shard.shared.connection_permit() else {
                    Stats::bump(&shard.stats.rejected, 503);
                    compio::runtime::spawn(refuse_unread(stream, Refusal::AtConnectionLimit, shard.shared.boot))
                        .detach();
                    continue;
                };
                let unproven = match shard.shared.sources.admit(peer.ip(), Instant::now()) {
                    Ok(ticket) => ticket,
                    Err(refused) => {
                        let why = Refusal::Source(refused.why);
                        Stats::bump(&shard.stats.source_refusals, refused.why.label());
                        Stats::bump(&shard.stats.rejected, why.status());
                        // A flood of these is summarised per source.
                        shard.event_from(peer.ip(), refused.event_text());
                        compio::runtime::spawn(refuse_unread(stream, why, shard.shared.boot)).detach();
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
                match failures.failed(Instant::now()) {
                    Some(0) => log::warn!(
                        "worker {}: accept failed: {e}; further failures are counted and logged every {} s",
                        shard.index,
                        ACCEPT_WARN_INTERVAL.as_secs()
                    ),
                    Some(n) => log::warn!(
                        "worker {}: accept failed: {e} ({n} more since the last warning)",
                        shard.index
                    ),
                    None => {}
                }
                if out_of_fds(&e) && spare.release() {
                    continue;
                }
                compio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                spare.restore();
            }
        }
    }
}

/// A descriptor held back for the open-file limit. There every accept
/// fails before it looks at the backlog, so a peer would wait there,
/// unanswered, until some connection closes; with this one released, the
/// next accept takes that peer, which is told `503` and closed.
struct SpareFd {
    /// The held descriptor (`/dev/null`), while it is held.
    file: Option<File>,
    /// Whether it was let go for an accept and is to be taken back.
    released: bool,
}

impl SpareFd {
    fn open() -> SpareFd {
        SpareFd {
            file: File::open(SPARE_PATH).ok(),
            released: false,
        }
    }

    /// Lets the descriptor go for one accept; false if none is held.
    fn release(&mut self) -> bool {
        self.released = self.file.take().is_some();
        self.released
    }

    /// Takes the descriptor back if it was let go. False while the
    /// process is still out of descriptors, i.e. the connection just
    /// accepted holds the last one.
    fn restore(&mut self) -> bool {
        if !self.released {
            return true;
        }
        match File::open(SPARE_PATH) {
            Ok(f) => self.file = Some(f),
            Err(e) if out_of_fds(&e) => return false,
            // Not a shortage: stop holding one rather than refuse peers.
            Err(_) => {}
        }
        self.released = false;
        true
    }
}

/// What the spare descriptor is: a file every Linux has, opened read-only.
const SPARE_PATH: &str = "/dev/null";

/// Whether `e` says the process (EMFILE) or the system (ENFILE) has no
/// descriptor left.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A run of failed accepts, so that it is logged once per
/// [`ACCEPT_WARN_INTERVAL`] with a count instead of once per failure.
#[derive(Debug, Default)]
struct AcceptFailures {
    /// When the last warning was logged; `None` outside a run.
    warned_at: Option<Instant>,
    /// Failures since that warning.
    unlogged: u64,
}

impl AcceptFailures {
    /// Counts a failure at `now`. `Some(n)` when it is to be logged, with
    /// the `n` failures since the last warning.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.warned_at {
            Some(at) if now.saturating_duration_since(at) < ACCEPT_WARN_INTERVAL => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.warned_at = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }

    /// An accept worked: ends a run. `Some(n)` if one was going on, with
    /// the `n` failures since its last warning.
    fn recovered(&mut self) -> Option<u64> {
        self.warned_at.take()?;
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_accept_failures_is_logged_once_per_interval_and_at_its_end() {
        let mut f = AcceptFailures::default();
        assert_eq!(f.recovered(), None, "no run, nothing to report");
        let t0 = Instant::now();
        assert_eq!(f.failed(t0), Some(0), "the first failure is logged");
        for ms in [50, 100, 9_950] {
            assert_eq!(f.failed(t0 + Duration::from_millis(ms)), None, "counted, not logged");
        }
        assert_eq!(
            f.failed(t0 + ACCEPT_WARN_INTERVAL),
            Some(3),
            "one line per interval, with the count"
        );
        assert_eq!(f.failed(t0 + ACCEPT_WARN_INTERVAL * 2 - Duration::from_millis(1)), None);
        assert_eq!(f.recovered(), Some(1), "the end of the run reports what was not logged");
        assert_eq!(f.recovered(), None, "and ends it");
        assert_eq!(
            f.failed(t0 + ACCEPT_WARN_INTERVAL * 2),
            Some(0),
            "a new run starts afresh"
        );
    }
}
