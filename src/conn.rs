//! A connection that is plain TCP or TLS over TCP, used the same way by
//! the gateway, the relay and the clients.

use std::io;

use compio::BufResult;
use compio::net::TcpStream;

use crate::relay::Duplex;
use crate::tls::TlsConn;

/// Plain or TLS.
pub enum Conn {
    /// Unencrypted TCP: reads and writes go straight to the socket.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsConn>),
}

impl Conn {
    /// The socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.tcp(),
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl Duplex for Conn {
    async fn read_into(&self, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        match self {
            Conn::Plain(s) => s.read_into(buf).await,
            Conn::Tls(t) => t.read_into(buf).await,
        }
    }

    async fn write_all_from(&self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
        match self {
            Conn::Plain(s) => s.write_all_from(buf).await,
            Conn::Tls(t) => t.write_all_from(buf).await,
        }
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown_write().await,
            Conn::Tls(t) => t.shutdown_write().await,
        }
    }
}
