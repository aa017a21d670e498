//! Agent registration and the agent's held channel.
//!
//! The worker that accepts a registration checks the proof, then hands the
//! socket to the agent's owner (`owner_of(key id, name)`), which records it,
//! answers `101`, and runs the channel: polls in, pushes out, until the
//! agent leaves, misses its heartbeat deadline, or is replaced.

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use compio::BufResult;
use compio::net::TcpStream;
use futures_util::future::{Either, select};

use super::answer::{agent_key, identity, refuse_handed, refuse_proof, reject, send, verify, wants_upgrade};
use super::handover::{attach, detach};
use crate::auth::KeyId;
use crate::auth::agentkey::{AgentKeyError, AgentPublicKey};
use crate::conn::Conn;
use crate::eventlog::sanitize;
use crate::gateway::cluster::{Cluster, now_ms};
use crate::gateway::core::cluster::{AgentKey, Claimed, Held, PinVerdict, StoredAgent};
use crate::gateway::core::directory::{AdmitError, AgentRecord, owner_of};
use crate::gateway::core::flaps::Flaps;
use crate::gateway::core::handoff::{Registration, ShardMsg};
use crate::gateway::core::outbox::{Inbox, outbox};
use crate::gateway::core::permit::Permit;
use crate::gateway::core::reply::Refusal;
use crate::gateway::core::stats::Stats;
use crate::gateway::pins::{Checked, PinError};
use crate::gateway::shard::Shard;
use crate::http::{self, RequestHead};
use crate::proto::{self, AgentSummary, FrameError, FromAgent, ToAgent};
use crate::relay::Duplex;
use crate::timefmt::rfc3339;
use crate::tls::{SealedConn, TlsConn};

/// Frames that may wait in an agent's outbox. What fills it is bounded
/// elsewhere: an `OPEN` per waiting session (the pairing shares allow a
/// control at most `max_pending_per_control`, default 64) and a `PONG` per
/// poll. The writer sends everything queued in one write, so a healthy
/// agent's queue empties at every write; an agent that stops reading is
/// found by the write deadline, not by this bound, which only caps the
/// memory (a few KiB) a stuck agent's queue can hold meanwhile.
const OUTBOX_CAPACITY: usize = 256;

/// How long the goodbye to a removed agent (replaced, key removed,
/// shutdown) may take before its socket is closed regardless: long enough
/// for a healthy agent to read why, short enough that a removed agent
/// that stopped reading is gone at once rather than at the write deadline.
const BYE_GRACE: Duration = Duration::from_secs(2);

/// First size of an agent channel's read buffer. A poll is about 10 bytes;
/// 64 holds a few at once, and the buffer doubles for a longer frame.
const POLL_READ_START: usize = 64;

/// Longest reported detail (MAC, IP, OS) kept; longer is cut.
const MAX_DETAIL_CHARS: usize = 64;

/// Why an agent's channel ended, for the log.
enum Ended {
    Closed,
    Protocol,
    Stalled,
    Removed,
    /// The agent said `BYE <reason>`: it moved to another gateway, and is
    /// registered there already. Its sessions through this gateway go on.
    Left(String),
}

/// Handles `GET /v1/agent/register` on the worker that accepted it.
pub(crate) async fn register(
    shard: Rc<Shard>,
    stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    early: Vec<u8>,
    permit: Permit,
) {
    if !wants_upgrade(&head, proto::UPGRADE_AGENT) {
        reject(
            &shard,
            &stream,
            Refusal::MustUpgrade("registration", proto::UPGRADE_AGENT),
        )
        .await;
        return;
    }
    let Some((identity_raw, name)) = identity(&head) else {
        reject(&shard, &stream, Refusal::BadName("agent name")).await;
        return;
    };
    let detail = |h: &str| {
        let v = head.header(h).and_then(http::pct_decode).unwrap_or_default();
        sanitize(&v.chars().take(MAX_DETAIL_CHARS).collect::<String>())
    };
    let (mac, local_ip, os) = (
        detail(proto::H_AGENT_MAC),
        detail(proto::H_AGENT_IP),
        detail(proto::H_AGENT_OS),
    );
    // A sanitised copy: the checked value is printable ASCII already, but
    // the log line must not depend on that check alone.
    let previous = head
        .header(proto::H_PREVIOUS)
        .and_then(proto::parse_previous)
        .map(|(kind, gateway)| format!("{} from {}", kind.as_str(), sanitize(gateway)));
    let kid = match verify(&shard, &stream, peer.ip(), &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            let who = format!("Client {} ({local_ip})", sanitize(&name));
            refuse_proof(&shard, &stream, peer.ip(), why, &who, "Terminating connection").await;
            return;
        }
    };
    // Agent keys matter only while names are pinned; otherwise they are
    // ignored, as a gateway older than them would.
    let agent_key = if shard.config().auth.pin_agent_names {
        match agent_key(&shard, &stream, &head, &identity_raw) {
            Ok(Some(k)) => Some(k),
            Ok(None) => {
                reject(&shard, &stream, Refusal::AgentKeyRequired).await;
                return;
            }
            Err(why) => {
                if why == AgentKeyError::Mismatch {
                    // A forged or replayed identity: worth the log, summarised
                    // per source like failed key proofs.
                    shard.event_from(
                        peer.ip(),
                        format!(
                            "Security check failed for Client {} ({local_ip}): agent_key_mismatch. \
                             Terminating connection from {}",
                            sanitize(&name),
                            peer.ip()
                        ),
                    );
                } else {
                    log::info!(
                        "{peer}: agent key of client {} refused: {}",
                        sanitize(&name),
                        why.label()
                    );
                }
                reject(&shard, &stream, Refusal::AgentKey(why)).await;
                return;
            }
        }
    } else {
        None
    };
    if let Some((to, boot)) = spread_to(&shard, &head) {
        redirect_agent(&shard, &stream, &name, &to, &boot).await;
        return;
    }
    let owner = owner_of(kid, &name, shard.workers());
    let reg = Registration {
        handoff: match detach(stream, peer, early) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("cannot hand over agent socket: {e}");
                return;
            }
        },
        kid,
        name,
        mac,
        local_ip,
        os,
        agent_key,
        previous,
        permit,
    };
    if owner == shard.index {
        // A task of its own, so the front door's state (the request head,
        // its header strings) is freed now rather than held for as long as
        // the agent stays connected.
        compio::runtime::spawn(serve_handed(shard, Box::new(reg))).detach();
    } else if let Err(ShardMsg::Register(reg)) = shard.hand_to(owner, ShardMsg::Register(Box::new(reg))) {
        refuse_handed(&shard, reg.handoff).await;
    }
}

/// Serves a registration on the agent's owner worker.
pub(crate) async fn serve_handed(shard: Rc<Shard>, reg: Box<Registration>) {
    let Registration {
        handoff,
        kid,
        name,
        mac,
        local_ip,
        os,
        agent_key,
        previous,
        permit,
    } = *reg;
    let (stream, peer, early) = match attach(handoff) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot adopt agent socket: {e}");
            return;
        }
    };
    let config = shard.config();
    let shown = sanitize(&name);
    if config.auth.pin_agent_names
        && let Err(refusal) = check_pin(&shard, kid, &name, agent_key, peer).await
    {
        reject(&shard, &stream, refusal).await;
        return;
    }

    let now = SystemTime::now();
    let held = match &shard.shared.cluster {
        None => None,
        Some(cluster) => {
            let agent = AgentKey {
                kid,
                name: name.clone(),
            };
            let stored = StoredAgent {
                gw: cluster.id.clone(),
                reg: Cluster::new_reg(),
                at_ms: now_ms(),
                summary: AgentSummary {
                    name: name.clone(),
                    external_addr: peer.to_string(),
                    connected_since: rfc3339(now),
                    last_poll: rfc3339(now),
                    mac: mac.clone(),
                    local_ip: local_ip.clone(),
                    os: os.clone(),
                    gateway: None,
                },
            };
            let held = Held::of(&stored);
            match cluster.claim(agent.clone(), held.clone(), config.max_clients).await {
                Ok(Claimed::Yes) => {}
                Ok(Claimed::Licence) => {
                    shard.event(format!(
                        "Licence exceed. Rejecting connection from Client {shown} ({local_ip}, {}): the cluster has {} clients connected",
                        peer.ip(),
                        config.max_clients
                    ));
                    reject(&shard, &stream, Refusal::Licence(config.max_clients)).await;
                    return;
                }
                // Admitted on this gateway's own licence; the side thread
                // writes it once Redis answers again.
                Err(why) => log::warn!("client {shown} admitted without the cluster: {}", why.reason()),
            }
            // Its share of the mirror goes with the record: a refusal
            // below drops both, and the claim is released.
            Some(cluster.hold(agent, held))
        }
    };
    let (outbox, outbox_rx) = outbox(OUTBOX_CAPACITY);
    let id = shard.next_id();
    // Whether a replacement is logged is decided with the predecessor's
    // count, which the new record carries on (no await until admit).
    let mut flaps = Flaps::default();
    let log_replaced = match shard.directory.borrow().find(kid, &name) {
        Some(old) => {
            flaps = old.flaps;
            flaps.replaced(Instant::now())
        }
        None => None,
    };
    let admitted = shard.directory.borrow_mut().admit(
        AgentRecord {
            id,
            kid,
            name: name.clone(),
            mac,
            local_ip: local_ip.clone(),
            os,
            external: peer,
            connected_since: now,
            last_poll: now,
            last_seen: Instant::now(),
            outbox,
            licence: None,
            flaps,
            cluster: held,
        },
        &shard.shared.licence,
        config.max_clients,
        config.limits.max_agents_per_key,
    );
    let slot = match admitted {
        Ok((slot, None)) => slot,
        Ok((slot, Some(old))) => {
            match log_replaced {
                Some(0) => shard.event(format!(
                    "Client {shown} replaced: a new connection came from {} (old one from {} closed)",
                    peer, old.external
                )),
                Some(unlogged) => shard.event(format!(
                    "Client {shown} replaced: a new connection came from {} (old one from {} closed); \
                     replaced {unlogged} more times since the last such line",
                    peer, old.external
                )),
                None => {}
            }
            let _ = old.outbox.try_send(ToAgent::Bye("replaced".into()));
            slot
        }
        Err(AdmitError::Licence) => {
            shard.event(format!(
                "Licence exceed. Rejecting connection from Client {shown} ({local_ip}, {})",
                peer.ip()
            ));
            reject(&shard, &stream, Refusal::Licence(config.max_clients)).await;
            return;
        }
        Err(AdmitError::KeyQuota) => {
            Stats::inc(&shard.stats.key_quota_refusals);
            let max = config.limits.max_agents_per_key;
            let key = shard.keys.borrow().name_of(kid).to_string();
            shard.event(format!(
                "Key quota reached. Rejecting connection from Client {shown} ({local_ip}, {}): key {key} has {max} clients connected",
                peer.ip()
            ));
            reject(&shard, &stream, Refusal::KeyQuota(max)).await;
            return;
        }
    };

    let cmpi = config.cmpi.as_secs().to_string();
    // Logged before the answer, so that the log never shows something the
    // agent did after its 101 ahead of its arrival.
    match &previous {
        None => shard.event(format!("Client {shown} connected")),
        Some(previous) => shard.event(format!("Client {shown} connected ({previous})")),
    }
    Stats::inc(&shard.stats.registrations);
    let boot = shard.shared.boot.to_string();
    let ok = http::switching_protocols(
        proto::UPGRADE_AGENT,
        &[("Ringway-Cmpi", &cmpi), (proto::H_BOOT_WRITTEN, &boot)],
    );
    if send(&shard, &stream, ok).await.is_err() {
        release(&shard, slot, id);
        shard.event(format!("Client {shown} Disconnected"));
        return;
    }
    // Over TLS the channel runs on the gateway's own record layer once the
    // handshake and the 101 are through: an idle agent then holds its keys
    // and a small read buffer rather than rustls's state and buffers
    // (tls::record says why). rustls stays where it cannot hand over.
    let mut early = early;
    let stream = match stream {
        Conn::Tls(t) if t.can_seal() => match t.into_sealed() {
            Ok((sealed, unread)) => {
                Stats::inc(&shard.stats.tls_channels_compact);
                early.extend_from_slice(&unread);
                ChannelStream::Sealed(sealed)
            }
            Err(e) => {
                log::warn!("{peer}: cannot take over the TLS records of client {shown}: {e}");
                release(&shard, slot, id);
                shard.event(format!("Client {shown} Disconnected"));
                return;
            }
        },
        Conn::Tls(t) => ChannelStream::Tls(t),
        Conn::Plain(s) => ChannelStream::Plain(s),
    };
    shard.live_agents.set(shard.live_agents.get() + 1);
    // The handshake's and the registration's garbage is freed now, not at
    // the accept: the heap trimmer waits for registrations to settle.
    shard.shared.heap.accepted_one();
    // The channel runs as a task of its own, typed by the concrete stream:
    // this setup future (its error paths, the TLS read path a plain agent
    // never takes) is freed now instead of being held by every idle agent.
    let channel = Channel {
        shard,
        slot,
        id,
        shown,
        _permit: permit,
    };
    match stream {
        ChannelStream::Plain(s) => compio::runtime::spawn(channel.run(s, early, outbox_rx)).detach(),
        ChannelStream::Sealed(s) => compio::runtime::spawn(channel.run(s, early, outbox_rx)).detach(),
        ChannelStream::Tls(t) => compio::runtime::spawn(channel.run(*t, early, outbox_rx)).detach(),
    }
}

/// Where to send this registration instead, in a cluster whose other
/// gateways hold fewer agents than this one's share allows; never for a
/// registration that was redirected here already.
fn spread_to(shard: &Shard, head: &RequestHead) -> Option<(String, String)> {
    let cluster = shard.shared.cluster.as_ref()?;
    if head.header(proto::H_REDIRECTED).is_some() {
        return None;
    }
    cluster.spread(shard.shared.licence.agents.used() as u64)
}

/// `307` to the least-loaded gateway `to` (boot id `boot`): the agent
/// registers there.
async fn redirect_agent(shard: &Shard, stream: &Conn, name: &str, to: &str, boot_there: &str) {
    if let Some(cluster) = &shard.shared.cluster {
        cluster.counts.agent_redirects.fetch_add(1, Ordering::Relaxed);
    }
    log::info!(
        "client {} sent to {to}: this gateway holds more than its share",
        sanitize(name)
    );
    let location = format!("{to}{}", proto::PATH_REGISTER);
    let reason = format!("this gateway holds its share of clients; register at {to}\n");
    let boot = shard.shared.boot.to_string();
    let answer = http::response(
        307,
        &[
            ("Location", &location),
            (proto::H_BOOT_WRITTEN, &boot),
            (proto::H_LOCATION_BOOT_WRITTEN, boot_there),
        ],
        "text/plain; charset=utf-8",
        reason.as_bytes(),
    );
    let _ = send(shard, stream, answer).await;
}

/// In a cluster, the name's pin is checked in Redis too, first: a name
/// pinned to another machine on any gateway is refused here, and a pin
/// Redis took for this registration is taken back if this gateway's own
/// store refuses it, so the two never disagree about who may have a name.
/// With Redis away, this gateway's store decides alone (and says so).
async fn check_pin<'n>(
    shard: &Shard,
    kid: KeyId,
    name: &'n str,
    agent_key: Option<AgentPublicKey>,
    peer: SocketAddr,
) -> Result<(), Refusal<'n>> {
    let (Some(cluster), Some(machine)) = (&shard.shared.cluster, agent_key) else {
        return check_pin_here(shard, kid, name, agent_key, peer).await;
    };
    let agent = AgentKey {
        kid,
        name: name.to_string(),
    };
    let taken_here = match cluster.pin(agent.clone(), machine.to_string()).await {
        Ok(PinVerdict::Taken) => {
            Stats::inc(&shard.stats.pin_refusals);
            let key = shard.keys.borrow().name_of(kid).to_string();
            shard.event_from(
                peer.ip(),
                format!(
                    "Client {} refused: the name is pinned to another machine's agent key in the cluster (key {key}); new connection from {peer}",
                    sanitize(name)
                ),
            );
            return Err(Refusal::NameTaken(name));
        }
        Ok(PinVerdict::New) => true,
        Ok(PinVerdict::Same) => false,
        Err(why) => {
            log::warn!(
                "pin of client {} checked on this gateway only: {}",
                sanitize(name),
                why.reason()
            );
            false
        }
    };
    let here = check_pin_here(shard, kid, name, agent_key, peer).await;
    if here.is_err() && taken_here {
        let _ = cluster.unpin(agent, machine.to_string()).await;
    }
    here
}

/// Checks (and on first use makes) the pin of `name` under key `kid` for
/// a registration by `agent_key` from `peer`, on the name's owner worker,
/// before anything of the directory changes: a refused machine replaces
/// nobody. The refusal is logged, at most once a minute per name. A first
/// pin is answered once it is on disk (the store's writer thread commits
/// it; this worker's loop goes on meanwhile).
async fn check_pin_here<'n>(
    shard: &Shard,
    kid: KeyId,
    name: &'n str,
    agent_key: Option<AgentPublicKey>,
    peer: SocketAddr,
) -> Result<(), Refusal<'n>> {
    let (Some(store), Some(agent_key)) = (shard.shared.pins.get(), agent_key) else {
        // Checked by the accepting worker while pinning was on; a reload
        // that turned it on in between, or a store that would not open.
        return Err(if agent_key.is_none() {
            Refusal::AgentKeyRequired
        } else {
            Refusal::PinsUnavailable
        });
    };
    let key = shard.keys.borrow().name_of(kid).to_string();
    let shown = sanitize(name);
    match store.check(&key, name, agent_key, peer, Instant::now()) {
        Ok(Checked::Same) => Ok(()),
        Ok(Checked::Pinning(pending)) => match store.settle(&key, name, agent_key, pending).await {
            Ok(()) => {
                // Not an event: pinning is what every new agent does once;
                // the event log keeps refusals and releases, which need a look.
                log::info!("client {shown} (key {key}): name pinned to the agent key of {peer}");
                Ok(())
            }
            Err(e) => {
                log::error!("{e}");
                Err(Refusal::PinsUnavailable)
            }
        },
        Err(PinError::Taken { pinned_from, log }) => {
            Stats::inc(&shard.stats.pin_refusals);
            let pinned = match shard.directory.borrow().find(kid, name) {
                Some(rec) => rec.external.to_string(),
                None => format!("{pinned_from} (not connected)"),
            };
            let line = format!(
                "Client {shown} refused: the name is pinned to another machine's agent key (key {key}); \
                 new connection from {peer}, pinned machine at {pinned}"
            );
            match log {
                Some(0) => shard.event(line),
                Some(n) => shard.event(format!("{line}; refused {n} more times since the last such line")),
                None => {}
            }
            Err(Refusal::NameTaken(name))
        }
        Err(PinError::Full) => {
            shard.event(format!(
                "Client {shown} refused from {peer}: {} agent names are pinned ([limits] max_pins)",
                store.len()
            ));
            Err(Refusal::PinsFull)
        }
        Err(PinError::Busy) => {
            log::warn!("client {shown} from {peer}: the name pins' write queue is full; refused, to retry");
            Err(Refusal::PinsUnavailable)
        }
        Err(PinError::Store(e)) => {
            log::error!("{e}");
            Err(Refusal::PinsUnavailable)
        }
    }
}

/// What an agent channel runs on. It lives only until the channel task
/// takes its stream by value, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum ChannelStream {
    Plain(TcpStream),
    /// TLS with the gateway's own record layer (the usual case).
    Sealed(SealedConn),
    /// TLS still driven by rustls (it could not hand over).
    Tls(Box<TlsConn>),
}

/// A registered agent's channel task: what it needs to clean up after.
struct Channel {
    shard: Rc<Shard>,
    slot: usize,
    id: u64,
    shown: String,
    /// Held for as long as the channel runs.
    _permit: Permit,
}

impl Channel {
    /// Polls in, pushes out, until the agent leaves, misses its deadline or
    /// is removed; then releases the record and logs why.
    async fn run<D: Duplex>(self, stream: D, early: Vec<u8>, outbox: Inbox) {
        let Channel {
            shard, slot, id, shown, ..
        } = self;
        let write_timeout = shard.config().limits.write_timeout;
        let ended = {
            let reader = pin!(read_polls(&shard, &stream, early, slot, id));
            let writer = pin!(write_pushes(&stream, outbox, write_timeout));
            match select(reader, writer).await {
                Either::Left((ended, _)) | Either::Right((ended, _)) => ended,
            }
        };

        shard.live_agents.set(shard.live_agents.get() - 1);
        let was_current = release(&shard, slot, id);
        match ended {
            Ended::Protocol => shard.event(format!("Client {shown} sent an invalid frame; closing")),
            Ended::Stalled => shard.event(format!("Client {shown} stopped reading its channel; closing")),
            Ended::Closed | Ended::Removed | Ended::Left(_) => {}
        }
        // A replaced agent's successor already logged; a removed one was
        // logged by whoever removed it.
        match ended {
            Ended::Left(reason) if was_current => {
                shard.event(format!("Client {shown} Disconnected ({reason})"));
            }
            _ if was_current => shard.event(format!("Client {shown} Disconnected")),
            _ => {}
        }
    }
}

/// Removes registration `id` from the directory if it is still current;
/// its licence share goes with the record. A replaced registration's share
/// passed to its successor, so nothing is freed then.
fn release(shard: &Shard, slot: usize, id: u64) -> bool {
    shard.directory.borrow_mut().remove_if(slot, id).is_some()
}

/// Reads the agent's frames until it leaves. The heartbeat deadline is kept
/// by the worker's sweeper (`Shard::expire_silent`), not by a timer here,
/// so an idle agent costs one pending read and nothing more.
async fn read_polls<D: Duplex>(shard: &Shard, stream: &D, early: Vec<u8>, slot: usize, id: u64) -> Ended {
    // Polls are ~10 bytes; a small buffer that grows for longer frames (up
    // to MAX_FRAME_LINE) keeps an idle agent's memory low.
    let mut buf = early;
    buf.reserve(POLL_READ_START.saturating_sub(buf.len()));
    loop {
        loop {
            match proto::parse_from_agent(&buf) {
                Ok((frame, used)) => {
                    buf.drain(..used);
                    if let Some(ended) = on_frame(shard, frame, slot, id) {
                        return ended;
                    }
                }
                Err(FrameError::Incomplete) => break,
                Err(FrameError::Invalid) => return Ended::Protocol,
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().min(proto::MAX_FRAME_LINE));
        }
        // Boxed: an idle agent's task then holds a pointer here rather than
        // the whole read state inline; one small allocation per poll (about
        // once a minute) is nothing next to the memory of 10,000s of agents.
        match Box::pin(stream.read_into(buf)).await {
            BufResult(Ok(0), _) | BufResult(Err(_), _) => return Ended::Closed,
            BufResult(Ok(_), b) => buf = b,
        }
        shard.directory.borrow_mut().touch(slot, id, false);
    }
}

fn on_frame(shard: &Shard, frame: FromAgent, slot: usize, id: u64) -> Option<Ended> {
    match frame {
        FromAgent::Ping(seq) => {
            let mut dir = shard.directory.borrow_mut();
            dir.touch(slot, id, true);
            let Some(rec) = dir.find_slot(slot, id) else {
                // Replaced or removed: its socket closes now, whatever it sends.
                return Some(Ended::Removed);
            };
            if rec.outbox.try_send(ToAgent::Pong(seq)).is_err() {
                return Some(Ended::Stalled);
            }
            None
        }
        FromAgent::Fail(sid) => {
            let (kid, name) = {
                let dir = shard.directory.borrow();
                let Some(rec) = dir.find_slot(slot, id) else {
                    return Some(Ended::Removed);
                };
                (rec.kid, rec.name.clone())
            };
            if sid.worker as usize == shard.index {
                shard.fail_waiter(sid, kid, &name);
            } else if let Some(inbox) = shard.shared.inboxes.get(sid.worker as usize) {
                // A full inbox only delays the control's 504; never block
                // this agent's reads on another worker.
                let _ = inbox.try_send(ShardMsg::Fail { sid, kid, name });
            }
            None
        }
        // Only the channel ends: the agent's relay sessions are
        // connections of their own, and go on until they end by themselves.
        FromAgent::Bye(reason) => Some(Ended::Left(reason)),
        FromAgent::Unknown => None,
    }
}

/// Writes queued frames until the outbox closes: the record was removed
/// (replaced, key removed, shutdown) after its goodbye was queued. Every
/// write must finish within `write_timeout`, or the agent is stalled; once
/// the record is gone, whatever is still being written (the goodbye) gets
/// [`BYE_GRACE`] at most.
async fn write_pushes<D: Duplex>(stream: &D, outbox: Inbox, write_timeout: Duration) -> Ended {
    loop {
        let mut frames = Vec::new();
        if !outbox.recv_batch(&mut frames).await {
            return Ended::Removed;
        }
        // Boxed: the write, its deadline timer and the removal watch exist
        // only while a push is being written, so an idle agent's task holds
        // none of them, only this loop's wait for the next frame.
        if let Some(ended) = Box::pin(write_batch(stream, &outbox, frames, write_timeout)).await {
            return ended;
        }
    }
}

/// Writes one batch of frames within `write_timeout`, or within
/// [`BYE_GRACE`] once the record is removed; `Some` when the channel ends.
async fn write_batch<D: Duplex>(stream: &D, outbox: &Inbox, frames: Vec<u8>, write_timeout: Duration) -> Option<Ended> {
    let mut write = pin!(stream.write_all_from(frames));
    let stalled = pin!(compio::time::sleep(write_timeout));
    let removed = pin!(outbox.closed());
    let res = match select(write.as_mut(), select(stalled, removed)).await {
        Either::Left((BufResult(res, _), _)) => res,
        Either::Right((Either::Left(_), _)) => return Some(Ended::Stalled),
        Either::Right((Either::Right(_), _)) => {
            match compio::time::timeout(BYE_GRACE.min(write_timeout), write).await {
                Ok(BufResult(res, _)) => res,
                Err(_) => return Some(Ended::Removed),
            }
        }
    };
    res.is_err().then_some(Ended::Closed)
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::io;
    use std::time::{Duration, Instant};

    use compio::BufResult;

    use super::*;

    /// A peer with a zero window: writes never complete, nothing arrives.
    struct NeverDrains;

    impl Duplex for NeverDrains {
        async fn read_into(&self, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
            pending::<()>().await;
            BufResult(Ok(0), buf)
        }
        async fn write_all_from(&self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
            pending::<()>().await;
            BufResult(Ok(()), buf)
        }
        async fn shutdown_write(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn run<F: Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new().expect("runtime").block_on(f)
    }

    #[test]
    fn a_removed_agent_that_stopped_reading_is_closed_at_once() {
        run(async {
            let (tx, rx) = outbox(4);
            assert!(tx.try_send(ToAgent::Bye("replaced".into())).is_ok());
            drop(tx);
            let started = Instant::now();
            // A write deadline far away: only the removal may end it.
            let ended = write_pushes(&NeverDrains, rx, Duration::from_secs(3600)).await;
            assert!(matches!(ended, Ended::Removed));
            let took = started.elapsed();
            assert!(took >= BYE_GRACE && took < BYE_GRACE * 3, "closed after {took:?}");
        });
    }

    #[test]
    fn an_agent_whose_write_misses_its_deadline_is_stalled() {
        run(async {
            let (tx, rx) = outbox(4);
            assert!(
                tx.try_send(ToAgent::Open(crate::proto::SessionId {
                    worker: 0,
                    slot: 1,
                    token: [7; 16],
                }))
                .is_ok()
            );
            let ended = write_pushes(&NeverDrains, rx, Duration::from_millis(200)).await;
            assert!(matches!(ended, Ended::Stalled), "the record is still there: stalled");
            drop(tx);
        });
    }
}
