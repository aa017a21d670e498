//! Relay sessions through the library's own connection type, so the same
//! helpers drive plain and TLS sessions (a TLS session cannot be handed
//! to a blocking std socket the way `connect_std` does).

use std::io;
use std::time::Duration;

use compio::BufResult;
use ring::digest;
use ringway::client::{self, Endpoint, Session};
use ringway::conn::Conn;
use ringway::relay::Duplex;

use super::{CHUNK, Prng, block_on};

/// Upper bound for a large exchange: a debug build moves 64 MiB through
/// four TLS record layers in seconds; this only stops a stall.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Opens a relay session through the library.
pub fn open_session(ep: &Endpoint, agent: &str) -> Session {
    block_on(client::connect(ep, agent)).unwrap_or_else(|e| panic!("connect to {agent} failed: {e}"))
}

/// What one end of a session sent and received.
pub struct Transfer {
    /// SHA-256 of what it sent.
    pub sent_sha256: Vec<u8>,
    /// How many bytes it received.
    pub received_len: usize,
    /// SHA-256 of what it received.
    pub received_sha256: Vec<u8>,
}

/// Sends `len` bytes of `Prng::new(seed)` through `session` and then
/// half-closes, while reading what comes back to EOF, both at once on the
/// same connection (as the relay's two pumps use it). The session is
/// dropped on the runtime it was opened on.
pub fn exchange(session: Session, seed: u64, len: usize) -> Transfer {
    block_on(async move {
        let Session { stream, early } = session;
        let work = futures_util::future::join(send_stream(&stream, seed, len), receive_stream(&stream, early));
        match compio::time::timeout(TRANSFER_TIMEOUT, work).await {
            Err(_) => panic!("the session did not finish within {TRANSFER_TIMEOUT:?}"),
            Ok((sent, received)) => {
                let sent_sha256 = sent.unwrap_or_else(|e| panic!("sending through the session failed: {e}"));
                let (received_len, received_sha256) =
                    received.unwrap_or_else(|e| panic!("reading from the session failed: {e}"));
                Transfer {
                    sent_sha256,
                    received_len,
                    received_sha256,
                }
            }
        }
    })
}

/// Writes `len` bytes of `Prng::new(seed)` to `conn` and half-closes;
/// returns their SHA-256.
pub async fn send_stream(conn: &Conn, seed: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut prng = Prng::new(seed);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = Vec::with_capacity(CHUNK);
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        buf.clear();
        buf.resize(n, 0);
        prng.fill(&mut buf);
        ctx.update(&buf);
        let BufResult(res, b) = conn.write_all_from(buf).await;
        res?;
        buf = b;
        left -= n;
    }
    conn.shutdown_write().await?;
    Ok(ctx.finish().as_ref().to_vec())
}

/// Reads `conn` to EOF after `early`; returns the byte count and SHA-256.
pub async fn receive_stream(conn: &Conn, early: Vec<u8>) -> io::Result<(usize, Vec<u8>)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&early);
    let mut total = early.len();
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        let BufResult(res, b) = conn.read_into(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Ok((total, ctx.finish().as_ref().to_vec()));
        }
        ctx.update(&buf[..n]);
        total += n;
    }
}
