//! `GET /v1/login`: an operator signs in (docs/PROTOCOL.md, "Operator
//! sign-in"). The request proves a gateway key like any other; after its
//! `101` the connection carries the SCRAM-ARGON2ID-SHA-256 exchange and,
//! when TOTP is on, a code, as text lines; a success ends with a ticket.
//!
//! The gateway only HMACs here: argon2 is the client's to run. The
//! exchange's state lives in this task and goes with it. What outlives a
//! sign-in (failures in a row, locks, the last TOTP step) is in the table
//! all workers share (`core::signins`), and the per-source bucket of
//! sign-ins is in the per-source table (`core::sources`).
//!
//! Password and code are judged together and answered once: a wrong
//! password, an unknown name, a locked operator, a key the operator may
//! not use and a wrong or replayed code all end `FAIL invalid-proof`
//! after the same work, and only the event log says which it was.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::answer::{identity, refuse_proof, reject, send, verify, wants_upgrade};
use crate::auth::scram::{self, ChannelBinding, ClientFirst, ScramError, ServerExchange};
use crate::auth::ticket::Ticket;
use crate::auth::totp::{self, TotpError};
use crate::auth::unix_now;
use crate::config::{Operator, TotpMode};
use crate::conn::Conn;
use crate::eventlog::sanitize;
use crate::gateway::core::permit::Permit;
use crate::gateway::core::reply::Refusal;
use crate::gateway::core::signin_history::SignInEntry;
use crate::gateway::core::signins::LockPolicy;
use crate::gateway::core::stats::Stats;
use crate::gateway::shard::{Shard, SignInKeys};
use crate::http::{self, RequestHead};
use crate::lines::{LineError, read_line};
use crate::proto::{self, MAX_LOGIN_LINE};
use crate::relay::Duplex;

/// Each of the client's plain steps (its first message, its code).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's argon2 step, between server-first and client-final: a
/// quarter second at the default cost on a laptop, far more on a slow
/// one, bounded all the same.
pub(crate) const HASH_TIMEOUT: Duration = Duration::from_secs(60);

/// The whole exchange after the `101`.
pub(crate) const FLOW_TIMEOUT: Duration = Duration::from_secs(120);

/// How a sign-in ended, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Signed in; a ticket was sent.
    Ok,
    /// No operator has this name.
    UnknownOperator,
    /// The operator is locked.
    Locked,
    /// The proof is wrong.
    WrongPassword,
    /// The key the request proved is not among the operator's.
    KeyNotAllowed,
    /// The TOTP code is missing or not a code.
    NoCode,
    /// The TOTP code is wrong.
    WrongCode,
    /// The TOTP code was accepted before.
    ReplayedCode,
    /// A message broke the grammar or its bounds, or the binding.
    Malformed,
    /// The client went quiet or away.
    Abandoned,
}

impl Outcome {
    /// A short label for logs and metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UnknownOperator => "unknown_operator",
            Outcome::Locked => "locked",
            Outcome::WrongPassword => "wrong_password",
            Outcome::KeyNotAllowed => "key_not_allowed",
            Outcome::NoCode => "no_code",
            Outcome::WrongCode => "wrong_code",
            Outcome::ReplayedCode => "replayed_code",
            Outcome::Malformed => "malformed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// `GET /v1/login`, upgraded to `ringway-login/1`.
pub(crate) async fn login(
    shard: Rc<Shard>,
    stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    early: Vec<u8>,
    _permit: Permit,
) {
    if !wants_upgrade(&head, proto::UPGRADE_LOGIN) {
        reject(&shard, &stream, Refusal::MustUpgrade("sign-in", proto::UPGRADE_LOGIN)).await;
        return;
    }
    let Some((identity_raw, control)) = identity(&head) else {
        reject(&shard, &stream, Refusal::BadName("control name")).await;
        return;
    };
    let control_shown = sanitize(&control);
    let kid = match verify(&shard, &stream, peer.ip(), &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            let who = format!("Control {control_shown}");
            refuse_proof(&shard, &stream, peer.ip(), why, &who, "Rejecting sign-in").await;
            return;
        }
    };
    let config = shard.config();
    if config.operators.is_empty() {
        reject(&shard, &stream, Refusal::NoOperators).await;
        return;
    }
    let Some(keys) = shard.shared.signin_keys.get() else {
        reject(&shard, &stream, Refusal::SignInUnavailable).await;
        return;
    };
    if let Err(refused) = shard.shared.sources.take_signin(peer.ip(), Instant::now()) {
        Stats::bump(&shard.stats.source_refusals, refused.why.label());
        shard.event_from(
            peer.ip(),
            format!("Sign-in refused from {}: {}", refused.source, refused.why.describe()),
        );
        reject(&shard, &stream, Refusal::Source(refused.why)).await;
        return;
    }
    let binding = match &stream {
        Conn::Plain(_) => ChannelBinding::None,
        Conn::Tls(tls) => match tls.export::<32>(scram::TLS_EXPORTER_LABEL) {
            Ok(data) => ChannelBinding::TlsExporter(data),
            Err(e) => {
                log::warn!("{peer}: no TLS keying material to bind the sign-in to: {e}");
                reject(&shard, &stream, Refusal::SignInUnavailable).await;
                return;
            }
        },
    };
    let boot = shard.shared.boot.to_string();
    let upgrade = http::switching_protocols(proto::UPGRADE_LOGIN, &[(proto::H_BOOT_WRITTEN, &boot)]);
    if send(&shard, &stream, upgrade).await.is_err() {
        return;
    }
    let key_name = shard.keys.borrow().name_of(kid).to_string();
    let ctx = Exchange {
        shard: &shard,
        stream: &stream,
        keys,
        key_name: &key_name,
        control: &control,
        binding,
    };
    let (user, outcome, answer) = match compio::time::timeout(FLOW_TIMEOUT, ctx.run(early)).await {
        Ok(done) => done,
        Err(_) => (None, Outcome::Abandoned, None),
    };
    Stats::bump(&shard.stats.sign_ins, outcome.label());
    let entry = SignInEntry {
        at: crate::timefmt::rfc3339(std::time::SystemTime::now()),
        operator: user.clone().unwrap_or_else(|| "?".into()),
        control: control.clone(),
        key: key_name.clone(),
        source: peer.ip().to_string(),
        outcome: outcome.label().into(),
    };
    shard
        .shared
        .signin_history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(entry);
    shard.shared.audit.record("sign_in", || {
        vec![
            ("operator", user.clone().unwrap_or_default().into()),
            ("key", key_name.as_str().into()),
            ("control", control.as_str().into()),
            ("source", peer.ip().to_string().into()),
            ("outcome", outcome.label().into()),
        ]
    });
    let user_shown = user.as_deref().map_or_else(|| "?".to_string(), sanitize);
    if outcome == Outcome::Ok {
        shard.event(format!(
            "Operator {user_shown} signed in as Control {control_shown} with key {key_name} from {}",
            peer.ip()
        ));
    } else {
        shard.event_from(
            peer.ip(),
            format!(
                "Sign-in failed for Operator {user_shown}: {}. Rejecting sign-in from {}",
                outcome.label(),
                peer.ip()
            ),
        );
    }
    if let Some(answer) = answer {
        let _ = send(&shard, &stream, answer.into_bytes()).await;
    }
    let _ = stream.shutdown_write().await;
}

/// One sign-in's exchange after the `101`.
struct Exchange<'a> {
    shard: &'a Shard,
    stream: &'a Conn,
    keys: &'a SignInKeys,
    key_name: &'a str,
    control: &'a str,
    binding: ChannelBinding,
}

/// The operator name given (once parsed), how it ended, and the last
/// lines to send (none if the client is gone).
type Ended = (Option<String>, Outcome, Option<String>);

impl Exchange<'_> {
    async fn run(&self, early: Vec<u8>) -> Ended {
        let mut pending = early;
        let first = match self.message(&mut pending, "SCRAM ", STEP_TIMEOUT).await {
            Ok(m) => m,
            Err(ended) => return ended,
        };
        let first = match ClientFirst::parse(&first) {
            Ok(f) => f,
            Err(e) => return (None, Outcome::Malformed, Some(fail(&e))),
        };
        let user = first.user().to_string();
        let config = self.shard.config();
        let operator = config.operators.iter().find(|o| o.name == user);
        // A locked operator or an unknown name gets the same exchange as
        // anyone, with the operator's real verifier or a mock one.
        let verifier = operator.map_or_else(|| self.keys.mock.verifier_for(&user), |o| o.verifier.clone());
        let (exchange, server_first) =
            match ServerExchange::start(first, verifier, self.binding, &scram::random_nonce()) {
                Ok(started) => started,
                Err(e) => return (Some(user), Outcome::Malformed, Some(fail(&e))),
            };
        let ask_code = config.auth.totp != TotpMode::Off;
        let mut lines = format!("SCRAM {server_first}\n");
        if ask_code {
            lines.push_str("CODE\n");
        }
        if send(self.shard, self.stream, lines.into_bytes()).await.is_err() {
            return (Some(user), Outcome::Abandoned, None);
        }
        let client_final = match self.message(&mut pending, "SCRAM ", HASH_TIMEOUT).await {
            Ok(m) => m,
            Err((_, outcome, answer)) => return (Some(user), outcome, answer),
        };
        let code = if ask_code {
            match self.message(&mut pending, "CODE ", STEP_TIMEOUT).await {
                Ok(c) => Some(c),
                Err((_, outcome, answer)) => return (Some(user), outcome, answer),
            }
        } else {
            None
        };
        let proved = exchange.finish(&client_final);
        let now = Instant::now();
        let signins = &self.shard.shared.signins;
        let outcome = match (operator, &proved) {
            (_, Err(e)) if *e != ScramError::InvalidProof && *e != ScramError::NonceMismatch => {
                return (Some(user), Outcome::Malformed, Some(fail(e)));
            }
            (None, _) => Outcome::UnknownOperator,
            (Some(op), _) if signins.locked(&op.name, now) => Outcome::Locked,
            (Some(_), Err(_)) => Outcome::WrongPassword,
            (Some(op), Ok(_)) if !op.scope.may_use_key(self.key_name) => Outcome::KeyNotAllowed,
            // totp = "off" asks no one, even an operator with a secret.
            (Some(_), Ok(_)) if !ask_code => Outcome::Ok,
            (Some(op), Ok(_)) => self.check_code(op, code.as_deref(), now).await,
        };
        let Some(op) = operator.filter(|_| outcome != Outcome::UnknownOperator) else {
            return (
                Some(user),
                outcome,
                Some(format!("FAIL {}\n", ScramError::InvalidProof.wire_value())),
            );
        };
        if outcome != Outcome::Ok {
            let policy = LockPolicy {
                after: config.auth.lockout_after,
                lasts: config.auth.lockout,
            };
            if outcome != Outcome::Locked && signins.failed(&op.name, now, policy) {
                self.shard.event(format!(
                    "Operator {} is locked for {} minutes after {} failed sign-ins in a row",
                    op.name,
                    policy.lasts.as_secs() / 60,
                    policy.after
                ));
            }
            return (
                Some(user),
                outcome,
                Some(format!("FAIL {}\n", ScramError::InvalidProof.wire_value())),
            );
        }
        signins.succeeded(&op.name);
        let Ok(success) = proved else {
            // `check_code` is reached only with a proof that held.
            return (Some(user), Outcome::WrongPassword, Some("FAIL other-error\n".into()));
        };
        let minted = Ticket::new(
            &op.name,
            op.generation,
            self.key_name,
            self.control,
            unix_now(),
            config.auth.ticket_lifetime,
        );
        match minted {
            Ok(ticket) => {
                let text = ticket.mint(&self.keys.ticket);
                let lines = format!("SCRAM {}\nTICKET {text} {}\n", success.server_final, ticket.expires_at);
                (Some(user), Outcome::Ok, Some(lines))
            }
            Err(e) => {
                log::warn!("cannot mint a ticket for {}: {}", op.name, e.label());
                (Some(user), Outcome::Malformed, Some("FAIL other-error\n".into()))
            }
        }
    }

    /// The operator's code, if it must give one: right, and of a step
    /// after the last one accepted (checked and stored under one lock, so
    /// no two workers accept the same code).
    async fn check_code(&self, op: &Operator, code: Option<&str>, now: Instant) -> Outcome {
        let Some(secret) = &op.totp else {
            // No secret (allowed while totp = "optional"): `CODE none`,
            // or anything, is all it can give.
            return Outcome::Ok;
        };
        let Some(code) = code.filter(|c| *c != "none") else {
            return Outcome::NoCode;
        };
        let checked = self.shard.shared.signins.accept_code(
            &op.name,
            now,
            |last| totp::verify(secret, &totp::Params::DEFAULT, code, unix_now(), last),
            TotpError::Replayed,
        );
        match checked {
            Ok(step) if super::operator::used_elsewhere(self.shard, &op.name, step).await => Outcome::ReplayedCode,
            Ok(_) => Outcome::Ok,
            Err(TotpError::Malformed) => Outcome::NoCode,
            Err(TotpError::Wrong) => Outcome::WrongCode,
            Err(TotpError::Replayed) => Outcome::ReplayedCode,
        }
    }

    /// The next line, which must start with `word`; its rest.
    async fn message(&self, pending: &mut Vec<u8>, word: &str, within: Duration) -> Result<String, Ended> {
        let read = compio::time::timeout(within, read_line(self.stream, pending, MAX_LOGIN_LINE)).await;
        match read {
            Err(_) => Err((None, Outcome::Abandoned, Some("FAIL other-error\n".into()))),
            Ok(Err(LineError::Closed | LineError::Io(_))) => Err((None, Outcome::Abandoned, None)),
            Ok(Err(LineError::TooLong | LineError::NotText)) => {
                Err((None, Outcome::Malformed, Some(fail(&ScramError::TooLong))))
            }
            Ok(Ok(line)) => match line.strip_prefix(word) {
                Some(rest) => Ok(rest.to_string()),
                None => Err((
                    None,
                    Outcome::Malformed,
                    Some(fail(&ScramError::Malformed(scram::Part::Message))),
                )),
            },
        }
    }
}

/// The `FAIL` line for an exchange error.
fn fail(e: &ScramError) -> String {
    format!("FAIL {}\n", e.wire_value())
}
