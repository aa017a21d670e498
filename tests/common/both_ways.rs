//! The bulk check of a relay: each end writes its own seeded stream and
//! half-closes while it reads the other's to EOF, all at once, on four
//! threads; both SHA-256 digests must match what the other end sent.

use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{read_hashed, send_generated};

/// Seed of the stream the control sends; the service sends another, so a
/// relay that crossed or echoed the directions would be caught.
const CONTROL_SEED: u64 = 1;
/// Seed of the stream the service sends.
const SERVICE_SEED: u64 = 2;

/// What one of the four threads finished with.
enum Done {
    /// An end sent its stream (SHA-256) and half-closed.
    Sent(&'static str, Vec<u8>),
    /// An end read to EOF: how many bytes, and their SHA-256.
    Received(&'static str, usize, Vec<u8>),
    /// An end's write or read failed.
    Failed(&'static str, &'static str, std::io::Error),
}

/// Sends `len` bytes each way through the session whose ends are
/// `control` (with the `early` bytes that came with its `101`) and
/// `service`, and asserts that each end received exactly the other's
/// stream. Bounded by `timeout`: past it both sockets are shut down, so
/// no thread is left behind, and the test fails.
pub fn assert_byte_exact_both_ways(
    control: TcpStream,
    early: Vec<u8>,
    service: TcpStream,
    len: usize,
    timeout: Duration,
) {
    let (tx, rx) = mpsc::channel();
    let keep = [clone(&control), clone(&service)];
    for (end, stream, seed, early) in [
        ("control", control, CONTROL_SEED, early),
        ("service", service, SERVICE_SEED, Vec::new()),
    ] {
        let mut writer = clone(&stream);
        let sent = tx.clone();
        std::thread::spawn(move || {
            let done = send_generated(&mut writer, seed, len)
                .and_then(|d| writer.shutdown(Shutdown::Write).map(|()| d))
                .map_or_else(|e| Done::Failed(end, "send", e), |d| Done::Sent(end, d));
            let _ = sent.send(done);
        });
        let mut reader = stream;
        let received = tx.clone();
        std::thread::spawn(move || {
            let done = read_hashed(&mut reader, &early)
                .map_or_else(|e| Done::Failed(end, "read", e), |(n, d)| Done::Received(end, n, d));
            let _ = received.send(done);
        });
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let (mut sent, mut received) = (Vec::new(), Vec::new());
    while sent.len() + received.len() < 4 {
        let failure = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Done::Sent(end, digest)) => {
                sent.push((end, digest));
                continue;
            }
            Ok(Done::Received(end, n, digest)) => {
                received.push((end, n, digest));
                continue;
            }
            Ok(Done::Failed(end, what, e)) => format!("the {end}'s {what} failed: {e}"),
            Err(_) => format!("not finished within {timeout:?}"),
        };
        for s in &keep {
            let _ = s.shutdown(Shutdown::Both);
        }
        let ended: Vec<&str> = sent.iter().map(|(e, _)| *e).collect();
        let read: Vec<(&str, usize)> = received.iter().map(|(e, n, _)| (*e, *n)).collect();
        panic!("{len} bytes each way: {failure} (sent by {ended:?}, read to EOF by {read:?})");
    }
    let digest_sent = |end: &str| sent.iter().find(|(e, _)| *e == end).map(|(_, d)| d.clone());
    for (end, n, digest) in &received {
        let other = if *end == "control" { "service" } else { "control" };
        assert_eq!(*n, len, "bytes the {end} received");
        assert_eq!(Some(digest.clone()), digest_sent(other), "SHA-256 of {other} → {end}");
    }
    assert_ne!(
        digest_sent("control"),
        digest_sent("service"),
        "the two directions carry different streams"
    );
}

fn clone(s: &TcpStream) -> TcpStream {
    s.try_clone().expect("clone a test socket")
}
