//! Listening sockets: one SO_REUSEPORT listener per worker on every
//! address, bound on the calling thread so a bad address is refused by
//! name before anything runs; and the CPUs workers are pinned to.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::StartError;

/// Pending connections the kernel queues per listener before we accept.
/// 1024 absorbs a reconnect storm of agents after a gateway restart.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds `workers` SO_REUSEPORT listeners on each address and deals them
/// out: element `w` of the result holds worker `w`'s listener for every
/// address, with the address actually bound. Port 0 is resolved by the
/// first bind and the rest join that port. A probe bind without
/// SO_REUSEPORT first makes sure no other process is already serving the
/// port (a reuseport group would otherwise silently share it).
pub(crate) fn bind_all(
    addrs: &[SocketAddr],
    workers: usize,
) -> Result<(Vec<WorkerListeners>, Vec<SocketAddr>), StartError> {
    let mut per_worker: Vec<WorkerListeners> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let fail = |error: io::Error| StartError::Bind { addr, error };
        if addr.port() != 0 {
            probe_free(addr).map_err(fail)?;
        }
        let mut actual = addr;
        for listeners in &mut per_worker {
            let s = new_socket(actual, true).map_err(fail)?;
            s.bind(&actual.into()).map_err(fail)?;
            s.listen(LISTEN_BACKLOG).map_err(fail)?;
            if actual.port() == 0 {
                actual = s
                    .local_addr()
                    .map_err(fail)?
                    .as_socket()
                    .ok_or_else(|| fail(io::Error::other("bound address is not IP")))?;
            }
            listeners.push((actual, s.into()));
        }
        bound.push(actual);
    }
    Ok((per_worker, bound))
}

/// One worker's listeners: the address each serves, and the socket.
pub(crate) type WorkerListeners = Vec<(SocketAddr, std::net::TcpListener)>;

/// How long a start waits for a port still held by a gateway that just
/// died: the kernel closes an io_uring process's listeners a few
/// milliseconds after the process is gone, and a supervisor restarting at
/// once must not fail on that.
const BIND_RETRY_FOR: Duration = Duration::from_millis(500);

/// Checks that nothing else listens on `addr` (bind without SO_REUSEPORT),
/// retrying "address in use" briefly (see [`BIND_RETRY_FOR`]).
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    let give_up = std::time::Instant::now() + BIND_RETRY_FOR;
    loop {
        let probe = new_socket(addr, false)?;
        match probe.bind(&addr.into()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    Ok(s)
}

/// CPUs this process may run on, in order (respects taskset and cpusets:
/// core_affinity reads the calling thread's affinity mask).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus
}
