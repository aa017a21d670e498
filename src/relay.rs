//! Moving bytes between two sockets, both ways, until both sides are done.
//!
//! One buffer per direction, allocated once per session: each read lands in
//! it and that same buffer is written out, then reused (compio's owned
//! buffers go into the kernel and come back). A direction reads again only
//! after its write has completed, so a slow reader stalls its writer and
//! memory never grows past the two buffers.
//!
//! Half-close is carried: EOF from one side becomes `shutdown(Write)` on
//! the other while the reverse direction keeps flowing. An error on either
//! side (reset, broken pipe) ends both directions at once.

use std::cell::Cell;
use std::io;

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::try_join;

/// Live byte counts of a session, readable while it runs (for the console).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes from the first socket to the second.
    pub a_to_b: Cell<u64>,
    /// Bytes from the second socket to the first.
    pub b_to_a: Cell<u64>,
}

/// Relays between `a` and `b` until both directions have ended.
///
/// `a_early` holds bytes already read from `a` (after its request head) that
/// belong to `b`, and `b_early` the reverse; they are delivered first.
/// `buf_size` is the size of each direction's buffer.
pub async fn relay(
    a: &TcpStream,
    a_early: Vec<u8>,
    b: &TcpStream,
    b_early: Vec<u8>,
    buf_size: usize,
    counters: &Counters,
) -> io::Result<()> {
    try_join(
        pump(a, b, a_early, buf_size, &counters.a_to_b),
        pump(b, a, b_early, buf_size, &counters.b_to_a),
    )
    .await
    .map(|_| ())
}

/// One direction: `from` → `to`, then `shutdown(Write)` on `to` at EOF.
async fn pump(from: &TcpStream, to: &TcpStream, early: Vec<u8>, buf_size: usize, count: &Cell<u64>) -> io::Result<()> {
    let (mut from, mut to) = (from, to);
    if !early.is_empty() {
        let n = early.len() as u64;
        let BufResult(res, _) = to.write_all(early).await;
        res?;
        count.set(count.get() + n);
    }
    let mut buf = Vec::with_capacity(buf_size);
    loop {
        let BufResult(res, b) = from.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return match to.shutdown().await {
                // The peer may already be gone; the session is ending anyway.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                other => other,
            };
        }
        let BufResult(res, b) = to.write_all(buf).await;
        buf = b;
        res?;
        count.set(count.get() + n as u64);
        buf.clear();
    }
}
