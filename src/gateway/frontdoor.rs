//! The front door of every connection: read the request head within its
//! deadline and size limits, then route it. Bad heads get 400/408/431 and
//! a close.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

use super::Permit;
use super::shard::Shard;
use super::stats::Stats;
use crate::auth::{AuthError, KeyId, unix_now};
use crate::conn::Conn;
use crate::http::{self, HeadError, MAX_HEAD_BYTES, RequestHead};
use crate::proto;
use crate::relay::Duplex;
use crate::tls::{TLS_HANDSHAKE_BYTE, TlsConn};

/// First read buffer for a request head; it grows up to MAX_HEAD_BYTES.
/// Our own heads fit in 1 KiB, so most connections never grow it.
const HEAD_BUF_START: usize = 1024;

/// After an error response, how long we keep reading (and discarding) what
/// the peer still sends before closing. Closing with unread data makes the
/// kernel send a reset, which can destroy the response before the peer
/// reads it.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// Serves one accepted connection: TLS or plain (told apart by the first
/// byte), then the request head, then the route.
pub(crate) async fn handle(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, permit: Permit) {
    let config = shard.config();
    let deadline = Instant::now() + config.limits.head_timeout;
    let mut buf = Vec::with_capacity(HEAD_BUF_START);
    match compio::time::timeout_at(deadline, (&stream).read(buf)).await {
        Err(_) => {
            reject(&shard, &Conn::Plain(stream), 408, "request head not received in time").await;
            return;
        }
        Ok(BufResult(Ok(0), _)) | Ok(BufResult(Err(_), _)) => return,
        Ok(BufResult(Ok(_), b)) => buf = b,
    }
    let conn = if buf[0] == TLS_HANDSHAKE_BYTE {
        let Some(tls) = &config.tls else {
            // A TLS client cannot read an HTTP answer; close is all we can say.
            Stats::bump(&shard.stats.rejected, 400);
            log::debug!("{peer}: TLS ClientHello but no certificate is configured");
            return;
        };
        let state = match crate::tls::server_connection(tls.server.clone()) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot start TLS: {e}");
                return;
            }
        };
        let tls = TlsConn::new(stream, state, std::mem::take(&mut buf));
        match compio::time::timeout(config.limits.handshake_timeout, tls.handshake()).await {
            Ok(Ok(())) => Stats::inc(&shard.stats.handshakes),
            Ok(Err(e)) => {
                Stats::bump(&shard.stats.handshake_failures, "error");
                log::debug!("{peer}: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                Stats::bump(&shard.stats.handshake_failures, "timeout");
                log::debug!("{peer}: TLS handshake not finished in time");
                return;
            }
        }
        Conn::Tls(Box::new(tls))
    } else {
        let conn = Conn::Plain(stream);
        if config.tls.as_ref().is_some_and(|t| t.require) {
            shard.event(format!(
                "Unencrypted connection refused from {}: this gateway requires TLS",
                peer.ip()
            ));
            reject(&shard, &conn, 403, "this gateway accepts TLS (https) connections only").await;
            return;
        }
        conn
    };
    let (head, early) = match read_head(&conn, buf, deadline).await {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(HeadFailure::Timeout) => {
            reject(&shard, &conn, 408, "request head not received in time").await;
            return;
        }
        Err(HeadFailure::Bad(e)) => {
            reject(&shard, &conn, e.status(), e.reason()).await;
            return;
        }
    };
    route(shard, conn, peer, head, early, permit).await;
}

/// Answers a connection past the connection cap and closes it. The answer
/// is written unread and unencrypted: a TLS client will just see the close.
pub(crate) async fn refuse_full(stream: TcpStream) {
    let bytes = http::error_response(503, "the gateway is at its connection limit; try again later");
    let _ = (&stream).write_all(bytes).await;
}

enum HeadFailure {
    Timeout,
    Bad(HeadError),
}

/// Reads until a complete head, starting from what is in `buf`;
/// `Ok(None)` if the peer closed or failed before sending one (nothing to
/// answer).
async fn read_head(
    conn: &Conn,
    mut buf: Vec<u8>,
    deadline: Instant,
) -> Result<Option<(RequestHead, Vec<u8>)>, HeadFailure> {
    if buf.capacity() == 0 {
        buf.reserve(HEAD_BUF_START);
    }
    loop {
        match http::parse_request(&buf) {
            Ok((head, len)) => return Ok(Some((head, buf.split_off(len)))),
            Err(HeadError::Incomplete) => {}
            Err(e) => return Err(HeadFailure::Bad(e)),
        }
        if buf.len() == buf.capacity() {
            let grow = buf.capacity().min(MAX_HEAD_BYTES - buf.len());
            buf.reserve_exact(grow);
        }
        match compio::time::timeout_at(deadline, conn.read_into(buf)).await {
            Err(_) => return Err(HeadFailure::Timeout),
            Ok(BufResult(Ok(0), _)) | Ok(BufResult(Err(_), _)) => return Ok(None),
            Ok(BufResult(Ok(_), b)) => buf = b,
        }
    }
}

async fn route(shard: Rc<Shard>, stream: Conn, peer: SocketAddr, head: RequestHead, early: Vec<u8>, permit: Permit) {
    let path = head.path().to_string();
    let known = path == proto::PATH_REGISTER
        || path == proto::PATH_CLIENTS
        || path.starts_with(proto::PATH_CONNECT_PREFIX)
        || path.starts_with(proto::PATH_SESSION_PREFIX);
    if !known {
        reject(&shard, &stream, 404, "no such endpoint").await;
        return;
    }
    if head.method != "GET" {
        reject(&shard, &stream, 405, "only GET is served here").await;
        return;
    }
    if path == proto::PATH_REGISTER {
        super::agent::register(shard, stream, peer, head, early, permit).await;
    } else if path == proto::PATH_CLIENTS {
        super::control::browse(shard, stream, peer, head, permit).await;
    } else if let Some(name) = path.strip_prefix(proto::PATH_CONNECT_PREFIX) {
        let name = name.to_string();
        super::control::connect(shard, stream, peer, head, early, name, permit).await;
    } else if let Some(sid) = path.strip_prefix(proto::PATH_SESSION_PREFIX) {
        let sid = sid.to_string();
        super::control::join(shard, stream, peer, head, early, sid, permit).await;
    }
}

/// The identity a request claims: the raw (percent-encoded) header value,
/// which is what the proof signs, and the decoded, checked name.
pub(crate) fn identity(head: &RequestHead) -> Option<(String, String)> {
    let raw = head.header(proto::H_IDENTITY)?;
    let name = http::pct_decode(raw).filter(|n| proto::valid_name(n))?;
    Some((raw.to_string(), name))
}

/// Checks the request's key proof for `identity_raw`. Over TLS a bearer
/// key (`Authorization: Bearer KEY`) is accepted too; over plain HTTP it is
/// refused, since it would put the key on the wire in clear.
pub(crate) fn verify(shard: &Shard, conn: &Conn, head: &RequestHead, identity_raw: &str) -> Result<KeyId, AuthError> {
    let keys = shard.keys.borrow().clone();
    if let Some(secret) = head.header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        let res = if conn.is_tls() {
            keys.verify_bearer(secret.trim())
        } else {
            Err(AuthError::BearerOverPlain)
        };
        if let Err(why) = res {
            Stats::bump(&shard.stats.auth_failures, why.label());
        }
        return res;
    }
    let res = keys.verify(
        &head.method,
        &head.target,
        identity_raw,
        head.header("authorization"),
        unix_now(),
        &shard.shared.nonces,
    );
    if let Err(why) = res {
        Stats::bump(&shard.stats.auth_failures, why.label());
    }
    res
}

/// Whether the request asks to upgrade to `protocol`.
pub(crate) fn wants_upgrade(head: &RequestHead, protocol: &str) -> bool {
    head.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case(protocol))
}

/// Writes `bytes` in full.
pub(crate) async fn send(conn: &Conn, bytes: Vec<u8>) -> io::Result<()> {
    let BufResult(res, _) = conn.write_all_from(bytes).await;
    res
}

/// Answers with an error status and a one-line reason, then closes
/// gracefully (see [`LINGER`]).
pub(crate) async fn reject(shard: &Shard, conn: &Conn, status: u16, reason: &str) {
    Stats::bump(&shard.stats.rejected, status);
    if send(conn, http::error_response(status, reason)).await.is_err() {
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

/// The 401 reason for a refused proof: the same for every failed check,
/// so a prober learns nothing, except a bearer key sent in clear, which
/// the client must be told to stop doing.
pub(crate) fn refusal(why: AuthError) -> &'static str {
    match why {
        AuthError::BearerOverPlain => "bearer keys are accepted over TLS (https) only; over plain HTTP prove the key",
        _ => "gateway key proof refused",
    }
}
