//! A TCP proxy that adds latency: it accepts, dials onward, and forwards
//! each direction's bytes a fixed delay after it read them. Stands in for
//! `tc netem delay`, which this kernel lacks. Half-close is carried (EOF
//! becomes shutdown(Write) after the same delay), so relays behind it see
//! what they would see on a slow link.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::EVENT_TIMEOUT;

/// Bytes read in one go; each read becomes one delayed write.
const READ_SIZE: usize = 64 * 1024;

/// Reads in flight per direction. With [`READ_SIZE`] that bounds what a
/// direction holds to 4 MiB, and its throughput to 4 MiB per delay
/// (800 MiB/s at 5 ms): more than the relays under test move, while a
/// stalled reader still stalls the writer instead of growing the proxy.
const IN_FLIGHT: usize = 64;

/// A delaying proxy on 0.0.0.0 (port chosen by the kernel) of the calling
/// thread's network namespace, forwarding to `upstream`. Stops accepting
/// when dropped; open connections end with their peers.
pub struct DelayProxy {
    port: u16,
    listener: Arc<TcpListener>,
    accepting: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Starts the proxy: every connection to it is forwarded to
    /// `upstream`, each byte `delay` late in both directions.
    pub fn start(upstream: SocketAddr, delay: Duration) -> DelayProxy {
        let listener = Arc::new(TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind the delay proxy"));
        let port = listener.local_addr().expect("delay proxy address").port();
        let accepting = {
            let listener = Arc::clone(&listener);
            std::thread::Builder::new()
                .name("delay-proxy".into())
                .spawn(move || {
                    // Ends when Drop shuts the listener down.
                    while let Ok((client, _)) = listener.accept() {
                        let Ok(server) = TcpStream::connect_timeout(&upstream, EVENT_TIMEOUT) else {
                            continue;
                        };
                        forward_both(client, server, delay);
                    }
                })
                .expect("spawn the delay proxy")
        };
        DelayProxy {
            port,
            listener,
            accepting: Some(accepting),
        }
    }

    /// The port it listens on, on every address of its namespace.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept with an
        // error, from any thread and any namespace.
        // SAFETY: shutdown has no memory effects; the listener is alive
        // (this struct holds it).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

/// One chunk read, and when; `None` is the reader's end (EOF or error).
type Chunk = Option<(Instant, Vec<u8>)>;

fn forward_both(client: TcpStream, server: TcpStream, delay: Duration) {
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
    }
    let pairs = [(&client, &server), (&server, &client)];
    for (from, to) in pairs {
        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        let (tx, rx) = sync_channel(IN_FLIGHT);
        std::thread::spawn(move || read_side(from, tx));
        std::thread::spawn(move || write_side(rx, to, delay));
    }
}

fn read_side(mut from: TcpStream, tx: SyncSender<Chunk>) {
    loop {
        let mut buf = vec![0u8; READ_SIZE];
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Some((Instant::now(), buf))).is_err() {
                    // The writer failed: stop reading what cannot go on.
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
            }
        }
    }
    let _ = tx.send(None);
}

fn write_side(rx: Receiver<Chunk>, mut to: TcpStream, delay: Duration) {
    while let Ok(Some((read_at, bytes))) = rx.recv() {
        // Sleeping is the point here: this is the link's latency.
        std::thread::sleep((read_at + delay).saturating_duration_since(Instant::now()));
        if to.write_all(&bytes).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    std::thread::sleep(delay);
    let _ = to.shutdown(Shutdown::Write);
}
