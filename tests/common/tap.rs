//! A wiretap: a forwarding proxy on loopback that keeps a copy of every
//! byte clients send through it, as an eavesdropper on a plain-HTTP path
//! would see them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::EVENT_TIMEOUT;

/// What each connection's client sent so far, in the order accepted,
/// and a signal for every byte added.
type Recorded = Arc<(Mutex<Vec<Vec<u8>>>, Condvar)>;

/// A forwarding proxy on 127.0.0.1 (port chosen by the kernel). Stops
/// accepting when dropped; open connections end with their peers.
pub struct Tap {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    recorded: Recorded,
}

impl Tap {
    /// Starts forwarding every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Tap {
        let listener = Arc::new(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the tap"));
        let addr = listener.local_addr().expect("tap address");
        let recorded = Recorded::default();
        let (accepting, record) = (Arc::clone(&listener), Arc::clone(&recorded));
        std::thread::Builder::new()
            .name("tap".into())
            .spawn(move || {
                // Ends when Drop shuts the listener down.
                while let Ok((client, _)) = accepting.accept() {
                    let Ok(server) = TcpStream::connect_timeout(&upstream, EVENT_TIMEOUT) else {
                        continue;
                    };
                    let index = {
                        let mut all = record.0.lock().expect("the tap's record");
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    forward(&client, &server, Some((Arc::clone(&record), index)));
                    forward(&server, &client, None);
                }
            })
            .expect("spawn the tap");
        Tap {
            addr,
            listener,
            recorded,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the client of connection `index` sent, once it has sent at
    /// least `heads` request heads (blank-line ends); waits for them.
    pub fn heads(&self, index: usize, heads: usize) -> Vec<u8> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let (all, added) = &*self.recorded;
        let mut all = all.lock().expect("the tap's record");
        loop {
            if let Some(sent) = all.get(index)
                && sent.windows(4).filter(|w| w == b"\r\n\r\n").count() >= heads
            {
                return sent.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "connection {index} did not send {heads} heads through the tap"
            );
            all = added.wait_timeout(all, left).expect("the tap's record").0;
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = socket2::SockRef::from(&*self.listener).shutdown(Shutdown::Both);
    }
}

/// Copies `from` to `to` on a thread of its own, appending to the record
/// if given; EOF is passed on as a half-close.
fn forward(from: &TcpStream, to: &TcpStream, record: Option<(Recorded, usize)>) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone a tapped socket"),
        to.try_clone().expect("clone a tapped socket"),
    );
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some((record, index)) = &record {
                record.0.lock().expect("the tap's record")[*index].extend_from_slice(&buf[..n]);
                record.1.notify_all();
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
