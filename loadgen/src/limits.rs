//! Will the planned connections fit in this process and on these source
//! addresses? Checked before the first connection, so that a run too big
//! for the machine is refused with a reason instead of failing halfway
//! with `EMFILE` or `EADDRNOTAVAIL` counted as thousands of errors.

/// Files the process needs besides its connections: stdio, each runtime's
/// io_uring and wake-up descriptors, the JSON file, /proc reads, and the
/// short-lived sockets of a reconnect that overlaps its predecessor.
const FD_HEADROOM: u64 = 64;

/// Open files one control may hold at once: its session socket, the
/// simulated agent's data socket for that session (in `mixed`), and a
/// browse connection.
pub const FDS_PER_CONTROL: u64 = 3;

/// Open files one simulated agent holds: its channel. Its session data
/// sockets are counted with the controls that cause them.
pub const FDS_PER_AGENT: u64 = 1;

/// Raises the soft open-file limit to the hard one and returns it.
pub fn raise_nofile() -> Result<u64, String> {
    use rlimit::Resource;
    let (soft, hard) =
        rlimit::getrlimit(Resource::NOFILE).map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if soft >= hard {
        return Ok(soft);
    }
    match rlimit::setrlimit(Resource::NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        Err(e) => {
            log::warn!("cannot raise the open-file limit to {hard}: {e}");
            Ok(soft)
        }
    }
}

/// Checks that `agents` and `controls` fit under `nofile` open files and
/// in `ports` ephemeral ports on each of `sources` addresses.
pub fn check(agents: u64, controls: u64, nofile: u64, sources: usize, ports: usize) -> Result<(), String> {
    let needed = agents * FDS_PER_AGENT + controls * FDS_PER_CONTROL + FD_HEADROOM;
    if needed > nofile {
        let room = nofile.saturating_sub(FD_HEADROOM + controls * FDS_PER_CONTROL) / FDS_PER_AGENT;
        return Err(format!(
            "{agents} agents and {controls} controls need about {needed} open files, but this process \
             may hold {nofile} (RLIMIT_NOFILE, already raised to the hard limit); at most {room} agents \
             fit with {controls} controls. Lower --count/--agents, or run several load generators"
        ));
    }
    let sockets = agents * FDS_PER_AGENT + controls * FDS_PER_CONTROL;
    let per_source = sockets.div_ceil(sources.max(1) as u64);
    if per_source > ports as u64 {
        let wanted = sockets.div_ceil(ports.max(1) as u64);
        return Err(format!(
            "{sockets} connections over {sources} source address(es) is {per_source} per address, \
             but one address offers {ports} ephemeral ports; give at least {wanted} addresses \
             with --source (e.g. 127.0.0.2-127.0.0.{})",
            wanted.clamp(1, 253) + 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_and_refusals() {
        assert!(check(5_000, 10, 20_000, 1, 28_232).is_ok());
        let err = check(25_000, 0, 20_000, 10, 28_232).unwrap_err();
        assert!(err.contains("open files"), "{err}");
        let err = check(19_000, 0, 1_000_000, 1, 10_000).unwrap_err();
        assert!(err.contains("at least 2 addresses"), "{err}");
        assert!(check(19_000, 0, 1_000_000, 2, 10_000).is_ok());
    }
}
