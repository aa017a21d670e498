//! Accepting admin connections on plain std threads (never a worker's
//! event loop): up to [`MAX_CONNECTIONS`] served at once, each on a thread
//! of its own with one deadline for its request head and one for writing
//! its answer, so a slow or idle client costs only its own slot. Past the
//! bound a connection gets `503` and is closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::AdminOps;
use super::routes::{self, Context};
use super::slots::{Busy, Slot, Slots, Source};
use crate::config::AdminConfig;
use crate::http::{self, HeadError};

/// Admin connections served at once. A console tab, a Prometheus scraper
/// and a few `ringway status` calls need a handful; each slot is a thread
/// and an 8 KiB head buffer, so 16 stays cheap while idle sockets (which
/// hold a slot until [`HEAD_DEADLINE`]) cannot lock everyone out.
pub const MAX_CONNECTIONS: usize = 16;

/// Slots one address (IPv6: one /64) may hold: half, so a listener opened
/// to a network keeps room for everyone else when one peer hoards.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 2;

/// Time from accept to a complete request head, however it trickles in:
/// our clients send theirs in one packet; 5 s allows a slow link.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// Time for writing a whole answer. The console of 20,000 agents is a few
/// MB; 10 s is Prometheus' default scrape timeout.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Refused connections answered at once, each on a short-lived thread
/// that lingers for [`REFUSAL_LINGER`]: past these, a refusal is written
/// without waiting and the socket closed.
const MAX_REFUSING: usize = 8;

/// How long a refused connection is read (and discarded) after its `503`
/// so that closing it does not reset the connection under the answer (a
/// close with unread bytes sends RST, and the peer may lose the 503).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// What a served connection needs, shared by all of them.
struct Shared {
    config: AdminConfig,
    ops: Arc<dyn AdminOps>,
}

/// Starts serving `listener` on a thread of its own.
pub fn spawn(listener: TcpListener, config: AdminConfig, ops: Arc<dyn AdminOps>) -> io::Result<()> {
    let shared = Arc::new(Shared { config, ops });
    let serving = Slots::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE);
    let refusing = Slots::new(MAX_REFUSING, MAX_REFUSING);
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => dispatch(stream, &shared, &serving, &refusing),
                    Err(e) => {
                        log::warn!("admin accept failed: {e}");
                        // Out of descriptors, most likely: give the kernel
                        // a moment instead of spinning on the same error.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(())
}

/// Hands `stream` to a thread of its own if a slot is free, else refuses
/// it. Never blocks the accept loop.
fn dispatch(stream: TcpStream, shared: &Arc<Shared>, serving: &Arc<Slots>, refusing: &Arc<Slots>) {
    let accepted = Instant::now();
    let Ok(peer) = stream.peer_addr() else {
        return; // Gone already.
    };
    let slot = match serving.take(Source::of(peer.ip())) {
        Ok(slot) => slot,
        Err(busy) => return refuse(stream, peer, busy, serving, refusing),
    };
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("ringway-admin-conn".into())
        .spawn(move || {
            if let Err(e) = serve(stream, accepted, slot, &shared) {
                log::debug!("admin request from {peer} failed: {e}");
            }
        });
    if let Err(e) = spawned {
        // The closure, slot and socket included, is dropped: the peer sees
        // a close, the slot is free again.
        log::warn!("cannot start an admin connection thread: {e}");
    }
}

/// Reads one request head by [`HEAD_DEADLINE`], answers it by
/// [`ANSWER_DEADLINE`], gives the slot back, then closes.
fn serve(mut stream: TcpStream, accepted: Instant, slot: Slot, shared: &Shared) -> io::Result<()> {
    let answer = match read_head(&mut stream, accepted + HEAD_DEADLINE)? {
        Some(Ok(head)) => {
            let cx = Context {
                token: shared.config.token.as_deref(),
                hosts: &shared.config.hosts,
                local: stream.local_addr()?,
            };
            routes::answer(&head, &cx, shared.ops.as_ref())
        }
        Some(Err(answer)) => answer,
        None => return Ok(()),
    };
    write_by(&mut stream, &answer, Instant::now() + ANSWER_DEADLINE)?;
    // Given back before the close, so a client that has read the whole
    // answer can count on the slot being free.
    drop(slot);
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// The request head, or the error answer to send instead (`408` past the
/// deadline, `400`/`431` for a bad head); `None` if the peer closed first.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Result<http::RequestHead, Vec<u8>>>> {
    let mut buf = vec![0u8; http::MAX_HEAD_BYTES];
    let mut len = 0;
    loop {
        match http::parse_request(&buf[..len]) {
            Ok((head, _)) => return Ok(Some(Ok(head))),
            Err(HeadError::Incomplete) if len < buf.len() => {}
            Err(e) => return Ok(Some(Err(routes::error(e.status(), e.reason())))),
        }
        let timed_out = || Ok(Some(Err(routes::error(408, "request head not received in time"))));
        let Some(left) = remaining(deadline) else {
            return timed_out();
        };
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Ok(None),
            Ok(n) => len += n,
            Err(e) if is_timeout(&e) => return timed_out(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes` by `deadline`, however slowly the peer reads.
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Time left until `deadline`; `None` once it has passed (a zero timeout
/// would mean "none" to the socket).
fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Answers a connection past the bound with `503`: on a lingering thread
/// of its own while [`MAX_REFUSING`] allows, else at once.
fn refuse(stream: TcpStream, peer: SocketAddr, busy: Busy, serving: &Slots, refusing: &Arc<Slots>) {
    let (total, per_source) = serving.limits();
    let reason = match busy {
        Busy::Full => format!("admin listener busy: {total} connections open; try again shortly"),
        Busy::SourceFull => {
            format!("admin listener busy: {per_source} connections open from your address; try again shortly")
        }
    };
    log::debug!("admin: refused {peer}: {reason}");
    let answer = routes::error(503, &reason);
    match refusing.take(Source::of(peer.ip())) {
        Ok(slot) => {
            let lingering = std::thread::Builder::new()
                .name("ringway-admin-busy".into())
                .spawn(move || linger(stream, &answer, slot));
            if let Err(e) = lingering {
                log::warn!("cannot start an admin refusal thread: {e}");
            }
        }
        Err(_) => {
            // Non-blocking: a 503 fits a fresh socket's send buffer, and
            // the accept loop must not wait on this peer.
            if stream.set_nonblocking(true).is_ok() {
                let mut stream = stream;
                let _ = stream.write(&answer);
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }
}

/// Sends `answer`, then reads and discards what the peer sends until it
/// closes or [`REFUSAL_LINGER`] passes.
fn linger(mut stream: TcpStream, answer: &[u8], _slot: Slot) {
    let until = Instant::now() + REFUSAL_LINGER;
    if write_by(&mut stream, answer, until).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 1024];
    while let Some(left) = remaining(until) {
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
