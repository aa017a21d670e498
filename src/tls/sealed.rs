//! A TLS connection after the handshake, protected by the gateway's own
//! [`RecordLayer`] instead of rustls: what an agent channel runs on, so an
//! idle TLS agent holds its keys and a small read buffer, not rustls's
//! buffers and state (see [`super::record`] for why and what it speaks).

use std::cell::{Cell, RefCell};
use std::io;

use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::lock::Mutex;

use super::record::{HEADER_LEN, Opened, RecordError, RecordLayer, record_len};
use crate::relay::Duplex;

/// What a read waits with while the channel is quiet: a poll's record is
/// about 40 bytes. A longer record is read on once its header says how
/// long it is, and the buffer is given up again when it is empty.
const IDLE_READ: usize = 128;

/// A TLS connection whose record protection the gateway does itself.
pub struct SealedConn {
    tcp: TcpStream,
    layer: RefCell<RecordLayer>,
    /// Ciphertext read from the socket, not yet opened.
    pending: RefCell<Vec<u8>>,
    /// Plaintext opened but not yet taken by a reader (a record longer
    /// than the reader's room).
    plain: RefCell<Vec<u8>>,
    /// One writer at a time, so records never interleave.
    writing: Mutex<()>,
    /// The peer's TCP stream ended.
    eof: Cell<bool>,
    /// The peer sent close_notify.
    closed: Cell<bool>,
}

fn invalid(e: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl SealedConn {
    /// Runs `layer` over `tcp`; `ciphertext` is what was read from the
    /// socket after the last record the handshake's rustls consumed.
    pub fn new(tcp: TcpStream, layer: RecordLayer, ciphertext: Vec<u8>) -> Self {
        Self {
            tcp,
            layer: RefCell::new(layer),
            pending: RefCell::new(ciphertext),
            plain: RefCell::new(Vec::new()),
            writing: Mutex::new(()),
            eof: Cell::new(false),
            closed: Cell::new(false),
        }
    }

    /// The socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Opens the first record in `pending` if it is whole: its data goes
    /// into `buf` (as much as fits) and `plain` (the rest). `Ok(false)`
    /// when more ciphertext is needed.
    fn open_one(&self, buf: &mut Vec<u8>) -> Result<bool, RecordError> {
        let mut pending = self.pending.borrow_mut();
        let Some(len) = record_len(&pending)? else {
            return Ok(false);
        };
        if pending.len() < len {
            return Ok(false);
        }
        let opened = self.layer.borrow_mut().open(&mut pending[..len])?;
        if let Opened::Data(n) = opened {
            let room = buf.capacity() - buf.len();
            let take = n.min(room);
            buf.extend_from_slice(&pending[..take]);
            self.plain.borrow_mut().extend_from_slice(&pending[take..n]);
        } else {
            self.closed.set(true);
        }
        pending.drain(..len);
        Ok(true)
    }

    /// Reads more ciphertext: at least the rest of the record whose header
    /// is in, and [`IDLE_READ`] otherwise.
    async fn fill(&self) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut *self.pending.borrow_mut());
        let need = match record_len(&buf).map_err(invalid)? {
            Some(len) => len.saturating_sub(buf.len()),
            None => HEADER_LEN - buf.len(),
        };
        if buf.is_empty() && buf.capacity() > IDLE_READ {
            // A burst is over: do not wait out the quiet with its buffer.
            buf = Vec::new();
        }
        buf.reserve_exact(need.max(IDLE_READ));
        let mut r = &self.tcp;
        let BufResult(res, buf) = r.append(buf).await;
        *self.pending.borrow_mut() = buf;
        match res? {
            0 => {
                self.eof.set(true);
                Ok(false)
            }
            _ => Ok(true),
        }
    }
}

impl Duplex for SealedConn {
    async fn read_into(&self, mut buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        if buf.capacity() == buf.len() {
            return BufResult(Ok(0), buf);
        }
        let start = buf.len();
        loop {
            {
                let mut plain = self.plain.borrow_mut();
                if !plain.is_empty() {
                    let take = plain.len().min(buf.capacity() - buf.len());
                    buf.extend_from_slice(&plain[..take]);
                    plain.drain(..take);
                    if plain.is_empty() {
                        *plain = Vec::new();
                    }
                    return BufResult(Ok(take), buf);
                }
            }
            if self.closed.get() {
                return BufResult(Ok(0), buf);
            }
            match self.open_one(&mut buf) {
                Ok(true) if buf.len() > start => return BufResult(Ok(buf.len() - start), buf),
                // An empty record, or close_notify: look again.
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return BufResult(Err(invalid(e)), buf),
            }
            if self.eof.get() {
                // A peer that closes TCP without close_notify ends its
                // stream, as rustls's side of the gateway takes it too.
                return BufResult(Ok(0), buf);
            }
            if let Err(e) = self.fill().await {
                return BufResult(Err(e), buf);
            }
        }
    }

    async fn write_all_from(&self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
        let _writing = self.writing.lock().await;
        let mut out = Vec::with_capacity(buf.len() + 64);
        if let Err(e) = self.layer.borrow_mut().seal_data(&buf, &mut out) {
            return BufResult(Err(invalid(e)), buf);
        }
        let mut w = &self.tcp;
        let BufResult(res, _) = w.write_all(out).await;
        BufResult(res, buf)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        let mut out = Vec::new();
        self.layer.borrow_mut().seal_close_notify(&mut out).map_err(invalid)?;
        let mut w = &self.tcp;
        w.write_all(out).await.0?;
        w.shutdown().await
    }
}
