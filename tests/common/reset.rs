//! Aborting a connection mid-transfer (RST, as a crashed peer or a
//! middlebox sends) and watching the other end of the relay: both of its
//! directions must end, bounded in time. One thread per socket, driven by
//! poll(2), so a socket can be closed the moment it is done with.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::CHUNK;

/// Longest wait in one poll(2), so the deadline is checked at least this
/// often even if nothing happens.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// What one end did while it streamed.
#[derive(Debug, Default)]
pub struct Streamed {
    /// Bytes it wrote.
    pub sent: usize,
    /// Bytes it read.
    pub received: usize,
    /// How its read side ended: `None` while it has not, `Some(Ok(()))` at
    /// EOF, `Some(Err(kind))` if a read failed (a reset).
    pub read_end: Option<Result<(), ErrorKind>>,
    /// The error its writes ended with, if they did.
    pub write_error: Option<ErrorKind>,
}

/// Writes and reads `s` at once until `stop` says so, or `timeout` passes
/// (then panics, naming `what`). Writes stop at the first error, reads at
/// EOF or the first error.
pub fn stream_until(s: &TcpStream, what: &str, timeout: Duration, stop: impl Fn(&Streamed) -> bool) -> Streamed {
    s.set_nonblocking(true).expect("make the socket non-blocking");
    let out = vec![0x5Au8; CHUNK];
    let mut input = vec![0u8; CHUNK];
    let mut done = Streamed::default();
    let deadline = Instant::now() + timeout;
    while !stop(&done) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: not done within {timeout:?}: {done:?}");
        let mut events = 0;
        if done.read_end.is_none() {
            events |= libc::POLLIN;
        }
        if done.write_error.is_none() {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = left.min(POLL_SLICE).as_millis() as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        if done.read_end.is_none() {
            match (&mut &*s).read(&mut input) {
                Ok(0) => done.read_end = Some(Ok(())),
                Ok(n) => done.received += n,
                Err(e) if transient(&e) => {}
                Err(e) => done.read_end = Some(Err(e.kind())),
            }
        }
        if done.write_error.is_none() {
            match (&mut &*s).write(&out) {
                Ok(n) => done.sent += n,
                Err(e) if transient(&e) => {}
                Err(e) => done.write_error = Some(e.kind()),
            }
        }
    }
    done
}

/// Whether both directions of `s` have ended.
pub fn both_ended(done: &Streamed) -> bool {
    done.read_end.is_some() && done.write_error.is_some()
}

/// Closes `s` with SO_LINGER set to 0, so the kernel sends RST instead of
/// FIN and drops what was unsent.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER to 0");
    drop(s);
}

fn transient(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}
