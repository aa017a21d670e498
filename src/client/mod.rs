//! The client side of the protocol: what agents, controls, the load
//! generator and the tests speak. Portable (compio drives IOCP on Windows
//! and poll/kqueue elsewhere; io_uring on Linux).

mod agent;
pub mod backoff;
pub mod failover;
pub mod identity;
pub mod login;
pub mod ranges;
pub mod roam;
pub mod sysinfo;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compio::BufResult;
use compio::net::{TcpSocket, TcpStream};

pub use agent::{AgentChannel, AgentHandler, AgentInfo, ChannelEnd, Outgoing};
pub use login::{Credential, OperatorTicket, login, login_with};

use crate::auth::{
    Binding, BootId, EXPORTER_LABEL, GatewayKey, STALE_BOOT, Signed, new_nonce, sign, string_to_sign, unix_now,
};
use crate::conn::Conn;
use crate::http::{self, HeadError, ResponseHead, pct_encode};
use crate::proto::{self, AgentSummary, SessionId};
use crate::relay::Duplex;
use crate::tls::{TlsConn, Trust};

/// How long a client waits for the gateway's answer to a request. A
/// connect waits for the agent to join (the gateway's pairing deadline,
/// 10 s by default), so this leaves room past that.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connect waits for its answer: the gateway may first ask its
/// approval hook (up to `[auth] approve_timeout_secs`, at most 60 s: a
/// person answering a push) and then wait for the agent to join (10 s by
/// default).
pub const CONNECT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a client waits for the TCP connection to the gateway. A
/// dropped SYN is retried by the kernel for minutes; 10 s is long enough
/// for a slow uplink and short enough that an agent moves on to its
/// backoff.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body read (a client list). 16 MiB holds ~50,000
/// agents' summaries. A longer answer is refused unread.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Largest error body read for its reason. The gateway's reasons are one
/// line; a longer body is not a reason, and the status line's phrase is
/// shown instead.
pub const MAX_REASON_BYTES: usize = 4 << 10;

/// Where and as whom a client talks to a gateway.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port` of the gateway.
    pub gateway: String,
    /// The gateway key to prove.
    pub key: GatewayKey,
    /// This client's name (agent name, or the control's name).
    pub identity: String,
    /// Source address to dial from (the load generator spreads its
    /// connections over several to stay within ports per address).
    pub bind: Option<IpAddr>,
    /// TLS to the gateway, if its address was given as `https://`.
    pub tls: Option<ClientTls>,
    /// The boot id last heard from the gateway, which plain-HTTP proofs
    /// are signed with; shared by the endpoint's clones (an agent's
    /// channel and its sessions, a load generator's clients), so only the
    /// first request after a gateway restart pays a second round trip.
    pub boot: BootCache,
    /// The operator's ticket, once signed in: sent with its proof next to
    /// every key proof (none for agents, or a gateway without operators).
    pub operator: Option<Arc<OperatorTicket>>,
    /// A fresh TOTP code for the next connect, with `[auth]
    /// totp_per_session` (each code opens one session).
    pub totp: Option<String>,
    /// The agent's key pair, whose public key and signature go with every
    /// registration so the gateway can pin the name to this machine
    /// (none for controls).
    pub agent_key: Option<Arc<identity::AgentIdentity>>,
}

/// The gateway boot id a client last heard, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct BootCache(Arc<Mutex<Option<BootId>>>);

impl BootCache {
    /// A cache that knows `id` already (a cluster says a gateway's boot
    /// id with its address).
    pub fn known(id: BootId) -> BootCache {
        BootCache(Arc::new(Mutex::new(Some(id))))
    }

    /// The id last heard, if any.
    pub fn get(&self) -> Option<BootId> {
        // Poisoned only if a thread panicked while storing a Copy value.
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the `Ringway-Boot` of an answer, if it has a valid one.
    pub fn learn(&self, head: &ResponseHead) {
        if let Some(id) = head.header(proto::H_BOOT).and_then(BootId::parse) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        }
    }
}

/// How a client speaks TLS to the gateway.
#[derive(Clone)]
pub struct ClientTls {
    /// Trust settings and ALPN, built once.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name the certificate must carry (the gateway's host).
    pub server_name: String,
}

impl Endpoint {
    /// An endpoint for `gateway`, which is `host:port` or `http://host:port`
    /// (plain) or `https://host:port` (TLS, verified as `trust` says).
    pub fn new(gateway: &str, key: GatewayKey, identity: &str, trust: &Trust) -> Result<Endpoint, String> {
        let (tls, host_port) = if let Some(rest) = gateway.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, gateway.strip_prefix("http://").unwrap_or(gateway))
        };
        let host_port = host_port.trim_end_matches('/').to_string();
        let host = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                h.trim_start_matches('[').trim_end_matches(']')
            }
            _ => {
                return Err(format!(
                    "gateway {gateway:?} must be HOST:PORT, http://HOST:PORT or https://HOST:PORT"
                ));
            }
        };
        let tls = if tls {
            Some(ClientTls {
                config: crate::tls::client_config(trust)?,
                server_name: host.to_string(),
            })
        } else {
            None
        };
        Ok(Endpoint {
            gateway: host_port,
            key,
            identity: identity.to_string(),
            bind: None,
            tls,
            boot: BootCache::default(),
            operator: None,
            totp: None,
            agent_key: None,
        })
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("gateway", &self.gateway)
            .field("key", &self.key)
            .field("identity", &self.identity)
            .finish()
    }
}

/// Why a request failed. Callers branch on it: a refusal carries the
/// gateway's status and reason; I/O and protocol errors mean retry later.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed.
    Io(io::Error),
    /// The gateway answered with an error status.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's one-line reason.
        reason: String,
    },
    /// The gateway's answer made no sense.
    Protocol(String),
    /// A deadline passed: which wait it was.
    Timeout(&'static str),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Refused { status, reason } => write!(f, "gateway refused ({status}): {reason}"),
            ClientError::Protocol(why) => write!(f, "protocol error: {why}"),
            ClientError::Timeout(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// A relay connection after its `101`: the socket and any bytes that came
/// with the response (they belong to the relayed stream).
pub struct Session {
    /// The connection, now a raw byte stream to the peer.
    pub stream: Conn,
    /// Bytes already read past the response head.
    pub early: Vec<u8>,
}

/// Opens a connection to the gateway, with TLS if the endpoint says so.
pub async fn dial(ep: &Endpoint) -> io::Result<Conn> {
    let tcp = compio::time::timeout(CONNECT_TIMEOUT, dial_tcp(ep))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the gateway timed out"))??;
    let Some(tls) = &ep.tls else {
        return Ok(Conn::Plain(tcp));
    };
    let state = crate::tls::client_connection(tls.config.clone(), &tls.server_name)?;
    let conn = TlsConn::new(tcp, state, Vec::new());
    compio::time::timeout(RESPONSE_TIMEOUT, conn.handshake())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake with the gateway timed out"))??;
    Ok(Conn::Tls(Box::new(conn)))
}

async fn dial_tcp(ep: &Endpoint) -> io::Result<TcpStream> {
    let stream = match ep.bind {
        None => TcpStream::connect(ep.gateway.as_str()).await?,
        Some(ip) => {
            let addr: SocketAddr = ep.gateway.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a source address needs the gateway as ip:port",
                )
            })?;
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4().await?
            } else {
                TcpSocket::new_v6().await?
            };
            socket.bind(SocketAddr::new(ip, 0)).await?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a proof sent on `conn` is bound to: the connection's TLS keying
/// material, or over plain HTTP the boot id last heard from the gateway.
pub fn binding(ep: &Endpoint, conn: &Conn) -> io::Result<Binding> {
    match conn {
        Conn::Tls(tls) => tls.export(EXPORTER_LABEL).map(Binding::Tls),
        Conn::Plain(_) => Ok(Binding::Boot(ep.boot.get())),
    }
}

/// The head of a request signed with `binding` (see [`binding`]); a boot
/// id it is bound to goes in `Ringway-Boot` too.
pub fn request_head(ep: &Endpoint, binding: Binding, method: &str, target: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let identity = pct_encode(&ep.identity);
    let req = Signed {
        method,
        target,
        identity: &identity,
        binding,
    };
    let (ts, nonce) = (unix_now(), new_nonce());
    let auth = sign(&ep.key, &req, ts, nonce);
    // What the ticket proof and the agent key sign: the key proof's string.
    let signed = || string_to_sign(&req, ts, &nonce, ep.key.id());
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway/{}\r\nRingway-Identity: {identity}\r\nAuthorization: {auth}\r\n",
        ep.gateway,
        env!("CARGO_PKG_VERSION")
    );
    if let Binding::Boot(Some(boot)) = binding {
        head.push_str(&format!("{}: {boot}\r\n", proto::H_BOOT_WRITTEN));
    }
    if let Some(op) = &ep.operator {
        // The ticket travels in clear on plain HTTP; what makes it ours is
        // this HMAC over the very string the key proof signs.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &op.possession);
        let proof = hex::encode(ring::hmac::sign(&key, signed().as_bytes()).as_ref());
        head.push_str(&format!(
            "{}: {}\r\n{}: {proof}\r\n",
            proto::H_TICKET_WRITTEN,
            op.ticket,
            proto::H_TICKET_PROOF_WRITTEN
        ));
    }
    if let Some(id) = &ep.agent_key
        && target == proto::PATH_REGISTER
    {
        let (key, sig) = crate::auth::agentkey::sign(id.pair(), &signed());
        head.push_str(&format!(
            "{}: {key}\r\n{}: {sig}\r\n",
            proto::H_AGENT_KEY_WRITTEN,
            proto::H_AGENT_SIG_WRITTEN
        ));
    }
    if let Some(code) = &ep.totp {
        head.push_str(&format!("{}: {code}\r\n", proto::H_TOTP_WRITTEN));
    }
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Signs a request for `stream`, sends it and reads the answer's head,
/// remembering the gateway's boot id from it. Over plain HTTP a `401
/// stale_boot` (the gateway restarted since the boot id this endpoint
/// knew, or it knew none) is read and the request signed again with the
/// answer's boot id, once, on the same connection. Any other `401` is
/// returned as the refusal it is.
pub async fn request(
    ep: &Endpoint,
    stream: &Conn,
    method: &str,
    target: &str,
    extra: &[(&str, String)],
) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    for last in [false, true] {
        let head = request_head(ep, binding(ep, stream)?, method, target, extra);
        let within = if target.starts_with(proto::PATH_CONNECT_PREFIX) {
            CONNECT_RESPONSE_TIMEOUT
        } else {
            RESPONSE_TIMEOUT
        };
        let (answer, rest) = exchange_within(stream, head, within).await?;
        ep.boot.learn(&answer);
        if answer.status != 401 || stream.is_tls() {
            return Ok((answer, rest));
        }
        let refusal = refused(stream, &answer, rest).await;
        match &refusal {
            ClientError::Refused { reason, .. } if !last && reason.starts_with(STALE_BOOT) => {}
            _ => return Err(refusal),
        }
    }
    Err(ClientError::Protocol(
        "the gateway refused the boot id it had just sent".into(),
    ))
}

/// Sends a request head and reads the response head (within
/// [`RESPONSE_TIMEOUT`]); returns it with the bytes read past it.
pub async fn exchange(stream: &Conn, head: Vec<u8>) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    exchange_within(stream, head, RESPONSE_TIMEOUT).await
}

/// As [`exchange`], waiting `within` for the answer.
async fn exchange_within(
    stream: &Conn,
    head: Vec<u8>,
    within: Duration,
) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    let BufResult(res, _) = stream.write_all_from(head).await;
    res?;
    compio::time::timeout(within, read_response(stream))
        .await
        .map_err(|_| ClientError::Timeout("no response from the gateway in time"))?
}

async fn read_response(stream: &Conn) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        match http::parse_response(&buf) {
            Ok((head, len)) => return Ok((head, buf.split_off(len))),
            Err(HeadError::Incomplete) => {}
            Err(e) => return Err(ClientError::Protocol(e.response_reason().into())),
        }
        // Grow towards the head limit and no further: parse_response
        // refuses a head that is still partial at MAX_HEAD_BYTES.
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().min(http::MAX_HEAD_BYTES - buf.len()).max(1));
        }
        let BufResult(res, b) = stream.read_into(buf).await;
        buf = b;
        if res? == 0 {
            return Err(ClientError::Protocol("the gateway closed the connection".into()));
        }
    }
}

/// Reads a `Content-Length` body of at most `cap` bytes, given the bytes
/// already read, within [`RESPONSE_TIMEOUT`].
async fn read_body(stream: &Conn, head: &ResponseHead, body: Vec<u8>, cap: usize) -> Result<Vec<u8>, ClientError> {
    let len = ranges::body_length(head, cap).map_err(ClientError::Protocol)?;
    compio::time::timeout(RESPONSE_TIMEOUT, read_exactly(stream, body, len))
        .await
        .map_err(|_| ClientError::Timeout("the gateway's answer did not arrive in time"))?
}

async fn read_exactly(stream: &Conn, mut body: Vec<u8>, len: usize) -> Result<Vec<u8>, ClientError> {
    while body.len() < len {
        body.reserve(len - body.len());
        let BufResult(res, b) = stream.read_into(body).await;
        body = b;
        if res? == 0 {
            return Err(ClientError::Protocol("response body cut short".into()));
        }
    }
    body.truncate(len);
    Ok(body)
}

/// Turns an error status into [`ClientError::Refused`] with the body's
/// reason, or the status line's phrase if the body is not a short reason.
/// Control characters become `?`: the reason is printed on a terminal.
pub(crate) async fn refused(stream: &Conn, head: &ResponseHead, rest: Vec<u8>) -> ClientError {
    let reason = match read_body(stream, head, rest, MAX_REASON_BYTES).await {
        Ok(body) => String::from_utf8_lossy(&body).trim().to_string(),
        Err(_) => head.reason.clone(),
    };
    ClientError::Refused {
        status: head.status,
        reason: reason.chars().map(|c| if c.is_control() { '?' } else { c }).collect(),
    }
}

/// Largest health answer read: the body is two short strings.
pub const MAX_HEALTH_BYTES: usize = 1024;

/// Asks the gateway `GET /v1/health`, unauthenticated: whether it is up,
/// its role and boot id (an older gateway's `404` with a boot id counts as
/// up, its role empty). Registers nothing and leaves no line in the
/// gateway's log, so an agent on a secondary can ask its primary often.
/// The caller bounds the whole exchange (dial and answer have their own
/// deadlines, [`CONNECT_TIMEOUT`] and [`RESPONSE_TIMEOUT`], too long for
/// a probe).
pub async fn health(ep: &Endpoint) -> Result<proto::HealthAnswer, ClientError> {
    let stream = dial(ep).await?;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway/{}\r\n\r\n",
        proto::PATH_HEALTH,
        ep.gateway,
        env!("CARGO_PKG_VERSION")
    );
    let (head, rest) = exchange(&stream, head.into_bytes()).await?;
    // A gateway older than the probe answers 404, like any path it does
    // not serve, with its boot id as every answer has: it is up, so an
    // agent can go home to it. Its role is unknown (empty).
    if head.status == 404
        && let Some(boot) = head.header(proto::H_BOOT).and_then(BootId::parse)
    {
        return Ok(proto::HealthAnswer {
            role: String::new(),
            boot: boot.to_string(),
        });
    }
    if head.status != 200 {
        return Err(refused(&stream, &head, rest).await);
    }
    let body = read_body(&stream, &head, rest, MAX_HEALTH_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("bad health answer: {e}")))
}

/// The agents this key can see.
pub async fn list_agents(ep: &Endpoint) -> Result<Vec<AgentSummary>, ClientError> {
    let stream = dial(ep).await?;
    let (head, rest) = request(ep, &stream, "GET", proto::PATH_CLIENTS, &[]).await?;
    if head.status != 200 {
        return Err(refused(&stream, &head, rest).await);
    }
    let body = read_body(&stream, &head, rest, MAX_BODY_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("bad client list: {e}")))
}

/// An upgrade to `target`, or the `307` a cluster gateway answered
/// instead: where to go, and the path to ask there.
enum Upgraded {
    Session(Session),
    Redirect(Endpoint, String),
}

async fn upgrade_or_redirect(ep: &Endpoint, target: &str) -> Result<Upgraded, ClientError> {
    upgrade_with(ep, target, &[]).await
}

async fn upgrade_with(ep: &Endpoint, target: &str, more: &[(&str, String)]) -> Result<Upgraded, ClientError> {
    let stream = dial(ep).await?;
    let mut extra = vec![
        ("Upgrade", proto::UPGRADE_RELAY.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    extra.extend(more.iter().cloned());
    let (head, early) = request(ep, &stream, "GET", target, &extra).await?;
    if head.status == 307 {
        let (to, path) = redirected(ep, &head)?;
        return Ok(Upgraded::Redirect(to, path));
    }
    if head.status != 101 {
        return Err(refused(&stream, &head, early).await);
    }
    Ok(Upgraded::Session(Session { stream, early }))
}

async fn upgrade(ep: &Endpoint, target: &str) -> Result<Session, ClientError> {
    match upgrade_or_redirect(ep, target).await? {
        Upgraded::Session(s) => Ok(s),
        Upgraded::Redirect(to, _) => Err(ClientError::Protocol(format!(
            "the gateway redirected a request that is not redirected: to {}",
            to.gateway
        ))),
    }
}

/// Where a `307` from a cluster gateway sends this client: an endpoint
/// for the `Location`'s gateway (same key, identity and sign-in; its own
/// boot id) and the path to ask there. Only to the same scheme: a TLS
/// client is never sent to plain HTTP, and a plain one has no trust
/// settings for TLS.
pub fn redirected(ep: &Endpoint, head: &ResponseHead) -> Result<(Endpoint, String), ClientError> {
    let bad = |why: &str| ClientError::Protocol(format!("bad redirect from the gateway: {why}"));
    let location = head.header("location").ok_or_else(|| bad("no Location"))?;
    let (scheme, rest) = location.split_once("://").ok_or_else(|| bad("Location is not a URL"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return Err(bad("Location has no path")),
    };
    let tls = match (scheme, &ep.tls) {
        ("https", Some(t)) => Some(ClientTls {
            config: t.config.clone(),
            server_name: host_of(host_port)
                .ok_or_else(|| bad("Location has no host:port"))?
                .to_string(),
        }),
        ("http", None) => None,
        ("http", Some(_)) => return Err(bad("a TLS connection was sent to plain HTTP; refused")),
        ("https", None) => {
            return Err(bad(
                "sent to https: give the gateway as https://HOST:PORT so TLS is trusted as you configured",
            ));
        }
        _ => return Err(bad("Location is not http:// or https://")),
    };
    host_of(host_port).ok_or_else(|| bad("Location has no host:port"))?;
    let mut to = ep.clone();
    to.gateway = host_port.to_string();
    to.tls = tls;
    // The new gateway's boot id, if the redirect says it: the first proof
    // there is then signed right (no `401 stale_boot` round trip).
    to.boot = BootCache::default();
    if let Some(boot) = head.header(proto::H_LOCATION_BOOT).and_then(BootId::parse) {
        to.boot = BootCache::known(boot);
    }
    // Sources bound to this machine's addresses stay valid for any gateway.
    Ok((to, path.to_string()))
}

/// The host of `host:port` (brackets off an IPv6 one), if the port is one.
fn host_of(host_port: &str) -> Option<&str> {
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
            Some(h.trim_start_matches('[').trim_end_matches(']'))
        }
        _ => None,
    }
}

/// Opens a relay session to agent `name`. A cluster gateway that does not
/// hold the agent answers `307` with the one that does; that redirect is
/// followed once.
pub async fn connect(ep: &Endpoint, name: &str) -> Result<Session, ClientError> {
    let target = format!("{}{}", proto::PATH_CONNECT_PREFIX, pct_encode(name));
    match upgrade_or_redirect(ep, &target).await? {
        Upgraded::Session(s) => Ok(s),
        Upgraded::Redirect(to, path) => {
            if !path.starts_with(proto::PATH_CONNECT_PREFIX) {
                return Err(ClientError::Protocol(format!(
                    "the gateway redirected the connect to an unexpected path {path:?}"
                )));
            }
            log::info!("{name} is on gateway {}: connecting there", to.gateway);
            match upgrade_or_redirect(&to, &path).await? {
                Upgraded::Session(s) => Ok(s),
                Upgraded::Redirect(again, _) => Err(ClientError::Protocol(format!(
                    "redirected twice (to {} and then {}): the cluster's directory is moving; try again",
                    to.gateway, again.gateway
                ))),
            }
        }
    }
}

/// Opens a relay session to agent `name` at this gateway only, with
/// `extra` headers: a `307` is an error, not followed (a cluster gateway
/// relaying a control's connect to the agent's gateway).
pub async fn connect_here(ep: &Endpoint, name: &str, extra: &[(&str, String)]) -> Result<Session, ClientError> {
    let target = format!("{}{}", proto::PATH_CONNECT_PREFIX, pct_encode(name));
    match upgrade_with(ep, &target, extra).await? {
        Upgraded::Session(s) => Ok(s),
        Upgraded::Redirect(to, _) => Err(ClientError::Protocol(format!(
            "the gateway sent the session on to {}",
            to.gateway
        ))),
    }
}

/// Joins session `sid` as the agent (the data connection).
pub async fn join(ep: &Endpoint, sid: SessionId) -> Result<Session, ClientError> {
    upgrade(ep, &format!("{}{sid}", proto::PATH_SESSION_PREFIX)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Trust;

    fn head(location: &str) -> ResponseHead {
        let text = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
        http::parse_response(text.as_bytes()).expect("a response head").0
    }

    fn endpoint(gateway: &str) -> Endpoint {
        Endpoint::new(gateway, GatewayKey::new("Testing1-key"), "ops", &Trust::Insecure).expect("endpoint")
    }

    #[test]
    fn a_redirect_keeps_the_scheme_and_the_key_and_forgets_the_boot_id() {
        let plain = endpoint("127.0.0.1:1");
        let (to, path) = redirected(&plain, &head("http://127.0.0.2:8080/v1/connect/pc%201")).expect("followed");
        assert_eq!(
            (to.gateway.as_str(), path.as_str()),
            ("127.0.0.2:8080", "/v1/connect/pc%201")
        );
        assert!(to.tls.is_none() && to.boot.get().is_none());
        let with_boot = http::parse_response(
            b"HTTP/1.1 307 X\r\nLocation: http://h:1/v1/connect/a\r\nRingway-Location-Boot: 00112233445566778899aabbccddeeff\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("head")
        .0;
        let (to, _) = redirected(&plain, &with_boot).expect("followed");
        assert_eq!(
            to.boot.get().map(|b| b.to_string()).as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
        assert_eq!(to.key.id(), plain.key.id());
        let tls = endpoint("https://gw1.example.com:443");
        let (to, _) = redirected(&tls, &head("https://gw2.example.com:8443/v1/agent/register")).expect("followed");
        assert_eq!(to.tls.as_ref().map(|t| t.server_name.as_str()), Some("gw2.example.com"));
    }

    #[test]
    fn a_hostile_redirect_is_refused_with_its_reason() {
        let tls = endpoint("https://gw1.example.com:443");
        let plain = endpoint("127.0.0.1:1");
        for (ep, location, why) in [
            (
                &tls,
                "http://evil:80/v1/connect/pc1",
                "a TLS connection was sent to plain HTTP; refused",
            ),
            (&plain, "https://gw2:443/v1/connect/pc1", "sent to https"),
            (
                &plain,
                "ftp://gw2:21/v1/connect/pc1",
                "Location is not http:// or https://",
            ),
            (&plain, "http://gw2/v1/connect/pc1", "Location has no host:port"),
            (&plain, "http://gw2:80", "Location has no path"),
            (&plain, "gw2:80/v1/connect/pc1", "Location is not a URL"),
        ] {
            match redirected(ep, &head(location)) {
                Err(ClientError::Protocol(e)) => assert!(e.contains(why), "{location}: {e}"),
                other => panic!("{location}: {:?}", other.map(|(e, p)| (e.gateway, p))),
            }
        }
        let none = http::parse_response(b"HTTP/1.1 307 X\r\nContent-Length: 0\r\n\r\n")
            .expect("head")
            .0;
        assert!(redirected(&plain, &none).is_err());
    }
}
