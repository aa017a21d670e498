//! The client's side of an operator sign-in (docs/PROTOCOL.md, "Operator
//! sign-in"): a request proving the gateway key, upgraded to
//! `ringway-login/1`, then the SCRAM-ARGON2ID-SHA-256 exchange and, if
//! the gateway asks, a TOTP code. The password never leaves this process:
//! argon2 runs here, on a thread of its own, and only a proof is sent.
//! What comes back is a ticket and the key that proves holding it.

use std::fmt;

use futures_channel::oneshot;

use super::{ClientError, Endpoint, dial, refused, request};
use crate::auth::scram::{self, ChannelBinding, Client, ParamPolicy, ScramError};
use crate::conn::Conn;
use crate::lines::{LineError, read_line};
use crate::proto::{self, MAX_LOGIN_LINE};
use crate::relay::Duplex;

/// What a sign-in earns: the ticket and the key proving it is ours.
/// `Debug` hides both.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorTicket {
    /// The operator signed in.
    pub operator: String,
    /// The gateway's ticket (`rwt1.…`), sent with every browse and connect.
    pub ticket: String,
    /// HMAC key over each request's signed string (`Ringway-Ticket-Proof`).
    pub possession: [u8; 32],
    /// Unix seconds after which the gateway no longer takes the ticket.
    pub expires_at: u64,
}

impl fmt::Debug for OperatorTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OperatorTicket({:?}, until {}, secrets hidden)",
            self.operator, self.expires_at
        )
    }
}

/// Where the TOTP code comes from when the gateway asks for one: called
/// at most once, after the password's hash, with the operator's name;
/// `None` says "I have no code" (`CODE none`).
pub type CodeSource<'a> = &'a mut dyn FnMut() -> Result<Option<String>, String>;

/// What proves the operator: its password, or (for tools that hashed it
/// already, and for tests of what a stolen secret can do) the argon2
/// `SaltedPassword` itself.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// The password: hashed here with the gateway's salt and parameters.
    Password(&'a [u8]),
    /// `SaltedPassword`, used as it is.
    Salted(&'a [u8; 32]),
}

/// Signs in as `user` with `password` through `ep`'s gateway and key.
/// A refused sign-in is [`ClientError::Refused`] with status 401 and the
/// gateway's error (`invalid-proof` for a wrong password, an unknown
/// name, a lock, or a wrong code alike).
pub async fn login(
    ep: &Endpoint,
    user: &str,
    password: &[u8],
    code: CodeSource<'_>,
) -> Result<OperatorTicket, ClientError> {
    login_with(ep, user, Credential::Password(password), code).await
}

/// As [`login`], with any [`Credential`].
pub async fn login_with(
    ep: &Endpoint,
    user: &str,
    credential: Credential<'_>,
    code: CodeSource<'_>,
) -> Result<OperatorTicket, ClientError> {
    let stream = dial(ep).await?;
    let extra = [
        ("Upgrade", proto::UPGRADE_LOGIN.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    let (head, early) = request(ep, &stream, "GET", proto::PATH_LOGIN, &extra).await?;
    if head.status != 101 {
        return Err(refused(&stream, &head, early).await);
    }
    let binding = match &stream {
        Conn::Plain(_) => ChannelBinding::None,
        Conn::Tls(tls) => ChannelBinding::TlsExporter(tls.export(scram::TLS_EXPORTER_LABEL)?),
    };
    let scram_err = |e: ScramError| ClientError::Protocol(format!("sign-in: {e}"));
    let (client, first) = Client::start(user, &scram::random_nonce(), binding).map_err(scram_err)?;
    let mut pending = early;
    write_line(&stream, format!("SCRAM {first}\n")).await?;
    let server_first = expect(&stream, &mut pending, "SCRAM ").await?;
    let challenge = client.receive(&server_first, &ParamPolicy::STRONG).map_err(scram_err)?;
    let salted = match credential {
        Credential::Password(password) => hash_off_thread(password, challenge.salt(), challenge.params()).await?,
        Credential::Salted(salted) => *salted,
    };
    let (client_final, message) = challenge.respond_salted(&salted);
    write_line(&stream, format!("SCRAM {message}\n")).await?;
    let mut next = expect_any(&stream, &mut pending).await?;
    if next == "CODE" {
        let given = code().map_err(ClientError::Protocol)?;
        let given = given.filter(|c| !c.is_empty()).unwrap_or_else(|| "none".to_string());
        if given.len() > 16 || !given.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ClientError::Protocol("a TOTP code is digits".into()));
        }
        write_line(&stream, format!("CODE {given}\n")).await?;
        next = expect_any(&stream, &mut pending).await?;
    }
    let server_final = word(&next, "SCRAM ")?;
    let signed = client_final.verify(server_final).map_err(scram_err)?;
    let ticket_line = expect(&stream, &mut pending, "TICKET ").await?;
    let (ticket, expires) = ticket_line
        .split_once(' ')
        .ok_or_else(|| ClientError::Protocol("a TICKET line without its expiry".into()))?;
    let expires_at = expires
        .parse()
        .map_err(|_| ClientError::Protocol("a TICKET expiry that is not a number".into()))?;
    Ok(OperatorTicket {
        operator: user.to_string(),
        possession: signed.possession_key(ticket),
        ticket: ticket.to_string(),
        expires_at,
    })
}

/// argon2 on a thread of its own, so the runtime's other tasks (and its
/// timers) keep running while it hashes.
async fn hash_off_thread(password: &[u8], salt: &[u8], params: scram::Argon2Params) -> Result<[u8; 32], ClientError> {
    let (tx, rx) = oneshot::channel();
    let (password, salt) = (password.to_vec(), salt.to_vec());
    std::thread::Builder::new()
        .name("ringway-argon2".into())
        .spawn(move || {
            let _ = tx.send(scram::salted_password(&password, &salt, &params));
        })
        .map_err(ClientError::Io)?;
    rx.await
        .map_err(|_| ClientError::Protocol("the password hash did not finish".into()))?
        .map_err(|e| ClientError::Protocol(format!("sign-in: {e}")))
}

async fn write_line(stream: &Conn, line: String) -> Result<(), ClientError> {
    let compio::BufResult(res, _) = stream.write_all_from(line.into_bytes()).await;
    Ok(res?)
}

/// The next line, whatever it is; `FAIL <error>` becomes the refusal.
async fn expect_any(stream: &Conn, pending: &mut Vec<u8>) -> Result<String, ClientError> {
    let line = compio::time::timeout(super::RESPONSE_TIMEOUT, read_line(stream, pending, MAX_LOGIN_LINE))
        .await
        .map_err(|_| ClientError::Timeout("the gateway did not answer the sign-in in time"))?
        .map_err(|e| match e {
            LineError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(format!("sign-in: {other}")),
        })?;
    if let Some(error) = line.strip_prefix("FAIL ") {
        let error: String = error
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        return Err(ClientError::Refused {
            status: 401,
            reason: format!("sign-in refused: {error}"),
        });
    }
    Ok(line)
}

/// The next line, which must start with `prefix`; its rest.
async fn expect(stream: &Conn, pending: &mut Vec<u8>, prefix: &str) -> Result<String, ClientError> {
    let line = expect_any(stream, pending).await?;
    word(&line, prefix).map(str::to_string)
}

fn word<'a>(line: &'a str, prefix: &str) -> Result<&'a str, ClientError> {
    line.strip_prefix(prefix)
        .ok_or_else(|| ClientError::Protocol(format!("sign-in: expected {}", prefix.trim_end())))
}
