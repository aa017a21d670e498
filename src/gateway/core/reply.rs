//! Every refusal the gateway answers with: its status and its one-line
//! reason, in one place, so the texts that clients, tests and operators
//! read stay exact and consistent. No I/O: the flows write the bytes.

use std::borrow::Cow;

use super::pairing::PairError;
use super::sources::SourceRefusal;
use crate::auth::agentkey::AgentKeyError;
use crate::auth::{AuthError, BootId, STALE_BOOT};
use crate::http::{self, HeadError};
use crate::proto;

/// Why a request is refused. Names in it are already sanitised for
/// display by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal<'a> {
    /// The request head did not arrive within the head deadline.
    HeadTimeout,
    /// Plain HTTP to a gateway that requires TLS.
    TlsRequired,
    /// The head could not be parsed or is too large.
    BadHead(HeadError),
    /// A path the gateway does not serve.
    NoEndpoint,
    /// A method other than GET.
    MethodNotAllowed,
    /// The connection cap is reached.
    AtConnectionLimit,
    /// The peer's source is over one of its limits.
    Source(SourceRefusal),
    /// The gateway is draining for a shutdown.
    ShuttingDown,
    /// The request did not ask to upgrade: what it was, and to which protocol.
    MustUpgrade(&'static str, &'static str),
    /// A name header or path segment is missing or invalid: which one.
    BadName(&'static str),
    /// The key proof was refused.
    ProofRefused(AuthError),
    /// The licensed maximum of agents is connected.
    Licence(usize),
    /// The agent's key has its quota of agents connected.
    KeyQuota(usize),
    /// The client list could not be encoded.
    CannotEncode,
    /// No room to wait for an agent, and whose share ran out.
    TooManyWaiting(PairError),
    /// No agent of that name with the control's key.
    NoSuchClient(&'a str),
    /// The agent's channel is not draining.
    NotReading(&'a str),
    /// The agent could not reach its local service.
    Unreachable(&'a str),
    /// The agent did not join within the pairing deadline (seconds).
    JoinTimeout(&'a str, u64),
    /// A data connection for a session that is not waiting here.
    NoSuchSession,
    /// The control gave up before the agent's data connection arrived.
    ControlGone,
    /// The worker that must serve the request is too far behind to take it.
    WorkerBusy,
    /// Another worker did not answer in time: what was asked.
    WorkerSlow(&'static str),
    /// A sign-in to a gateway without operators.
    NoOperators,
    /// Sign-in cannot run: the ticket key could not be made or read.
    SignInUnavailable,
    /// Operators are configured and the request has no ticket.
    SignInFirst,
    /// The ticket or its proof failed a check.
    SignInAgain,
    /// `totp_per_session`: the connect's code is missing, wrong or used.
    FreshCodeNeeded,
    /// The agent name is pinned to another machine's agent key.
    NameTaken(&'a str),
    /// Names are pinned and the registration has no agent key.
    AgentKeyRequired,
    /// The agent key headers are broken, or their signature does not hold.
    AgentKey(AgentKeyError),
    /// `max_pins` names are pinned; no new one can be.
    PinsFull,
    /// The pin store could not be opened or written.
    PinsUnavailable,
    /// The approval hook said no, or did not answer in time.
    NotApproved,
    /// Too many connects are waiting for the approval hook.
    ApprovalsBusy,
    /// The agent may be on another gateway of the cluster, and the
    /// cluster directory cannot say: why.
    ClusterUnavailable(&'a str),
    /// Relaying to the agent's gateway failed: the status to give (that
    /// gateway's, or 502) and the reason.
    Relay(u16, &'a str),
}

impl Refusal<'_> {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::HeadTimeout => 408,
            Refusal::TlsRequired => 403,
            Refusal::BadHead(e) => e.status(),
            Refusal::NoEndpoint | Refusal::NoSuchClient(_) | Refusal::NoSuchSession => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::Source(SourceRefusal::Rate(_) | SourceRefusal::SignIns) => 429,
            Refusal::AtConnectionLimit
            | Refusal::Source(_)
            | Refusal::ShuttingDown
            | Refusal::Licence(_)
            | Refusal::KeyQuota(_)
            | Refusal::TooManyWaiting(_)
            | Refusal::NotReading(_)
            | Refusal::WorkerBusy
            | Refusal::WorkerSlow(_)
            | Refusal::SignInUnavailable
            | Refusal::PinsFull
            | Refusal::PinsUnavailable
            | Refusal::ApprovalsBusy
            | Refusal::ClusterUnavailable(_)
            | Refusal::ProofRefused(AuthError::NonceQuota) => 503,
            Refusal::NameTaken(_) => 409,
            Refusal::AgentKeyRequired => 400,
            Refusal::AgentKey(e) => e.status(),
            Refusal::NoOperators => 404,
            Refusal::NotApproved => 403,
            Refusal::SignInFirst | Refusal::SignInAgain | Refusal::FreshCodeNeeded => 401,
            Refusal::MustUpgrade(..) => 426,
            Refusal::BadName(_) => 400,
            Refusal::ProofRefused(_) => 401,
            Refusal::CannotEncode => 500,
            Refusal::Unreachable(_) => 502,
            Refusal::JoinTimeout(..) => 504,
            Refusal::ControlGone => 410,
            Refusal::Relay(status, _) => *status,
        }
    }

    /// The one-line reason in the body.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Refusal::HeadTimeout => "request head not received in time".into(),
            Refusal::TlsRequired => "this gateway accepts TLS (https) connections only".into(),
            Refusal::BadHead(e) => e.reason().into(),
            Refusal::NoEndpoint => "no such endpoint".into(),
            Refusal::MethodNotAllowed => "only GET is served here".into(),
            Refusal::AtConnectionLimit => "the gateway is at its connection limit; try again later".into(),
            // No numbers: a prober learns nothing of the limits.
            Refusal::Source(SourceRefusal::Unauthenticated(_)) => {
                "too many connections from your address have not proven a key; try again later".into()
            }
            Refusal::Source(SourceRefusal::Rate(_)) => {
                "too many new connections from your address; slow down and try again".into()
            }
            Refusal::Source(SourceRefusal::TableFull) => {
                "too many addresses are connecting at once; try again later".into()
            }
            Refusal::Source(SourceRefusal::SignIns) => {
                "too many sign-ins from your address; wait a minute and try again".into()
            }
            Refusal::ShuttingDown => "the gateway is shutting down; try again later".into(),
            Refusal::MustUpgrade(what, proto) => format!("{what} must upgrade to {proto}").into(),
            Refusal::BadName(what) => format!("missing or invalid {what}").into(),
            // The same for every failed check, so a prober learns nothing,
            // except a bearer key sent in clear, which the client must be
            // told to stop doing.
            Refusal::ProofRefused(AuthError::BearerOverPlain) => {
                "bearer keys are accepted over TLS (https) only; over plain HTTP prove the key".into()
            }
            // Not a secret: the current boot id is in every answer.
            Refusal::ProofRefused(AuthError::StaleBoot) => format!(
                "{STALE_BOOT}: this proof was not signed with the gateway's current boot id; \
                 sign again with this answer's Ringway-Boot"
            )
            .into(),
            Refusal::ProofRefused(AuthError::NonceQuota) => {
                "this gateway key has made too many key proofs in the last few minutes; try again later".into()
            }
            Refusal::ProofRefused(_) => "gateway key proof refused".into(),
            Refusal::Licence(max) => format!("licensed maximum of {max} clients reached").into(),
            Refusal::KeyQuota(max) => format!("this gateway key has its maximum of {max} clients connected").into(),
            Refusal::CannotEncode => "cannot encode the client list".into(),
            Refusal::TooManyWaiting(e) => format!("too many sessions waiting for their clients {}", e.scope()).into(),
            // Same answer whether the name is unknown or belongs to another
            // key: a control learns nothing about other keys' agents.
            Refusal::NoSuchClient(a) => format!("no client named {a} is connected").into(),
            Refusal::NotReading(a) => format!("client {a} is not reading its channel").into(),
            Refusal::Unreachable(a) => format!("client {a} could not reach its local service").into(),
            Refusal::JoinTimeout(a, secs) => format!("client {a} did not join the session within {secs} s").into(),
            Refusal::NoSuchSession => "no such session".into(),
            Refusal::ControlGone => "the control stopped waiting".into(),
            Refusal::WorkerBusy => "the gateway is busy; try again shortly".into(),
            Refusal::WorkerSlow(what) => format!("a gateway worker did not answer in time ({what})").into(),
            Refusal::NoOperators => "this gateway has no operators".into(),
            Refusal::SignInUnavailable => "operator sign-in is unavailable on this gateway; try again later".into(),
            Refusal::SignInFirst => "sign in first: ringway control login".into(),
            Refusal::SignInAgain => "sign in again: ringway control login".into(),
            Refusal::FreshCodeNeeded => "a fresh TOTP code is needed".into(),
            Refusal::NameTaken(a) => format!(
                "the name {a} is taken by another machine (its agent key differs); \
                 choose another name, or ask the administrator to release it"
            )
            .into(),
            Refusal::AgentKeyRequired => {
                "this gateway pins agent names to agent keys: upgrade the agent (it sends Ringway-Agent-Key)".into()
            }
            Refusal::AgentKey(e) => e.reason().into(),
            Refusal::PinsFull => "this gateway can pin no more agent names; try again later".into(),
            Refusal::PinsUnavailable => "agent name pins are unavailable on this gateway; try again later".into(),
            Refusal::NotApproved => "the connection was not approved".into(),
            Refusal::ApprovalsBusy => "too many connections are waiting for approval; try again later".into(),
            Refusal::ClusterUnavailable(why) => format!("no client of that name is here, and {why}").into(),
            Refusal::Relay(_, why) => why.to_string().into(),
        }
    }

    /// The whole response: status line, headers (the gateway's boot id
    /// among them, as in every answer) and the reason as body.
    pub fn to_response(&self, boot: BootId) -> Vec<u8> {
        http::error_response(
            self.status(),
            &[(proto::H_BOOT_WRITTEN, &boot.to_string())],
            &self.reason(),
        )
    }

    /// As [`Refusal::to_response`] but leaving the connection open for
    /// the peer's next request: for a proof to be signed again.
    pub fn to_keep_alive_response(&self, boot: BootId) -> Vec<u8> {
        let body = format!("{}\n", self.reason());
        http::response_keep_alive(
            self.status(),
            &[(proto::H_BOOT_WRITTEN, &boot.to_string())],
            "text/plain; charset=utf-8",
            body.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_are_exact() {
        let cases: Vec<(Refusal, u16, &str)> = vec![
            (Refusal::HeadTimeout, 408, "request head not received in time"),
            (Refusal::NoEndpoint, 404, "no such endpoint"),
            (
                Refusal::MustUpgrade("connect", "ringway-relay/1"),
                426,
                "connect must upgrade to ringway-relay/1",
            ),
            (Refusal::BadName("agent name"), 400, "missing or invalid agent name"),
            (
                Refusal::ProofRefused(AuthError::Replayed),
                401,
                "gateway key proof refused",
            ),
            (
                Refusal::ProofRefused(AuthError::NonceQuota),
                503,
                "this gateway key has made too many key proofs in the last few minutes; try again later",
            ),
            (Refusal::Licence(2), 503, "licensed maximum of 2 clients reached"),
            (
                Refusal::KeyQuota(5),
                503,
                "this gateway key has its maximum of 5 clients connected",
            ),
            (
                Refusal::Source(SourceRefusal::Unauthenticated(8)),
                503,
                "too many connections from your address have not proven a key; try again later",
            ),
            (
                Refusal::Source(SourceRefusal::Rate(100)),
                429,
                "too many new connections from your address; slow down and try again",
            ),
            (
                Refusal::Source(SourceRefusal::TableFull),
                503,
                "too many addresses are connecting at once; try again later",
            ),
            (
                Refusal::ShuttingDown,
                503,
                "the gateway is shutting down; try again later",
            ),
            (
                Refusal::TooManyWaiting(PairError::KeyFull),
                503,
                "too many sessions waiting for their clients for this gateway key",
            ),
            (Refusal::NoSuchClient("pc1"), 404, "no client named pc1 is connected"),
            (
                Refusal::JoinTimeout("mute", 1),
                504,
                "client mute did not join the session within 1 s",
            ),
            (Refusal::ControlGone, 410, "the control stopped waiting"),
            (Refusal::NoOperators, 404, "this gateway has no operators"),
            (Refusal::SignInFirst, 401, "sign in first: ringway control login"),
            (Refusal::SignInAgain, 401, "sign in again: ringway control login"),
            (Refusal::FreshCodeNeeded, 401, "a fresh TOTP code is needed"),
            (Refusal::NotApproved, 403, "the connection was not approved"),
            (
                Refusal::ApprovalsBusy,
                503,
                "too many connections are waiting for approval; try again later",
            ),
            (
                Refusal::Source(SourceRefusal::SignIns),
                429,
                "too many sign-ins from your address; wait a minute and try again",
            ),
            (Refusal::WorkerBusy, 503, "the gateway is busy; try again shortly"),
            (
                Refusal::WorkerSlow("client list"),
                503,
                "a gateway worker did not answer in time (client list)",
            ),
        ];
        for (r, status, reason) in cases {
            assert_eq!((r.status(), r.reason().as_ref()), (status, reason), "{r:?}");
        }
    }

    #[test]
    fn a_bearer_key_in_clear_is_told_apart_from_other_failures() {
        let clear = Refusal::ProofRefused(AuthError::BearerOverPlain).reason();
        assert!(clear.starts_with("bearer keys are accepted over TLS"), "{clear}");
        assert_ne!(clear, Refusal::ProofRefused(AuthError::UnknownKey).reason());
    }

    #[test]
    fn the_response_carries_status_and_reason() {
        let boot = BootId([0xab; 16]);
        let bytes = Refusal::NoSuchSession.to_response(boot);
        let text = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 404 Not Found\r\nRingway-Boot: {boot}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 16\r\nConnection: close\r\n\r\nno such session\n"
            )
        );
        let stale = Refusal::ProofRefused(AuthError::StaleBoot).to_keep_alive_response(boot);
        let text = String::from_utf8(stale).expect("ascii");
        assert!(
            text.starts_with(&format!("HTTP/1.1 401 Unauthorized\r\nRingway-Boot: {boot}\r\n")),
            "{text}"
        );
        assert!(!text.contains("Connection:"), "{text}");
        assert!(text.contains("\r\n\r\nstale_boot: "), "{text}");
    }
}
