//! rustls driven over compio's owned-buffer sockets.
//!
//! A `TlsConn` is shared by the two pumps of a relay: one reads, one
//! writes, both through `&self`. The rustls state sits in a `RefCell` that
//! is never borrowed across an await; socket writes (application data from
//! the writer, and alerts or key updates the reader must send) go through
//! one async lock so their records never interleave.
//!
//! Reads decrypt into the caller's buffer: the ciphertext lands in a
//! per-connection buffer of one TLS record's size and the plaintext is
//! copied from rustls into the buffer's spare capacity, so the relay still
//! allocates (and zero-fills) nothing per read.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::lock::Mutex;

use super::record::{HEADER_LEN, RecordLayer, Version};
use super::sealed::SealedConn;
use crate::relay::Duplex;

/// Ciphertext read from the socket in one go: one full TLS record
/// (16 KiB of data plus header, padding and tag). rustls holds at most
/// 16 KiB of decrypted data before it must be read out, so reading more
/// at once would only make it refuse the rest.
const CIPHERTEXT_READ: usize = 16 * 1024 + 512;

/// Ciphertext read size while traffic is light, and so what an idle
/// connection (an agent between polls) waits with: a TLS record carrying
/// a poll is about 40 bytes. A read that fills it switches to
/// [`CIPHERTEXT_READ`]; one that returns less than this switches back, so
/// an idle agent holds 512 bytes here instead of 16.5 KiB.
const CIPHERTEXT_IDLE_READ: usize = 512;

/// A TLS connection over a compio TCP stream.
pub struct TlsConn {
    tcp: TcpStream,
    state: RefCell<rustls::Connection>,
    /// Ciphertext read from the socket but not yet given to rustls.
    pending: RefCell<Vec<u8>>,
    /// Reused buffer for ciphertext going out; held by the write lock.
    out: Mutex<Vec<u8>>,
    /// Set once the peer's TCP stream ended.
    eof: Cell<bool>,
    /// Whether the next socket read is a full record's worth (bulk
    /// traffic) or [`CIPHERTEXT_IDLE_READ`] (light or idle).
    bulk: Cell<bool>,
    /// Where the ciphertext given to rustls stands in its record framing,
    /// so that the connection is handed to a [`SealedConn`] only between
    /// records (rustls keeps a partial record to itself).
    framing: Cell<Framing>,
}

/// A position in a stream of TLS records: inside a header (how much of it
/// is in) or inside a record's body (how much of it is still to come).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Framing {
    header: [u8; HEADER_LEN],
    have: u8,
    remaining: u16,
}

impl Framing {
    /// Moves past `bytes`.
    fn advance(mut self, mut bytes: &[u8]) -> Framing {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = bytes.len().min(usize::from(self.remaining));
                self.remaining -= n as u16;
                bytes = &bytes[n..];
                continue;
            }
            let have = usize::from(self.have);
            let n = bytes.len().min(HEADER_LEN - have);
            self.header[have..have + n].copy_from_slice(&bytes[..n]);
            self.have += n as u8;
            bytes = &bytes[n..];
            if usize::from(self.have) == HEADER_LEN {
                self.remaining = u16::from_be_bytes([self.header[3], self.header[4]]);
                self.have = 0;
            }
        }
        self
    }

    fn between_records(self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsConn {
    /// Wraps a socket; `already_read` is ciphertext the caller read before
    /// it knew the peer speaks TLS (the ClientHello's first bytes).
    pub fn new(tcp: TcpStream, state: rustls::Connection, already_read: Vec<u8>) -> Self {
        Self {
            tcp,
            state: RefCell::new(state),
            pending: RefCell::new(already_read),
            out: Mutex::new(Vec::new()),
            eof: Cell::new(false),
            bulk: Cell::new(false),
            framing: Cell::new(Framing::default()),
        }
    }

    /// Whether [`TlsConn::into_sealed`] can take this connection over now:
    /// the handshake is done, nothing waits to be sent, and rustls holds
    /// no part of a record.
    pub fn can_seal(&self) -> bool {
        let state = self.state.borrow();
        !state.is_handshaking()
            && !state.wants_write()
            && self.framing.get().between_records()
            && matches!(
                state.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_2 | rustls::ProtocolVersion::TLSv1_3)
            )
    }

    /// Hands record protection over to a [`SealedConn`], which holds far
    /// less per connection than rustls (see [`super::record`]). Returns it
    /// with the plaintext rustls had decrypted but nobody read yet. Check
    /// [`TlsConn::can_seal`] first; an error here ends the connection.
    pub fn into_sealed(self) -> io::Result<(SealedConn, Vec<u8>)> {
        let (tcp, mut state, pending) = self.into_parts();
        let mut unread = Vec::new();
        loop {
            let mut reader = state.reader();
            match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    let n = chunk.len();
                    unread.extend_from_slice(chunk);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let version = match state.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Version::Tls13,
            Some(rustls::ProtocolVersion::TLSv1_2) => Version::Tls12,
            other => {
                return Err(io::Error::other(format!("cannot take over TLS version {other:?}")));
            }
        };
        let secrets = state.dangerous_extract_secrets().map_err(tls_error)?;
        let layer = RecordLayer::new(version, (secrets.rx.0, &secrets.rx.1), (secrets.tx.0, &secrets.tx.1))
            .ok_or_else(|| io::Error::other("cannot take over this TLS cipher suite"))?;
        Ok((SealedConn::new(tcp, layer, pending), unread))
    }

    /// The socket underneath (for addresses and socket options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Takes the connection apart for a hand-off to another worker: the
    /// socket, the TLS state (which holds decrypted data not yet read) and
    /// ciphertext not yet given to rustls.
    pub fn into_parts(self) -> (TcpStream, rustls::Connection, Vec<u8>) {
        (self.tcp, self.state.into_inner(), self.pending.into_inner())
    }

    /// Keying material exported from this connection under `label` (no
    /// context), what key proofs are bound to. Both ends get the same
    /// bytes and no other connection does; it fails before the handshake
    /// is over (and, under TLS 1.2, without Extended Master Secret,
    /// which the configs require).
    pub fn export<const N: usize>(&self, label: &[u8]) -> io::Result<[u8; N]> {
        self.state
            .borrow()
            .export_keying_material([0u8; N], label, None)
            .map_err(tls_error)
    }

    /// Runs the handshake to completion.
    pub async fn handshake(&self) -> io::Result<()> {
        loop {
            self.flush().await?;
            if !self.state.borrow().is_handshaking() {
                return Ok(());
            }
            if !self.feed().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
        }
    }

    /// Gives rustls more ciphertext: from `pending`, else from the socket.
    /// False at end of stream.
    async fn feed(&self) -> io::Result<bool> {
        if self.pending.borrow().is_empty() {
            if self.eof.get() {
                return Ok(false);
            }
            let want = if self.bulk.get() {
                CIPHERTEXT_READ
            } else {
                CIPHERTEXT_IDLE_READ
            };
            let mut buf = std::mem::take(&mut *self.pending.borrow_mut());
            if buf.capacity() > want {
                // Traffic went quiet: give the record-sized buffer back
                // rather than hold it through the idle wait.
                buf = Vec::new();
            }
            buf.clear();
            buf.reserve(want);
            let mut r = &self.tcp;
            let BufResult(res, slice) = r.read(buf.slice(..want)).await;
            let buf = slice.into_inner();
            let n = res?;
            if n == want {
                self.bulk.set(true);
            } else if n < CIPHERTEXT_IDLE_READ {
                self.bulk.set(false);
            }
            *self.pending.borrow_mut() = buf;
            if n == 0 {
                self.eof.set(true);
                // Tell rustls too, so it can say whether the close was clean.
                let _ = self.state.borrow_mut().read_tls(&mut io::empty());
                return Ok(false);
            }
        }
        let result = {
            let mut pending = self.pending.borrow_mut();
            let mut state = self.state.borrow_mut();
            let mut slice: &[u8] = &pending;
            let read = state.read_tls(&mut slice);
            let used = pending.len() - slice.len();
            self.framing.set(self.framing.get().advance(&pending[..used]));
            pending.drain(..used);
            read.and_then(|_| state.process_new_packets().map(|_| ()).map_err(tls_error))
        };
        if let Err(e) = result {
            // Send the alert rustls queued, then report.
            let _ = self.flush().await;
            return Err(e);
        }
        if self.state.borrow().wants_write() {
            self.flush().await?;
        }
        Ok(true)
    }

    /// Writes whatever ciphertext rustls has queued.
    async fn flush(&self) -> io::Result<()> {
        let mut out = self.out.lock().await;
        loop {
            out.clear();
            {
                let mut state = self.state.borrow_mut();
                while state.wants_write() {
                    state.write_tls(&mut *out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let mut w = &self.tcp;
            let BufResult(res, buf) = w.write_all(std::mem::take(&mut *out)).await;
            // Keep a record-sized buffer while traffic is heavy; after a
            // small write (a pong, an answer) give it up, so an idle
            // connection does not keep the handshake flight's buffer.
            *out = if buf.len() < CIPHERTEXT_IDLE_READ {
                Vec::new()
            } else {
                buf
            };
            res?;
        }
    }
}

impl Duplex for TlsConn {
    async fn read_into(&self, mut buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        if buf.capacity() == buf.len() {
            return BufResult(Ok(0), buf);
        }
        loop {
            // Copy decrypted chunks straight into the spare capacity: no
            // zero-fill of the relay's buffer, no allocation.
            let (copied, end) = {
                let mut state = self.state.borrow_mut();
                let mut reader = state.reader();
                let mut copied = 0;
                let end = loop {
                    let room = buf.capacity() - buf.len();
                    if room == 0 {
                        break None;
                    }
                    match reader.fill_buf() {
                        // The peer's close_notify: its stream has ended.
                        Ok([]) => break Some(Ok(())),
                        Ok(chunk) => {
                            let n = chunk.len().min(room);
                            buf.extend_from_slice(&chunk[..n]);
                            reader.consume(n);
                            copied += n;
                        }
                        Err(e) => break Some(Err(e)),
                    }
                };
                (copied, end)
            };
            if copied > 0 {
                // Whatever ended the copy (EOF, an error) is seen next call.
                return BufResult(Ok(copied), buf);
            }
            match end {
                None | Some(Ok(())) => return BufResult(Ok(0), buf),
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A peer that closes TCP without close_notify: treat as the
                // end of its stream (many TLS clients do); relayed protocols
                // frame their own data.
                Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return BufResult(Ok(0), buf),
                Some(Err(e)) => return BufResult(Err(e), buf),
            }
            match self.feed().await {
                Ok(true) => {}
                Ok(false) => return BufResult(Ok(0), buf),
                Err(e) => return BufResult(Err(e), buf),
            }
        }
    }

    async fn write_all_from(&self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
        let mut done = 0;
        while done < buf.len() {
            let wrote = self.state.borrow_mut().writer().write(&buf[done..]);
            match wrote {
                Ok(n) => done += n,
                Err(e) => return BufResult(Err(e), buf),
            }
            if let Err(e) = self.flush().await {
                return BufResult(Err(e), buf);
            }
        }
        BufResult(Ok(()), buf)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        self.state.borrow_mut().send_close_notify();
        self.flush().await?;
        let mut w = &self.tcp;
        w.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    #[test]
    fn framing_follows_records_split_anywhere() {
        // Two records (3 and 0 bytes of body) and the start of a third.
        let stream: Vec<u8> = [&[23, 3, 3, 0, 3][..], &[1, 2, 3], &[23, 3, 3, 0, 0], &[22, 3]].concat();
        for cut in 0..=stream.len() {
            let f = Framing::default().advance(&stream[..cut]).advance(&stream[cut..]);
            assert!(!f.between_records(), "a third header is half in (cut at {cut})");
            let whole = 13;
            if cut <= whole {
                let f = Framing::default().advance(&stream[..cut]).advance(&stream[cut..whole]);
                assert!(f.between_records(), "two whole records (cut at {cut})");
            }
        }
        for inside in 1..8 {
            assert!(!Framing::default().advance(&stream[..inside]).between_records());
        }
        assert!(Framing::default().advance(&stream[..8]).between_records());
    }
}
