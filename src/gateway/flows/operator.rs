//! The operator behind a browse or connect, once operators are
//! configured: its ticket (`Ringway-Ticket`), checked, and the proof that
//! the request holds the ticket's possession key (`Ringway-Ticket-Proof`,
//! an HMAC over the key proof's signed string, so it inherits that
//! proof's freshness). With no operators there is nothing to check and
//! the key alone admits, as before.

use std::net::IpAddr;

use ring::hmac;

use super::answer::signed_string;
use crate::auth::ticket::{self, Expected};
use crate::auth::totp::{self, TotpError};
use crate::auth::{KeyId, unix_now};
use crate::config::{Config, Scope};
use crate::conn::Conn;
use crate::gateway::core::reply::Refusal;
use crate::gateway::core::stats::Stats;
use crate::gateway::shard::Shard;
use crate::http::RequestHead;
use crate::proto;

/// A checked ticket: who, and what they may reach.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The operator's name.
    pub operator: String,
    /// Its generation when the ticket was checked: a reload that changes
    /// it ends the sessions opened under the old one.
    pub generation: u64,
    /// What it may reach.
    pub scope: Scope,
}

/// The operator a request comes from: `Ok(None)` with no operators
/// configured; else its ticket must hold for this key (`kid`) and this
/// control (`control`), or the refusal to answer (logged here, summarised
/// per source).
pub(crate) fn grant(
    shard: &Shard,
    conn: &Conn,
    peer: IpAddr,
    head: &RequestHead,
    identity_raw: &str,
    control: &str,
    kid: KeyId,
) -> Result<Option<Grant>, Refusal<'static>> {
    let config = shard.config();
    if config.operators.is_empty() {
        return Ok(None);
    }
    let Some(text) = head.header(proto::H_TICKET) else {
        refused(shard, peer, control, "no_ticket");
        return Err(Refusal::SignInFirst);
    };
    let checked = check(shard, &config, conn, head, identity_raw, control, kid, text);
    checked.map(Some).map_err(|why| {
        refused(shard, peer, control, why);
        Refusal::SignInAgain
    })
}

/// Checks the ticket `text` and its proof; the label of the first check
/// that fails.
#[allow(clippy::too_many_arguments)]
fn check(
    shard: &Shard,
    config: &Config,
    conn: &Conn,
    head: &RequestHead,
    identity_raw: &str,
    control: &str,
    kid: KeyId,
    text: &str,
) -> Result<Grant, &'static str> {
    let keys = shard.shared.signin_keys.get().ok_or("no_ticket_key")?;
    let key_name = shard.keys.borrow().name_of(kid).to_string();
    let expected = Expected {
        key: &key_name,
        client: control,
    };
    let generation_of = |name: &str| config.operators.iter().find(|o| o.name == name).map(|o| o.generation);
    let ticket = ticket::check(&keys.ticket, text, unix_now(), &expected, generation_of).map_err(|e| e.label())?;
    // The ticket names a configured operator: `check` found its generation.
    let op = config
        .operators
        .iter()
        .find(|o| o.name == ticket.operator)
        .ok_or("operator_gone")?;
    if !op.scope.may_use_key(&key_name) {
        return Err("wrong_key");
    }
    let signed = signed_string(shard, conn, head, identity_raw).ok_or("no_key_proof")?;
    let mut tag = [0u8; 32];
    hex::decode_to_slice(head.header(proto::H_TICKET_PROOF).ok_or("no_proof")?, &mut tag)
        .map_err(|_| "malformed_proof")?;
    let possession = hmac::Key::new(hmac::HMAC_SHA256, &op.verifier.possession_key(text));
    hmac::verify(&possession, signed.as_bytes(), &tag).map_err(|_| "bad_proof")?;
    Ok(Grant {
        operator: op.name.clone(),
        generation: op.generation,
        scope: op.scope.clone(),
    })
}

/// With `[auth] totp_per_session`: the connect's `Ringway-Totp` code,
/// right and not used before (each code opens one session). An operator
/// without a secret has nothing to give.
pub(crate) async fn fresh_code(
    shard: &Shard,
    peer: IpAddr,
    head: &RequestHead,
    grant: &Grant,
) -> Result<(), Refusal<'static>> {
    let config = shard.config();
    if !config.auth.totp_per_session {
        return Ok(());
    }
    let Some(secret) = config
        .operators
        .iter()
        .find(|o| o.name == grant.operator)
        .and_then(|o| o.totp.as_ref())
    else {
        return Ok(());
    };
    let code = head.header(proto::H_TOTP).unwrap_or("");
    let checked = shard.shared.signins.accept_code(
        &grant.operator,
        std::time::Instant::now(),
        |last| totp::verify(secret, &totp::Params::DEFAULT, code, unix_now(), last),
        TotpError::Replayed,
    );
    let checked = match checked {
        Ok(step) if used_elsewhere(shard, &grant.operator, step).await => Err(TotpError::Replayed),
        other => other,
    };
    checked.map(|_| ()).map_err(|e| {
        let why = match e {
            TotpError::Malformed => "no_code",
            TotpError::Wrong => "wrong_code",
            TotpError::Replayed => "replayed_code",
        };
        refused(shard, peer, &grant.operator, why);
        Refusal::FreshCodeNeeded
    })
}

/// In a cluster, whether another gateway accepted TOTP step `step` of
/// `operator` (or a later one) already; this gateway's acceptance is then
/// refused too, so a code opens one sign-in or session cluster-wide.
/// With the directory away, the gateway's own check stands alone (and
/// the log says so): sign-ins keep working through a Redis outage.
pub(crate) async fn used_elsewhere(shard: &Shard, operator: &str, step: u64) -> bool {
    let Some(cluster) = &shard.shared.cluster else {
        return false;
    };
    match cluster.claim_step(operator, step).await {
        Ok(fresh) => !fresh,
        Err(why) => {
            log::warn!(
                "TOTP code of operator {} checked on this gateway only: {}",
                crate::eventlog::sanitize(operator),
                why.reason()
            );
            false
        }
    }
}

/// Counts and logs a refused ticket or code.
fn refused(shard: &Shard, peer: IpAddr, who: &str, why: &'static str) {
    Stats::bump(&shard.stats.ticket_refusals, why);
    shard.event_from(
        peer,
        format!(
            "Sign-in check failed for Control {}: {why}. Terminating connection from {peer}",
            crate::eventlog::sanitize(who)
        ),
    );
}
