//! Local TCP services on std threads: echo, or hand each connection over.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::{CHUNK, IO_TIMEOUT};

/// A TCP service on 127.0.0.1:0 served by std threads.
pub struct Service {
    addr: SocketAddr,
    incoming: Option<mpsc::Receiver<TcpStream>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Service {
    /// A service that hands each accepted connection to [`Service::accept`].
    pub fn manual() -> Service {
        let (tx, rx) = mpsc::channel();
        let mut service = Service::with(move |s| {
            let _ = tx.send(s);
        });
        service.incoming = Some(rx);
        service
    }

    /// A service that echoes every connection, on a thread each, and
    /// half-closes back when the peer half-closes.
    pub fn echo() -> Service {
        Service::with(|mut s| {
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        })
    }

    fn with(on_accept: impl Fn(TcpStream) + Send + 'static) -> Service {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a local service");
        let addr = listener.local_addr().expect("service address");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stopping, counted) = (Arc::clone(&stop), Arc::clone(&accepted));
        std::thread::Builder::new()
            .name("test-service".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(s) = conn {
                        counted.fetch_add(1, Ordering::SeqCst);
                        on_accept(s);
                    }
                }
            })
            .expect("spawn the service thread");
        Service {
            addr,
            incoming: None,
            stop,
            accepted,
        }
    }

    /// Where the service listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next connection of a [`Service::manual`] service, with
    /// [`IO_TIMEOUT`] on reads.
    pub fn accept(&self, timeout: Duration) -> TcpStream {
        // Invariant: only manual services are asked for their connections.
        let incoming = self.incoming.as_ref().expect("accept() needs Service::manual()");
        let s = incoming
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("the service got no connection within {timeout:?}: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
        s
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// An address where nothing listens: a port bound, then closed.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a throwaway port");
    l.local_addr().expect("throwaway address")
}
