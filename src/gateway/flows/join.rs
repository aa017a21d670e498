//! An agent's data connection for a session: `GET /v1/session/<sid>`.
//!
//! Whichever worker accepts it checks the proof and hands it to the worker
//! the sid names, where the control waits; only the agent the control
//! asked for, with the control's key, may join (or fail) the session.

use std::net::SocketAddr;
use std::rc::Rc;

use super::answer::{identity, refuse_handed, refuse_proof, reject, verify, wants_upgrade};
use super::handover::{attach, detach};
use crate::auth::KeyId;
use crate::conn::Conn;
use crate::eventlog::sanitize;
use crate::gateway::core::handoff::{JoinRequest, Joined, ShardMsg};
use crate::gateway::core::permit::Permit;
use crate::gateway::core::reply::Refusal;
use crate::gateway::shard::Shard;
use crate::http::RequestHead;
use crate::proto::{self, SessionId};

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
        reject(&shard, &stream, Refusal::MustUpgrade("join", proto::UPGRADE_RELAY)).await;
        return;
    }
    let Some(sid) = SessionId::parse(&sid_raw).filter(|s| (s.worker as usize) < shard.workers()) else {
        reject(&shard, &stream, Refusal::NoSuchSession).await;
        return;
    };
    let Some((identity_raw, agent)) = identity(&head) else {
        reject(&shard, &stream, Refusal::BadName("agent name")).await;
        return;
    };
    let kid = match verify(&shard, &stream, peer.ip(), &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            let who = format!("Client {} (-)", sanitize(&agent));
            refuse_proof(&shard, &stream, peer.ip(), why, &who, "Terminating connection").await;
            return;
        }
    };
    let to = sid.worker as usize;
    if to == shard.index {
        deliver(&shard, sid, kid, &agent, stream, early, permit).await;
        return;
    }
    let handoff = match detach(stream, peer, early) {
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
    if let Err(ShardMsg::Join(req)) = shard.hand_to(to, ShardMsg::Join(Box::new(req))) {
        refuse_handed(&shard, req.handoff).await;
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
    match attach(handoff) {
        Ok((stream, _, early)) => deliver(&shard, sid, kid, &agent, stream, early, permit).await,
        Err(e) => log::warn!("cannot adopt data socket: {e}"),
    }
}

/// Gives a data connection to the control waiting for it, if the session
/// exists and belongs to this agent and key.
async fn deliver(shard: &Shard, sid: SessionId, kid: KeyId, agent: &str, stream: Conn, early: Vec<u8>, permit: Permit) {
    let Some(tx) = shard.take_waiter(sid, kid, agent) else {
        reject(shard, &stream, Refusal::NoSuchSession).await;
        return;
    };
    if let Err(joined) = tx.send(Joined { stream, early, permit }) {
        reject(shard, &joined.stream, Refusal::ControlGone).await;
    }
}
