//! The front door of every connection: tell TLS from plain by the first
//! byte, finish the handshake, read the request head within its deadline
//! and size limits, then route it to its flow. Bad heads get 400/408/431
//! and a close. A plain-HTTP proof signed for another boot of the gateway
//! gets `401 stale_boot` with the connection kept open, once, so an honest
//! client signs again on it. A drain closes connections not yet routed
//! and refuses the rest with 503.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::time::Instant;

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::{Either, select};

use super::core::permit::Permit;
use super::core::reply::Refusal;
use super::core::sources::Unauthenticated;
use super::core::stats::Stats;
use super::flows::answer::{reject, send};
use super::flows::{agent, control, health, join, login};
use super::shard::{Shard, Unproven};
use crate::auth::{AuthError, BootId, parse_authorization};
use crate::conn::Conn;
use crate::http::{self, HeadError, MAX_HEAD_BYTES, RequestHead};
use crate::proto;
use crate::relay::Duplex;
use crate::tls::{TLS_HANDSHAKE_BYTE, TlsConn};

/// First read buffer for a request head; it grows up to MAX_HEAD_BYTES.
/// Our own heads fit in 1 KiB, so most connections never grow it.
const HEAD_BUF_START: usize = 1024;

/// Serves one accepted connection: TLS or plain (told apart by the first
/// byte), then the request head, then the route. `unproven` is its place
/// among its source's unauthenticated connections until it proves a key.
pub(crate) async fn handle(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    unproven: Unauthenticated,
) {
    // Declared first, so they go after the connection itself.
    let _unproven = Unproven::hold(&shard, stream.as_raw_fd(), unproven);
    let _served = shard.connections.enter();
    let prepared = {
        let prepare = pin!(prepare(&shard, stream, peer));
        let drain = pin!(shard.draining.started());
        match select(prepare, drain).await {
            Either::Left((prepared, _)) => prepared,
            // Nothing was asked yet, so there is nothing to answer.
            Either::Right(_) => return,
        }
    };
    let Some((conn, head, early)) = prepared else {
        return;
    };
    if shard.draining.is_started() {
        reject(&shard, &conn, Refusal::ShuttingDown).await;
        return;
    }
    let Some((head, early)) = admit(&shard, &conn, head, early).await else {
        return;
    };
    route(shard, conn, peer, head, early, permit).await;
}

/// Sniffs, handshakes and reads the head; `None` once the connection has
/// been answered or has gone.
async fn prepare(shard: &Shard, stream: TcpStream, peer: SocketAddr) -> Option<(Conn, RequestHead, Vec<u8>)> {
    let config = shard.config();
    let mut deadline = Instant::now() + config.limits.head_timeout;
    let mut buf = Vec::with_capacity(HEAD_BUF_START);
    match compio::time::timeout_at(deadline, (&stream).read(buf)).await {
        Err(_) => {
            reject(shard, &Conn::Plain(stream), Refusal::HeadTimeout).await;
            return None;
        }
        Ok(BufResult(Ok(0), _)) | Ok(BufResult(Err(_), _)) => return None,
        Ok(BufResult(Ok(_), b)) => buf = b,
    }
    let conn = if buf[0] == TLS_HANDSHAKE_BYTE {
        let Some(tls) = &config.tls else {
            // A TLS client cannot read an HTTP answer; close is all we can say.
            Stats::bump(&shard.stats.rejected, 400);
            log::debug!("{peer}: TLS ClientHello but no certificate is configured");
            return None;
        };
        let state = match crate::tls::server_connection(tls.server.clone()) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot start TLS: {e}");
                return None;
            }
        };
        let tls = TlsConn::new(stream, state, std::mem::take(&mut buf));
        match compio::time::timeout(config.limits.handshake_timeout, tls.handshake()).await {
            Ok(Ok(())) => {
                Stats::inc(&shard.stats.handshakes);
                // The head gets its own budget: a slow handshake must not
                // eat the time a client has to send its request.
                deadline = Instant::now() + config.limits.head_timeout;
            }
            Ok(Err(e)) => {
                Stats::bump(&shard.stats.handshake_failures, "error");
                log::debug!("{peer}: TLS handshake failed: {e}");
                return None;
            }
            Err(_) => {
                Stats::bump(&shard.stats.handshake_failures, "timeout");
                log::debug!("{peer}: TLS handshake not finished in time");
                return None;
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
            reject(shard, &conn, Refusal::TlsRequired).await;
            return None;
        }
        conn
    };
    let (head, early) = match read_head(&conn, buf, deadline).await {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return None,
        Err(HeadFailure::Timeout) => {
            reject(shard, &conn, Refusal::HeadTimeout).await;
            return None;
        }
        Err(HeadFailure::Bad(e)) => {
            reject(shard, &conn, Refusal::BadHead(e)).await;
            return None;
        }
    };
    Some((conn, head, early))
}

/// Answers a connection refused before it was served (past the
/// connection cap, or over its source's limits) and closes it. The answer
/// is written unread and unencrypted, so a refusal costs no read buffer
/// and no handshake: a TLS client will just see the close.
pub(crate) async fn refuse_unread(stream: TcpStream, why: Refusal<'static>, boot: BootId) {
    let _ = (&stream).write_all(why.to_response(boot)).await;
}

/// Checks a head before it is routed: a path we serve, `GET`, and, for a
/// plain-HTTP proof of a configured key, this run's boot id. A stale or
/// missing boot id is answered `401 stale_boot` with the connection kept
/// open and the next head read (within a fresh head deadline), once; a
/// second stale one is refused and closed. `None` once the connection has
/// been answered or has gone.
async fn admit(shard: &Shard, conn: &Conn, head: RequestHead, early: Vec<u8>) -> Option<(RequestHead, Vec<u8>)> {
    let (mut head, mut early) = (head, early);
    for second in [false, true] {
        if let Err(why) = servable(&head) {
            reject(shard, conn, why).await;
            return None;
        }
        if !stale_boot(shard, conn, &head) {
            return Some((head, early));
        }
        Stats::bump(&shard.stats.auth_failures, AuthError::StaleBoot.label());
        let why = Refusal::ProofRefused(AuthError::StaleBoot);
        if second {
            reject(shard, conn, why).await;
            return None;
        }
        send(shard, conn, why.to_keep_alive_response(shard.shared.boot))
            .await
            .ok()?;
        let deadline = Instant::now() + shard.config().limits.head_timeout;
        (head, early) = match read_head(conn, early, deadline).await {
            Ok(Some(next)) => next,
            Ok(None) => return None,
            Err(HeadFailure::Timeout) => {
                reject(shard, conn, Refusal::HeadTimeout).await;
                return None;
            }
            Err(HeadFailure::Bad(e)) => {
                reject(shard, conn, Refusal::BadHead(e)).await;
                return None;
            }
        };
    }
    None
}

/// Whether `head` is a request the gateway serves: one of its paths,
/// `GET`, no body, and each header it acts on at most once (400 and a
/// close otherwise, see [`proto::BODY_HEADERS`], [`proto::SINGLE_HEADERS`]).
pub(crate) fn servable(head: &RequestHead) -> Result<(), Refusal<'static>> {
    let path = head.path();
    let known = path == proto::PATH_REGISTER
        || path == proto::PATH_CLIENTS
        || path == proto::PATH_LOGIN
        || path == proto::PATH_HEALTH
        || path.starts_with(proto::PATH_CONNECT_PREFIX)
        || path.starts_with(proto::PATH_SESSION_PREFIX);
    if !known {
        return Err(Refusal::NoEndpoint);
    }
    if head.method != "GET" {
        return Err(Refusal::MethodNotAllowed);
    }
    let strict = proto::BODY_HEADERS
        .iter()
        .map(|&(name, why)| (name, 1, why))
        .chain(proto::SINGLE_HEADERS.iter().map(|&(name, why)| (name, 2, why)));
    for (name, refused_at, why) in strict {
        if head.header_count(name) >= refused_at {
            return Err(Refusal::BadHead(HeadError::Malformed(why)));
        }
    }
    Ok(())
}

/// Whether `head` carries, over plain HTTP, a proof of one of this
/// gateway's keys without this run's boot id in `Ringway-Boot`. A proof
/// of an unknown key (or a broken one) is left to the flow, which refuses
/// it for what it is: signing it again would not help.
fn stale_boot(shard: &Shard, conn: &Conn, head: &RequestHead) -> bool {
    if conn.is_tls() {
        return false;
    }
    let Some(proof) = head.header("authorization").and_then(|v| parse_authorization(v).ok()) else {
        return false;
    };
    shard.keys.borrow().contains(proof.kid)
        && head.header(proto::H_BOOT).and_then(BootId::parse) != Some(shard.shared.boot)
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

/// Hands an admitted request to its flow.
async fn route(shard: Rc<Shard>, stream: Conn, peer: SocketAddr, head: RequestHead, early: Vec<u8>, permit: Permit) {
    let path = head.path().to_string();
    if path == proto::PATH_REGISTER {
        agent::register(shard, stream, peer, head, early, permit).await;
    } else if path == proto::PATH_HEALTH {
        health::health(&shard, &stream).await;
    } else if path == proto::PATH_CLIENTS {
        control::browse(shard, stream, peer, head, permit).await;
    } else if path == proto::PATH_LOGIN {
        login::login(shard, stream, peer, head, early, permit).await;
    } else if let Some(name) = path.strip_prefix(proto::PATH_CONNECT_PREFIX) {
        let name = name.to_string();
        control::connect(shard, stream, peer, head, early, name, permit).await;
    } else if let Some(sid) = path.strip_prefix(proto::PATH_SESSION_PREFIX) {
        let sid = sid.to_string();
        join::join(shard, stream, peer, head, early, sid, permit).await;
    }
}
