//! What controls do: browse agents, and open relay sessions to them.
//!
//! A session lives on the worker its control connected to. That worker
//! parks the control in a pending slot, asks the agent's owner to push
//! `OPEN <sid>` down the agent's channel, and waits (pairing deadline) for
//! the agent's data connection. Whichever worker accepts that connection
//! hands it here, since the sid names this worker; then both sides get
//! `101` and the relay runs with both sockets on this one thread.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::SystemTime;

use std::pin::pin;

use crate::conn::Conn;
use futures_channel::oneshot;
use futures_util::future::{Either, select};

use super::frontdoor::{identity, refusal, reject, send, verify, wants_upgrade};
use super::shard::{Handoff, OpenResult, Shard, ShardMsg};
use super::stats::Stats;
use super::{Permit, owner_of};
use crate::auth::{KeyId, new_nonce};
use crate::eventlog::sanitize;
use crate::http::{self, RequestHead};
use crate::proto::{self, AgentSummary, SessionId};
use crate::relay::{Counters, relay};

/// A control waiting for its agent's data connection.
pub(crate) struct Pending {
    /// Must match the sid's token: ids cannot be guessed.
    token: [u8; 16],
    /// The control's key: only an agent with the same key may join.
    kid: KeyId,
    /// The agent asked for: only that agent may join.
    agent: String,
    /// Delivers the data connection; dropped to fail the session.
    tx: Option<oneshot::Sender<Joined>>,
}

/// The agent's data connection, delivered to the waiting control.
pub(crate) struct Joined {
    stream: Conn,
    early: Vec<u8>,
    permit: Permit,
}

/// An agent's data connection on its way to the control's worker.
pub(crate) struct JoinRequest {
    handoff: Handoff,
    sid: SessionId,
    kid: KeyId,
    agent: String,
    permit: Permit,
}

impl Pending {
    /// The key the control proved.
    pub fn kid(&self) -> KeyId {
        self.kid
    }

    /// Fails the waiting control (it answers 502).
    pub fn cancel(&mut self) {
        self.tx = None;
    }
}

/// A relaying session, for the console.
pub(crate) struct SessionInfo {
    /// The control's name.
    pub control: String,
    /// The agent's name.
    pub agent: String,
    /// The key both proved.
    pub kid: KeyId,
    /// When the relay started.
    pub started: SystemTime,
    /// Bytes each way so far (control→agent is `a_to_b`).
    pub counters: Rc<Counters>,
    /// Dropping this (with the record) ends the relay: how a reload that
    /// removes a key closes that key's sessions.
    _kill: oneshot::Sender<()>,
}

/// `GET /v1/clients`: the agents that share the control's key, as JSON.
pub(crate) async fn browse(shard: Rc<Shard>, stream: Conn, peer: SocketAddr, head: RequestHead, _permit: Permit) {
    // A control names itself, but curl with a bearer key need not.
    let identity_raw = match (head.header(proto::H_IDENTITY), identity(&head)) {
        (None, _) => String::new(),
        (Some(_), Some((raw, _))) => raw,
        (Some(_), None) => {
            reject(&shard, &stream, 400, "invalid control name").await;
            return;
        }
    };
    let kid = match verify(&shard, &stream, &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            shard.event(format!(
                "Security check failed for Control browse. Terminating connection from {}",
                peer.ip()
            ));
            log::debug!("browse proof refused: {}", why.label());
            reject(&shard, &stream, 401, refusal(why)).await;
            return;
        }
    };
    let mut agents: Vec<AgentSummary> = Vec::new();
    for w in 0..shard.workers() {
        if w == shard.index {
            agents.extend(shard.directory.borrow().list(kid));
            continue;
        }
        let (reply, rx) = oneshot::channel();
        if shard.send_to(w, ShardMsg::List { kid, reply }).await.is_ok()
            && let Ok(list) = rx.await
        {
            agents.extend(list);
        }
    }
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let body = match serde_json::to_vec(&agents) {
        Ok(b) => b,
        Err(_) => {
            reject(&shard, &stream, 500, "cannot encode the client list").await;
            return;
        }
    };
    let _ = send(&stream, http::response(200, &[], "application/json", &body)).await;
}

/// `GET /v1/connect/<name>`: a relay session to agent `name`.
pub(crate) async fn connect(
    shard: Rc<Shard>,
    stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    early: Vec<u8>,
    name_raw: String,
    _permit: Permit,
) {
    if !wants_upgrade(&head, proto::UPGRADE_RELAY) {
        reject(&shard, &stream, 426, "connect must upgrade to ringway-relay/1").await;
        return;
    }
    let Some(agent) = http::pct_decode(&name_raw).filter(|n| proto::valid_name(n)) else {
        reject(&shard, &stream, 400, "invalid client name").await;
        return;
    };
    let Some((identity_raw, control)) = identity(&head) else {
        reject(&shard, &stream, 400, "missing or invalid control name").await;
        return;
    };
    let (agent_shown, control_shown) = (sanitize(&agent), sanitize(&control));
    let kid = match verify(&shard, &stream, &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            shard.event(format!(
                "Security check failed for Control {control_shown}. Rejecting connection request to Client {agent_shown} from {}",
                peer.ip()
            ));
            log::debug!("connect proof refused: {}", why.label());
            reject(&shard, &stream, 401, refusal(why)).await;
            return;
        }
    };

    let config = shard.config();
    let (tx, rx) = oneshot::channel();
    let token = new_nonce();
    if shard.pending.borrow().len() >= config.limits.max_pending_sessions {
        reject(&shard, &stream, 503, "too many sessions waiting for their clients").await;
        return;
    }
    let slot = shard.pending.borrow_mut().insert(Pending {
        token,
        kid,
        agent: agent.clone(),
        tx: Some(tx),
    });
    let sid = SessionId {
        worker: shard.index as u16,
        slot: slot as u32,
        token,
    };

    let owner = owner_of(kid, &agent, shard.workers());
    let opened = if owner == shard.index {
        shard.open_local(kid, &agent, sid)
    } else {
        let (reply, answer) = oneshot::channel();
        let msg = ShardMsg::Open {
            kid,
            name: agent.clone(),
            sid,
            reply,
        };
        match shard.send_to(owner, msg).await {
            Ok(()) => answer.await.unwrap_or(OpenResult::NotFound),
            Err(()) => OpenResult::NotFound,
        }
    };
    let outcome = match opened {
        OpenResult::Sent => compio::time::timeout(config.limits.pairing_timeout, rx).await,
        OpenResult::NotFound => {
            shard.pending.borrow_mut().remove(slot);
            // Same answer whether the name is unknown or belongs to another
            // key: a control learns nothing about other keys' agents.
            reject(
                &shard,
                &stream,
                404,
                &format!("no client named {agent_shown} is connected"),
            )
            .await;
            return;
        }
        OpenResult::Busy => {
            shard.pending.borrow_mut().remove(slot);
            reject(
                &shard,
                &stream,
                503,
                &format!("client {agent_shown} is not reading its channel"),
            )
            .await;
            return;
        }
    };
    take_pending(&shard, sid);
    let joined = match outcome {
        Ok(Ok(joined)) => joined,
        Ok(Err(_)) => {
            let reason = format!("client {agent_shown} could not reach its local service");
            reject(&shard, &stream, 502, &reason).await;
            return;
        }
        Err(_) => {
            let reason = format!(
                "client {agent_shown} did not join the session within {} s",
                config.limits.pairing_timeout.as_secs()
            );
            reject(&shard, &stream, 504, &reason).await;
            return;
        }
    };

    let agent_stream = joined.stream;
    // The data connection's share of the cap lives as long as the relay.
    let _agent_permit = joined.permit;
    let counters = Rc::new(Counters::default());
    let (kill, killed) = oneshot::channel::<()>();
    let key = shard.sessions.borrow_mut().insert(SessionInfo {
        control: control.clone(),
        agent: agent.clone(),
        kid,
        started: SystemTime::now(),
        counters: counters.clone(),
        _kill: kill,
    });
    Stats::inc(&shard.stats.sessions_total);
    shard.event(format!("Control {control_shown} connected to Client {agent_shown}"));
    // Logged before the answers, so the log never shows what the peers do
    // after their 101 ahead of the session itself.
    let relaying = pin!(async {
        let upgrade = http::switching_protocols(proto::UPGRADE_RELAY, &[]);
        send(&stream, upgrade.clone()).await?;
        send(&agent_stream, upgrade).await?;
        relay(
            &stream,
            early,
            &agent_stream,
            joined.early,
            config.limits.relay_buffer,
            &counters,
        )
        .await
    });
    match select(relaying, killed).await {
        Either::Left((Err(e), _)) => log::debug!("session {control_shown} -> {agent_shown} ended: {e}"),
        Either::Left((Ok(()), _)) => {}
        Either::Right(_) => log::debug!("session {control_shown} -> {agent_shown} closed by reload"),
    }
    let st = &shard.stats;
    st.bytes_to_agent_closed
        .set(st.bytes_to_agent_closed.get() + counters.a_to_b.get());
    st.bytes_to_control_closed
        .set(st.bytes_to_control_closed.get() + counters.b_to_a.get());
    shard.sessions.borrow_mut().try_remove(key);
    shard.event(format!(
        "Control {control_shown} disconnected from Client {agent_shown}"
    ));
}

/// Removes the pending slot of `sid` if it is still that session's.
fn take_pending(shard: &Shard, sid: SessionId) -> Option<Pending> {
    let mut pending = shard.pending.borrow_mut();
    let slot = sid.slot as usize;
    if pending.get(slot).is_some_and(|p| p.token == sid.token) {
        Some(pending.remove(slot))
    } else {
        None
    }
}

/// `GET /v1/session/<sid>`: an agent's data connection for a session.
pub(crate) async fn join(
    shard: Rc<Shard>,
    stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    early: Vec<u8>,
    sid_raw: String,
    permit: Permit,
) {
    if !wants_upgrade(&head, proto::UPGRADE_RELAY) {
        reject(&shard, &stream, 426, "join must upgrade to ringway-relay/1").await;
        return;
    }
    let Some(sid) = SessionId::parse(&sid_raw).filter(|s| (s.worker as usize) < shard.workers()) else {
        reject(&shard, &stream, 404, "no such session").await;
        return;
    };
    let Some((identity_raw, agent)) = identity(&head) else {
        reject(&shard, &stream, 400, "missing or invalid agent name").await;
        return;
    };
    let kid = match verify(&shard, &stream, &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            shard.event(format!(
                "Security check failed for Client {} (-). Terminating connection from {}",
                sanitize(&agent),
                peer.ip()
            ));
            log::debug!("join proof refused: {}", why.label());
            reject(&shard, &stream, 401, refusal(why)).await;
            return;
        }
    };
    let to = sid.worker as usize;
    if to == shard.index {
        deliver(&shard, sid, kid, &agent, stream, early, permit).await;
        return;
    }
    let handoff = match Handoff::new(stream, peer, early) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("cannot hand over data socket: {e}");
            return;
        }
    };
    let req = JoinRequest {
        handoff,
        sid,
        kid,
        agent,
        permit,
    };
    if shard.send_to(to, ShardMsg::Join(Box::new(req))).await.is_err() {
        log::warn!("worker {to} is gone; data connection dropped");
    }
}

/// Serves a data connection handed over by another worker.
pub(crate) async fn join_handed(shard: Rc<Shard>, req: Box<JoinRequest>) {
    let JoinRequest {
        handoff,
        sid,
        kid,
        agent,
        permit,
    } = *req;
    match handoff.into_conn() {
        Ok((stream, _, early)) => deliver(&shard, sid, kid, &agent, stream, early, permit).await,
        Err(e) => log::warn!("cannot adopt data socket: {e}"),
    }
}

/// Gives a data connection to the control waiting for it, if the session
/// exists and belongs to this agent and key.
async fn deliver(shard: &Shard, sid: SessionId, kid: KeyId, agent: &str, stream: Conn, early: Vec<u8>, permit: Permit) {
    let Some(tx) = take_waiter(shard, sid, kid, agent) else {
        reject(shard, &stream, 404, "no such session").await;
        return;
    };
    if let Err(joined) = tx.send(Joined { stream, early, permit }) {
        reject(shard, &joined.stream, 410, "the control stopped waiting").await;
    }
}

/// The agent said it cannot serve `sid`: fail the waiting control (502).
pub(crate) fn fail_pending(shard: &Shard, sid: SessionId, kid: KeyId, agent: &str) {
    // Dropping the waiter's sender wakes the control with the failure.
    drop(take_waiter(shard, sid, kid, agent));
}

/// Takes the sender a control waits on, if session `sid` is waiting here
/// for this agent of this key: only the agent the control asked for, with
/// the control's key, may join or fail it.
fn take_waiter(shard: &Shard, sid: SessionId, kid: KeyId, agent: &str) -> Option<oneshot::Sender<Joined>> {
    shard
        .pending
        .borrow_mut()
        .get_mut(sid.slot as usize)
        .filter(|p| p.token == sid.token && p.kid == kid && p.agent == agent)
        .and_then(|p| p.tx.take())
}
