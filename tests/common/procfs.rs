//! TCP sockets from /proc/net/tcp, this process's descriptors, and
//! bounded waits: poll(2) on a socket, or polling state with a deadline.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// One IPv4 TCP connection from /proc/net/tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// Kernel state code (1 = ESTABLISHED, 8 = CLOSE_WAIT).
    pub state: u8,
    /// Socket inode, to find the descriptor.
    pub inode: u64,
}

/// /proc/net/tcp state code of an established connection.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// /proc/net/tcp state code of a listening socket.
pub const TCP_LISTEN: u8 = 0x0A;

/// Every IPv4 TCP socket of this network namespace, each once. The kernel
/// prints /proc/net/tcp a page at a time while sockets come and go, so a
/// socket can appear twice in one read (seen: the same inode on two lines
/// while other tests opened connections); duplicates are dropped.
pub fn tcp_table() -> Vec<TcpEntry> {
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let mut seen = std::collections::HashSet::new();
    table
        .lines()
        .skip(1)
        .filter_map(parse_tcp_line)
        // Inode 0 is a socket no process holds (TIME_WAIT): keep them all.
        .filter(|e| e.inode == 0 || seen.insert((e.inode, e.local, e.remote)))
        .collect()
}

/// The IPv4 TCP connections of this network namespace whose remote end is
/// `remote`.
pub fn tcp_connections_to(remote: SocketAddr) -> Vec<TcpEntry> {
    tcp_table().into_iter().filter(|e| e.remote == remote).collect()
}

/// Whether any socket listens on `addr`.
pub fn is_listening(addr: SocketAddr) -> bool {
    tcp_table().iter().any(|e| e.state == TCP_LISTEN && e.local == addr)
}

fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let addr = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        // The kernel prints the address as the u32 in memory, i.e. in
        // network byte order read as a native integer.
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes())), port))
    };
    Some(TcpEntry {
        local: addr(fields.get(1)?)?,
        remote: addr(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// A duplicate of this process's descriptor for socket `inode`.
pub fn dup_own_socket(inode: u64) -> Option<OwnedFd> {
    let wanted = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_str() != Some(wanted.as_str()) {
            continue;
        }
        let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
        // SAFETY: dup of a descriptor this process holds; the new
        // descriptor is owned by the returned OwnedFd alone.
        let dup = unsafe { libc::dup(fd) };
        if dup >= 0 {
            // SAFETY: `dup` is a fresh descriptor nobody else owns.
            return Some(unsafe { OwnedFd::from_raw_fd(dup) });
        }
    }
    None
}

/// Waits up to `timeout` for `fd` to become readable (or hung up); false
/// if it did not.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Waits up to `timeout` until at least `want` of `fds` are readable (or
/// hung up); returns the positions of those that are, in order (fewer
/// than `want` only if the time ran out; `want == 0` looks once).
pub fn wait_readable_many(fds: &[impl AsRawFd], want: usize, timeout: Duration) -> Vec<usize> {
    let deadline = Instant::now() + timeout;
    let mut ready = vec![false; fds.len()];
    loop {
        // Only those not yet readable: poll returns at once while any of
        // its set is.
        let waiting: Vec<usize> = (0..fds.len()).filter(|&i| !ready[i]).collect();
        let mut pfds: Vec<libc::pollfd> = waiting
            .iter()
            .map(|&i| libc::pollfd {
                fd: fds[i].as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = if want == 0 {
            0
        } else {
            left.as_millis().min(i32::MAX as u128) as i32
        };
        // SAFETY: a valid array of pollfds for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            panic!("poll failed: {}", io::Error::last_os_error());
        }
        for (&i, p) in waiting.iter().zip(&pfds) {
            ready[i] |= p.revents != 0;
        }
        let count = ready.iter().filter(|&&r| r).count();
        if count >= want || n == 0 || waiting.is_empty() {
            return (0..fds.len()).filter(|&i| ready[i]).collect();
        }
    }
}

/// Waits up to `timeout` for `fd` to accept more bytes; false if it did not.
pub fn wait_writable(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// Polls `probe` until it returns `Some`, or `None` after `timeout`: for
/// state the gateway has no event for (descriptor counts), which settles
/// a few milliseconds after the event that caused it.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
