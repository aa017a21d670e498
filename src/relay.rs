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
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::try_join;

/// A connection both pumps of a relay can use at once: reads and writes
/// take `&self`, buffers go in and come back. Plain TCP, TLS, and the
/// client's stdio bridge implement it.
pub trait Duplex {
    /// Reads into the spare capacity of `buf`, after what it holds (compio's
    /// own `read` overwrites from the start; implementations must append);
    /// `Ok(0)` is end of stream.
    fn read_into(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
    /// Writes all of `buf`.
    fn write_all_from(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<(), Vec<u8>>>;
    /// Ends the write direction (TLS: close_notify, then TCP FIN).
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>>;
}

impl Duplex for TcpStream {
    async fn read_into(&self, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        // compio's `read` fills the buffer from its start, overwriting what
        // is there; `append` reads into the spare capacity, which is what
        // callers accumulating a head or a frame need.
        let mut r = self;
        r.append(buf).await
    }

    async fn write_all_from(&self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
        let mut w = self;
        w.write_all(buf).await
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        let mut w = self;
        w.shutdown().await
    }
}

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
pub async fn relay<A: Duplex, B: Duplex>(
    a: &A,
    a_early: Vec<u8>,
    b: &B,
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
async fn pump<F: Duplex, T: Duplex>(
    from: &F,
    to: &T,
    early: Vec<u8>,
    buf_size: usize,
    count: &Cell<u64>,
) -> io::Result<()> {
    if !early.is_empty() {
        let n = early.len() as u64;
        let BufResult(res, _) = to.write_all_from(early).await;
        res?;
        count.set(count.get() + n);
    }
    let mut buf = Vec::with_capacity(buf_size);
    loop {
        let BufResult(res, b) = from.read_into(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return match to.shutdown_write().await {
                // The peer may already be gone; the session is ending anyway.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                other => other,
            };
        }
        let BufResult(res, b) = to.write_all_from(buf).await;
        buf = b;
        res?;
        count.set(count.get() + n as u64);
        buf.clear();
    }
}
