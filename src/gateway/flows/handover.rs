//! Moving a connection between workers: detach it from the runtime that
//! accepted it, attach it to the one that will serve it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use compio::net::TcpStream;

use crate::conn::Conn;
use crate::gateway::core::handoff::Handoff;
use crate::tls::TlsConn;

/// Detaches `conn` from this worker's runtime.
pub(crate) fn detach(conn: Conn, peer: SocketAddr, early: Vec<u8>) -> io::Result<Handoff> {
    let (stream, tls) = match conn {
        Conn::Plain(s) => (s, None),
        Conn::Tls(t) => {
            let (s, state, pending) = t.into_parts();
            (s, Some((Box::new(state), pending)))
        }
    };
    // A duplicate descriptor outlives the runtime-bound original, which is
    // closed when `stream` drops at the end of this function.
    let fd = stream.as_fd().try_clone_to_owned()?;
    Ok(Handoff { fd, tls, peer, early })
}

/// Attaches a handed-over connection to the current worker's runtime.
pub(crate) fn attach(h: Handoff) -> io::Result<(Conn, SocketAddr, Vec<u8>)> {
    let stream = TcpStream::from_std(std::net::TcpStream::from(h.fd))?;
    let conn = match h.tls {
        None => Conn::Plain(stream),
        Some((state, pending)) => Conn::Tls(Box::new(TlsConn::new(stream, *state, pending))),
    };
    Ok((conn, h.peer, h.early))
}
