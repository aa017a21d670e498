//! What every flow does with a request and its connection: read the
//! claimed identity, check the key proof, write an answer, refuse
//! cleanly.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use compio::BufResult;

use crate::auth::agentkey::{self, AgentKeyError, AgentPublicKey};
use crate::auth::{
    AuthError, Binding, EXPORTER_LABEL, KeyId, KeyRing, Signed, parse_authorization, string_to_sign, strip_scheme,
    unix_now,
};
use crate::conn::Conn;
use crate::gateway::core::reply::Refusal;
use crate::gateway::core::stats::Stats;
use crate::gateway::shard::Shard;
use crate::http::{self, RequestHead};
use crate::proto;
use crate::relay::Duplex;

/// After an error response, how long we keep reading (and discarding) what
/// the peer still sends before closing. Closing with unread data makes the
/// kernel send a reset, which can destroy the response before the peer
/// reads it.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// The identity a request claims: the raw (percent-encoded) header value,
/// which is what the proof signs, and the decoded, checked name.
pub(crate) fn identity(head: &RequestHead) -> Option<(String, String)> {
    let raw = head.header(proto::H_IDENTITY)?;
    let name = http::pct_decode(raw).filter(|n| proto::valid_name(n))?;
    Some((raw.to_string(), name))
}

/// Checks the request's key proof for `identity_raw`, bound to this
/// connection (its TLS keying material) or this gateway run (its boot id).
/// Over TLS a bearer key (`Authorization: Bearer KEY`, the scheme in any
/// case) is accepted too; over plain HTTP it is refused, since it put the
/// key on the wire in clear, and that is logged by key id. A proven
/// connection leaves its source's count of unauthenticated connections.
pub(crate) fn verify(
    shard: &Shard,
    conn: &Conn,
    peer: IpAddr,
    head: &RequestHead,
    identity_raw: &str,
) -> Result<KeyId, AuthError> {
    let keys = shard.keys.borrow().clone();
    let authorization = head.header("authorization");
    let res = if let Some(secret) = authorization.and_then(|v| strip_scheme(v, "Bearer")) {
        if conn.is_tls() {
            keys.verify_bearer(secret)
        } else {
            exposed(shard, &keys, peer, secret);
            Err(AuthError::BearerOverPlain)
        }
    } else {
        binding_of(shard, conn)
            .map_err(|e| {
                log::warn!("{peer}: no TLS keying material to bind the proof to: {e}");
                AuthError::Unbound
            })
            .and_then(|binding| {
                let req = Signed {
                    method: &head.method,
                    target: &head.target,
                    identity: identity_raw,
                    binding,
                };
                keys.verify(&req, authorization, unix_now(), shard.config().limits.nonces_per_key)
            })
    };
    match &res {
        // The one place a connection proves a key: from here on it counts
        // against its key's shares, not its source's.
        Ok(_) => shard.proven(conn),
        Err(why) => {
            Stats::bump(&shard.stats.auth_failures, why.label());
            // A proof over its key's nonce quota is genuine: the flood is
            // that key's to answer for, not its source's (other keys'
            // agents may share the address).
            if *why == AuthError::NonceQuota {
                shard.proven(conn);
            }
        }
    }
    res
}

/// What a proof on `conn` must be bound to: its TLS keying material, or
/// over plain HTTP this gateway run's boot id.
fn binding_of(shard: &Shard, conn: &Conn) -> io::Result<Binding> {
    match conn {
        Conn::Tls(tls) => tls.export(EXPORTER_LABEL).map(Binding::Tls),
        Conn::Plain(_) => Ok(Binding::Boot(Some(shard.shared.boot))),
    }
}

/// Checks a registration's agent key headers (`Ringway-Agent-Key`,
/// `Ringway-Agent-Sig`) against the string its key proof signed; call it
/// once [`verify`] has passed. `Ok(None)`: the agent sent no key.
pub(crate) fn agent_key(
    shard: &Shard,
    conn: &Conn,
    head: &RequestHead,
    identity_raw: &str,
) -> Result<Option<AgentPublicKey>, AgentKeyError> {
    let (key, sig) = (head.header(proto::H_AGENT_KEY), head.header(proto::H_AGENT_SIG));
    if key.is_none() && sig.is_none() {
        return Ok(None);
    }
    let proof_string = signed_string(shard, conn, head, identity_raw);
    agentkey::check(key, sig, proof_string.as_deref())
}

/// The string the request's key proof signed (it verified before this
/// runs), which a ticket proof and an agent key signature cover. None for
/// a bearer key, which signs nothing: those must prove the key.
pub(crate) fn signed_string(shard: &Shard, conn: &Conn, head: &RequestHead, identity_raw: &str) -> Option<String> {
    let proof = parse_authorization(head.header("authorization")?).ok()?;
    let req = Signed {
        method: &head.method,
        target: &head.target,
        identity: identity_raw,
        binding: binding_of(shard, conn).ok()?,
    };
    Some(string_to_sign(&req, proof.ts, &proof.nonce, proof.kid))
}

/// Logs a bearer key that came over plain HTTP, by its name (never the
/// key, nor its hash): whoever could see the wire has it now. Summarised per source,
/// like failed proofs, and in their place (see [`refuse_proof`]).
fn exposed(shard: &Shard, keys: &KeyRing, peer: IpAddr, secret: &str) {
    let kid = KeyId::of(secret);
    let text = if keys.contains(kid) {
        let name = keys.name_of(kid);
        format!("Gateway key {name} was sent in clear over plain HTTP from {peer}: treat it as exposed and replace it")
    } else {
        format!("A bearer key that is not one of this gateway's was sent in clear over plain HTTP from {peer}")
    };
    shard.event_from(peer, text);
}

/// Whether the request asks to upgrade to `protocol`.
pub(crate) fn wants_upgrade(head: &RequestHead, protocol: &str) -> bool {
    head.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case(protocol))
}

/// Writes `bytes` in full within the write deadline (`write_timeout`): a
/// peer that stops reading cannot hold the task, its socket and its share
/// of the cap.
pub(crate) async fn send(shard: &Shard, conn: &Conn, bytes: Vec<u8>) -> io::Result<()> {
    let deadline = shard.config().limits.write_timeout;
    match compio::time::timeout(deadline, conn.write_all_from(bytes)).await {
        Ok(BufResult(res, _)) => res,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer did not read within the write deadline",
        )),
    }
}

/// Logs a failed key proof and answers 401. The line is the seed's,
/// `Security check failed for <who>. <then> from <peer>`, with the reason
/// after `<who>`, as docs/PROTOCOL.md promises; it is logged per source,
/// so a flood of failures is summarised instead of rotating real events
/// out of the log.
pub(crate) async fn refuse_proof(shard: &Shard, conn: &Conn, peer: IpAddr, why: AuthError, who: &str, then: &str) {
    let reason = why.label();
    // A bearer key in clear has had its line already, naming the key
    // that is exposed (see `exposed`): one line per refusal.
    if why != AuthError::BearerOverPlain {
        shard.event_from(
            peer,
            format!("Security check failed for {who}: {reason}. {then} from {peer}"),
        );
    }
    reject(shard, conn, Refusal::ProofRefused(why)).await;
}

/// Answers with a refusal, then closes gracefully (see [`LINGER`]).
pub(crate) async fn reject(shard: &Shard, conn: &Conn, why: Refusal<'_>) {
    Stats::bump(&shard.stats.rejected, why.status());
    if send(shard, conn, why.to_response(shard.shared.boot)).await.is_err() {
        return;
    }
    if conn.shutdown_write().await.is_err() {
        return;
    }
    let _ = compio::time::timeout(LINGER, async {
        let mut drained = 0;
        let mut buf = Vec::with_capacity(4096);
        while drained < LINGER_BYTES {
            let BufResult(res, b) = conn.read_into(buf).await;
            buf = b;
            match res {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
            buf.clear();
        }
    })
    .await;
}

/// Answers a connection whose hand-off the owner could not take (its
/// inbox is full): a 503 from here, rather than a silent close.
pub(crate) async fn refuse_handed(shard: &Shard, handoff: crate::gateway::core::handoff::Handoff) {
    log::warn!(
        "worker {} could not hand a connection over: the owner's inbox is full",
        shard.index
    );
    if let Ok((conn, _, _)) = super::handover::attach(handoff) {
        reject(shard, &conn, Refusal::WorkerBusy).await;
    }
}
