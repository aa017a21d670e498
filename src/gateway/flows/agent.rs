//! Agent registration and the agent's held channel.
//!
//! The worker that accepts a registration checks the proof, then hands the
//! socket to the agent's owner (`owner_of(key id, name)`), which records it,
//! answers `101`, and runs the channel: polls in, pushes out, until the
//! agent leaves, misses its heartbeat deadline, or is replaced.

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use compio::BufResult;
use futures_util::future::{Either, select};

use super::answer::{identity, refuse_proof, reject, send, verify, wants_upgrade};
use super::handover::{attach, detach};
use crate::conn::Conn;
use crate::eventlog::sanitize;
use crate::gateway::core::directory::{AdmitError, AgentRecord, owner_of};
use crate::gateway::core::handoff::{Registration, ShardMsg};
use crate::gateway::core::outbox::{Inbox, outbox};
use crate::gateway::core::permit::Permit;
use crate::gateway::core::reply::Refusal;
use crate::gateway::core::stats::Stats;
use crate::gateway::shard::Shard;
use crate::http::{self, RequestHead};
use crate::proto::{self, FrameError, FromAgent, ToAgent};
use crate::relay::Duplex;

/// Frames that may wait in an agent's outbox. Pushes are rare (a session
/// open, a pong per poll); 8 queued means the agent stopped reading, and
/// it is dropped rather than buffered without bound.
const OUTBOX_CAPACITY: usize = 8;

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
    let kid = match verify(&shard, &stream, &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            let who = format!("Client {} ({local_ip})", sanitize(&name));
            refuse_proof(&shard, &stream, peer.ip(), why, &who, "Terminating connection").await;
            return;
        }
    };
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
        permit,
    };
    if owner == shard.index {
        // A task of its own, so the front door's state (the request head,
        // its header strings) is freed now rather than held for as long as
        // the agent stays connected.
        compio::runtime::spawn(serve_handed(shard, Box::new(reg))).detach();
    } else if shard.send_to(owner, ShardMsg::Register(Box::new(reg))).await.is_err() {
        log::warn!("worker {owner} is gone; agent registration dropped");
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

    let (outbox, outbox_rx) = outbox(OUTBOX_CAPACITY);
    let id = shard.next_id();
    let now = SystemTime::now();
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
        },
        &shard.shared.licence,
        config.max_clients,
    );
    let slot = match admitted {
        Ok((slot, None)) => slot,
        Ok((slot, Some(old))) => {
            shard.event(format!(
                "Client {shown} replaced: a new connection came from {} (old one from {} closed)",
                peer, old.external
            ));
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
    };

    let cmpi = config.cmpi.as_secs().to_string();
    // Logged before the answer, so that the log never shows something the
    // agent did after its 101 ahead of its arrival.
    shard.event(format!("Client {shown} connected"));
    Stats::inc(&shard.stats.registrations);
    let ok = http::switching_protocols(proto::UPGRADE_AGENT, &[("Ringway-Cmpi", &cmpi)]);
    if send(&stream, ok).await.is_err() {
        release(&shard, slot, id);
        shard.event(format!("Client {shown} Disconnected"));
        return;
    }
    shard.live_agents.set(shard.live_agents.get() + 1);
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
        Conn::Plain(s) => compio::runtime::spawn(channel.run(s, early, outbox_rx)).detach(),
        Conn::Tls(t) => compio::runtime::spawn(channel.run(*t, early, outbox_rx)).detach(),
    }
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
        let ended = {
            let reader = pin!(read_polls(&shard, &stream, early, slot, id));
            let writer = pin!(write_pushes(&stream, outbox));
            match select(reader, writer).await {
                Either::Left((ended, _)) => ended,
                Either::Right(((), _)) => Ended::Removed,
            }
        };

        shard.live_agents.set(shard.live_agents.get() - 1);
        let was_current = release(&shard, slot, id);
        match ended {
            Ended::Protocol => shard.event(format!("Client {shown} sent an invalid frame; closing")),
            Ended::Stalled => shard.event(format!("Client {shown} stopped reading its channel; closing")),
            Ended::Closed | Ended::Removed => {}
        }
        // A replaced agent's successor already logged; a removed one was
        // logged by whoever removed it.
        if was_current {
            shard.event(format!("Client {shown} Disconnected"));
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
            let rec = dir.find_slot(slot, id)?;
            if rec.outbox.try_send(ToAgent::Pong(seq)).is_err() {
                return Some(Ended::Stalled);
            }
            None
        }
        FromAgent::Fail(sid) => {
            let (kid, name) = {
                let dir = shard.directory.borrow();
                let rec = dir.find_slot(slot, id)?;
                (rec.kid, rec.name.clone())
            };
            if sid.worker as usize == shard.index {
                super::join::fail_pending(shard, sid, kid, &name);
            } else if let Some(inbox) = shard.shared.inboxes.get(sid.worker as usize) {
                // A full inbox only delays the control's 504; never block
                // this agent's reads on another worker.
                let _ = inbox.try_send(ShardMsg::Fail { sid, kid, name });
            }
            None
        }
        FromAgent::Unknown => None,
    }
}

/// Writes queued frames until the outbox closes: the record was removed
/// (replaced, key removed, shutdown) after its goodbye was queued.
async fn write_pushes<D: Duplex>(stream: &D, outbox: Inbox) {
    while let Some(frame) = outbox.recv().await {
        // Boxed for the same reason as the poll read: pushes are rare.
        let BufResult(res, _) = Box::pin(stream.write_all_from(frame.to_string().into_bytes())).await;
        if res.is_err() {
            return;
        }
    }
}
