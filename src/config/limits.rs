//! The `[limits]` section: deadlines, sizes and each tenant's share of
//! them. Every value has a named [`Bound`] below with the reason for its
//! default and range.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::bound::Bound;
use super::error::{ConfigError, Source};

/// `head_timeout_secs`: 10 s is long enough for a slow mobile link and
/// short enough that idle half-open sockets do not pile up; an hour is
/// past any honest client.
pub const HEAD_TIMEOUT_SECS: Bound = Bound {
    key: "head_timeout_secs",
    default: 10,
    min: 1,
    max: 3600,
};
/// `pairing_timeout_secs`: the agent dials its local service and the
/// gateway; 10 s covers a slow service and a congested uplink.
pub const PAIRING_TIMEOUT_SECS: Bound = Bound {
    key: "pairing_timeout_secs",
    default: 10,
    min: 1,
    max: 3600,
};
/// `relay_buffer_kb`: 64 KiB per direction keeps a 10 Gbit/s stream fed in
/// few syscalls; two per session bound a session's memory. Below 4 KiB
/// (a page) syscalls dominate; past 4 MiB a session pins too much memory.
pub const RELAY_BUFFER_KB: Bound = Bound {
    key: "relay_buffer_kb",
    default: 64,
    min: 4,
    max: 4096,
};
/// `max_pending_sessions`, per worker: each waiting session holds a
/// control socket, so this bounds what a flood of connects can pin.
pub const MAX_PENDING_SESSIONS: Bound = Bound {
    key: "max_pending_sessions",
    default: 4096,
    min: 1,
    max: 1 << 20,
};
/// `max_pending_per_key`: a quarter of the default worker slots, so one
/// key flooding connects to an agent that never joins leaves three
/// quarters to every other key.
pub const MAX_PENDING_PER_KEY: Bound = Bound {
    key: "max_pending_per_key",
    default: 1024,
    min: 1,
    max: MAX_PENDING_SESSIONS.max,
};
/// `max_pending_per_control`: an operator opens a handful of sessions at
/// once; 64 covers scripted fan-out while one runaway control cannot take
/// its whole key's share.
pub const MAX_PENDING_PER_CONTROL: Bound = Bound {
    key: "max_pending_per_control",
    default: 64,
    min: 1,
    max: MAX_PENDING_SESSIONS.max,
};
/// `handshake_timeout_secs`: as long as for a request head, for the same
/// reasons.
pub const HANDSHAKE_TIMEOUT_SECS: Bound = Bound {
    key: "handshake_timeout_secs",
    default: 10,
    min: 1,
    max: 3600,
};
/// `max_connections`: 0 derives the cap from the open-file limit at
/// start; a hundred million is past any kernel's file table.
pub const MAX_CONNECTIONS: Bound = Bound {
    key: "max_connections",
    default: 0,
    min: 0,
    max: 100_000_000,
};
/// `shutdown_grace_secs`: 30 s lets a file copy or a screen refresh finish
/// on SIGTERM; 0 closes at once; an hour is longer than any service manager
/// waits (systemd's default is 90 s: raise `TimeoutStopSec=` with this).
pub const SHUTDOWN_GRACE_SECS: Bound = Bound {
    key: "shutdown_grace_secs",
    default: 30,
    min: 0,
    max: 3600,
};
/// `max_unauthenticated_per_source`: 0 is automatic (see
/// [`Limits::unauthenticated_per_source`]); 65,536 is every port of one
/// address, past which a cap means nothing.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: Bound = Bound {
    key: "max_unauthenticated_per_source",
    default: 0,
    min: 0,
    max: 65_536,
};
/// The automatic unauthenticated share: 1/64 of the connection cap, so
/// one source holds at most a sliver of it while still reaching the
/// gateway...
pub const AUTO_UNAUTHENTICATED_DIVISOR: usize = 64;
/// ...but never fewer than 8, so a small cap still lets one NAT'd office
/// reconnect several agents at once.
pub const MIN_AUTO_UNAUTHENTICATED: usize = 8;
/// `new_connections_per_source_per_sec`: 100 a second is far above what an
/// honest site reconnecting opens and far below the ~2,000 a second that
/// filled the default cap in the hostile probes; 0 turns the bucket off. A
/// million is past any accept rate, so larger is a typo.
pub const NEW_CONNECTIONS_PER_SOURCE_PER_SEC: Bound = Bound {
    key: "new_connections_per_source_per_sec",
    default: 100,
    min: 0,
    max: 1_000_000,
};
/// `new_connections_burst_per_source`: two seconds' worth at the default
/// rate, for a site whose agents all reconnect after a gateway restart.
pub const NEW_CONNECTIONS_BURST_PER_SOURCE: Bound = Bound {
    key: "new_connections_burst_per_source",
    default: 200,
    min: 1,
    max: 1_000_000,
};
/// `max_agents_per_key`: 0 is no quota (the licence, `max_clients`, still
/// applies); as with the licence, past four billion it is a typo.
pub const MAX_AGENTS_PER_KEY: Bound = Bound {
    key: "max_agents_per_key",
    default: 0,
    min: 0,
    max: u32::MAX as u64,
};
/// `max_pins`: agent name pins the gateway keeps (each in memory, about
/// 150 bytes, and in `state_dir/pins.redb`). A million is ten times the
/// largest deployment we plan for (100,000 agents) and about 150 MB at
/// worst; past it new names are refused (503) while pinned names go on
/// working, so a holder of a key cannot grow the table without bound by
/// registering made-up names.
pub const MAX_PINS: Bound = Bound {
    key: "max_pins",
    default: 1_000_000,
    min: 1,
    max: 100_000_000,
};
/// `write_timeout_secs`: 30 s rides out a congested uplink or a laptop
/// waking; a peer that takes no bytes for longer is stalled, not slow.
pub const WRITE_TIMEOUT_SECS: Bound = Bound {
    key: "write_timeout_secs",
    default: 30,
    min: 1,
    max: 3600,
};
/// `nonces_per_key`: the nonces one key's proofs may have live at once
/// (each is remembered for the replay window, up to 11 minutes). 524,288
/// is about 870 proofs a second from one key, sustained over the window:
/// far past an honest tenant (15,000 agents reconnecting at once plus
/// their sessions) and at ~40 bytes a nonce about 20 MiB, the most one
/// key's flood can make the gateway hold. 16 lets a test reach it; past
/// 16 million (640 MiB a key) it is a typo.
pub const NONCES_PER_KEY: Bound = Bound {
    key: "nonces_per_key",
    default: 524_288,
    min: 16,
    max: 1 << 24,
};

/// Deadlines, sizes and shares, each defaulted by the [`Bound`] above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a request head, so a silent socket is closed.
    pub head_timeout: Duration,
    /// Time allowed for an agent to join a session, so a control does not
    /// wait on an agent that never dials.
    pub pairing_timeout: Duration,
    /// Bytes per relay direction buffer: a session's memory is two of them.
    pub relay_buffer: usize,
    /// Sessions waiting for an agent, per worker: each pins a control socket.
    pub max_pending_sessions: usize,
    /// Of those, how many one gateway key may hold, so one tenant cannot
    /// take every slot.
    pub max_pending_per_key: usize,
    /// Of a key's share, how many one control may hold.
    pub max_pending_per_control: usize,
    /// Time allowed for a TLS handshake, apart from the head's.
    pub handshake_timeout: Duration,
    /// Open connections the gateway holds at most (0: derived from the
    /// open-file limit at start).
    pub max_connections: usize,
    /// How long running sessions may finish on SIGTERM before they are cut.
    pub shutdown_grace: Duration,
    /// Open connections from one source (an IPv4 address, or an IPv6 /64)
    /// that have not yet proven a key; 0 is automatic. Read it through
    /// [`Limits::unauthenticated_per_source`].
    pub max_unauthenticated_per_source: usize,
    /// New connections one source may open per second (its bucket's
    /// refill); 0 turns the bucket off.
    pub new_connections_per_source_per_sec: usize,
    /// New connections one source may open at once (its bucket's size).
    pub new_connections_burst_per_source: usize,
    /// Agents one gateway key may have connected; 0 is no quota. Counts
    /// authenticated agents, so many agents behind one NAT still get in.
    pub max_agents_per_key: usize,
    /// Time every write to a peer must finish in; an agent whose channel
    /// has not drained for this long is stalled.
    pub write_timeout: Duration,
    /// Proof nonces one key may have remembered at once; past it that
    /// key's proofs get 503 while every other key's are served.
    pub nonces_per_key: usize,
    /// Agent name pins kept; past it a new name is refused (503).
    pub max_pins: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let secs = |b: Bound| Duration::from_secs(b.default);
        // Every default is far below usize::MAX on any target.
        let size = |b: Bound| b.default as usize;
        Self {
            head_timeout: secs(HEAD_TIMEOUT_SECS),
            pairing_timeout: secs(PAIRING_TIMEOUT_SECS),
            relay_buffer: size(RELAY_BUFFER_KB) * 1024,
            max_pending_sessions: size(MAX_PENDING_SESSIONS),
            max_pending_per_key: size(MAX_PENDING_PER_KEY),
            max_pending_per_control: size(MAX_PENDING_PER_CONTROL),
            handshake_timeout: secs(HANDSHAKE_TIMEOUT_SECS),
            max_connections: size(MAX_CONNECTIONS),
            shutdown_grace: secs(SHUTDOWN_GRACE_SECS),
            max_unauthenticated_per_source: size(MAX_UNAUTHENTICATED_PER_SOURCE),
            new_connections_per_source_per_sec: size(NEW_CONNECTIONS_PER_SOURCE_PER_SEC),
            new_connections_burst_per_source: size(NEW_CONNECTIONS_BURST_PER_SOURCE),
            max_agents_per_key: size(MAX_AGENTS_PER_KEY),
            write_timeout: secs(WRITE_TIMEOUT_SECS),
            nonces_per_key: size(NONCES_PER_KEY),
            max_pins: size(MAX_PINS),
        }
    }
}

impl Limits {
    /// Unauthenticated connections one source may hold, given the
    /// gateway's connection cap: the configured value, or when automatic
    /// 1/[`AUTO_UNAUTHENTICATED_DIVISOR`] of the cap, at least
    /// [`MIN_AUTO_UNAUTHENTICATED`] and at most the setting's maximum.
    pub fn unauthenticated_per_source(&self, connection_cap: usize) -> usize {
        if self.max_unauthenticated_per_source != 0 {
            return self.max_unauthenticated_per_source;
        }
        (connection_cap / AUTO_UNAUTHENTICATED_DIVISOR)
            .clamp(MIN_AUTO_UNAUTHENTICATED, MAX_UNAUTHENTICATED_PER_SOURCE.max as usize)
    }
}

/// `[limits]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    head_timeout_secs: Option<Spanned<u64>>,
    pairing_timeout_secs: Option<Spanned<u64>>,
    relay_buffer_kb: Option<Spanned<u64>>,
    max_pending_sessions: Option<Spanned<u64>>,
    max_pending_per_key: Option<Spanned<u64>>,
    max_pending_per_control: Option<Spanned<u64>>,
    handshake_timeout_secs: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    shutdown_grace_secs: Option<Spanned<u64>>,
    max_unauthenticated_per_source: Option<Spanned<u64>>,
    new_connections_per_source_per_sec: Option<Spanned<u64>>,
    new_connections_burst_per_source: Option<Spanned<u64>>,
    max_agents_per_key: Option<Spanned<u64>>,
    write_timeout_secs: Option<Spanned<u64>>,
    nonces_per_key: Option<Spanned<u64>>,
    max_pins: Option<Spanned<u64>>,
}

/// Checks `[limits]`; an absent section is all defaults.
pub(super) fn parse_limits(raw: &RawLimits, src: &Source) -> Result<Limits, ConfigError> {
    let secs = |b: Bound, v: &Option<Spanned<u64>>| b.take(v, src).map(Duration::from_secs);
    let max_pending_sessions = MAX_PENDING_SESSIONS.take_usize(&raw.max_pending_sessions, src)?;
    let max_pending_per_key = share(
        MAX_PENDING_PER_KEY,
        &raw.max_pending_per_key,
        (max_pending_sessions, MAX_PENDING_SESSIONS.key),
        "a key's share cannot exceed the whole",
        src,
    )?;
    let max_pending_per_control = share(
        MAX_PENDING_PER_CONTROL,
        &raw.max_pending_per_control,
        (max_pending_per_key, MAX_PENDING_PER_KEY.key),
        "a control's share cannot exceed its key's",
        src,
    )?;
    Ok(Limits {
        head_timeout: secs(HEAD_TIMEOUT_SECS, &raw.head_timeout_secs)?,
        pairing_timeout: secs(PAIRING_TIMEOUT_SECS, &raw.pairing_timeout_secs)?,
        relay_buffer: RELAY_BUFFER_KB.take_usize(&raw.relay_buffer_kb, src)? * 1024,
        max_pending_sessions,
        max_pending_per_key,
        max_pending_per_control,
        handshake_timeout: secs(HANDSHAKE_TIMEOUT_SECS, &raw.handshake_timeout_secs)?,
        max_connections: MAX_CONNECTIONS.take_usize(&raw.max_connections, src)?,
        shutdown_grace: secs(SHUTDOWN_GRACE_SECS, &raw.shutdown_grace_secs)?,
        max_unauthenticated_per_source: MAX_UNAUTHENTICATED_PER_SOURCE
            .take_usize(&raw.max_unauthenticated_per_source, src)?,
        new_connections_per_source_per_sec: NEW_CONNECTIONS_PER_SOURCE_PER_SEC
            .take_usize(&raw.new_connections_per_source_per_sec, src)?,
        new_connections_burst_per_source: NEW_CONNECTIONS_BURST_PER_SOURCE
            .take_usize(&raw.new_connections_burst_per_source, src)?,
        max_agents_per_key: MAX_AGENTS_PER_KEY.take_usize(&raw.max_agents_per_key, src)?,
        write_timeout: secs(WRITE_TIMEOUT_SECS, &raw.write_timeout_secs)?,
        nonces_per_key: NONCES_PER_KEY.take_usize(&raw.nonces_per_key, src)?,
        max_pins: MAX_PINS.take_usize(&raw.max_pins, src)?,
    })
}

/// A share of a `whole` (its value and key): a value written above the
/// whole is refused, but an absent one only defaults to the smaller of
/// its default and the whole, so a file that lowered the whole before
/// the share existed stays valid.
fn share(
    bound: Bound,
    value: &Option<Spanned<u64>>,
    (whole, whole_key): (usize, &str),
    why: &str,
    src: &Source,
) -> Result<usize, ConfigError> {
    let v = bound.take_usize(value, src)?;
    match value {
        None => Ok(v.min(whole)),
        Some(given) if v > whole => Err(src.error(
            given.span(),
            format!("{} = {v} is above {whole_key} = {whole}: {why}", bound.key),
        )),
        Some(_) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    /// `[limits]` from `body` on the lines after the header (line 2 on).
    fn parse(body: &str) -> Result<Limits, String> {
        let text = format!("[limits]\n{body}");
        section(&text, "limits", |raw: Option<&RawLimits>, src| {
            parse_limits(raw.expect("a [limits] table"), src)
        })
    }

    /// Every whole-number key of `[limits]`.
    const ALL: [Bound; 16] = [
        HEAD_TIMEOUT_SECS,
        PAIRING_TIMEOUT_SECS,
        RELAY_BUFFER_KB,
        MAX_PENDING_SESSIONS,
        MAX_PENDING_PER_KEY,
        MAX_PENDING_PER_CONTROL,
        HANDSHAKE_TIMEOUT_SECS,
        MAX_CONNECTIONS,
        SHUTDOWN_GRACE_SECS,
        MAX_UNAUTHENTICATED_PER_SOURCE,
        NEW_CONNECTIONS_PER_SOURCE_PER_SEC,
        NEW_CONNECTIONS_BURST_PER_SOURCE,
        MAX_AGENTS_PER_KEY,
        WRITE_TIMEOUT_SECS,
        NONCES_PER_KEY,
        MAX_PINS,
    ];

    /// Raises the pending whole and the key's share to their maximum, so a
    /// share's own edge is what is tested.
    const ROOM: &str = "max_pending_sessions = 1048576\nmax_pending_per_key = 1048576\n";

    #[test]
    fn defaults() {
        let l = parse("").expect("an empty section");
        assert_eq!(l, Limits::default());
        assert_eq!(l.head_timeout, Duration::from_secs(10));
        assert_eq!(l.pairing_timeout, Duration::from_secs(10));
        assert_eq!(l.relay_buffer, 65_536);
        assert_eq!(l.max_pending_sessions, 4096);
        assert_eq!(l.max_pending_per_key, 1024);
        assert_eq!(l.max_pending_per_control, 64);
        assert_eq!(l.handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.max_connections, 0);
        assert_eq!(l.shutdown_grace, Duration::from_secs(30));
        assert_eq!(l.max_unauthenticated_per_source, 0);
        assert_eq!(l.new_connections_per_source_per_sec, 100);
        assert_eq!(l.new_connections_burst_per_source, 200);
        assert_eq!(l.max_agents_per_key, 0);
        assert_eq!(l.write_timeout, Duration::from_secs(30));
        assert_eq!(l.nonces_per_key, 524_288);
        assert_eq!(l.max_pins, 1_000_000);
    }

    #[test]
    fn every_bound_is_inclusive_at_both_ends() {
        for b in ALL {
            for v in [b.min, b.max] {
                let body = if b.key == MAX_PENDING_PER_CONTROL.key {
                    format!("{ROOM}{} = {v}\n", b.key)
                } else if b.key == MAX_PENDING_PER_KEY.key {
                    format!("max_pending_sessions = 1048576\n{} = {v}\n", b.key)
                } else {
                    format!("{} = {v}\n", b.key)
                };
                assert!(parse(&body).is_ok(), "{body:?}: {:?}", parse(&body));
            }
        }
    }

    #[test]
    fn every_bound_refuses_one_past_each_end_naming_its_line() {
        for b in ALL {
            let mut outside = vec![b.max + 1];
            if b.min > 0 {
                outside.push(b.min - 1);
            }
            for v in outside {
                assert_eq!(
                    parse(&format!("\n{} = {v}\n", b.key)),
                    Err(format!(
                        "test.toml:3: {} = {v} is out of range ({} to {})",
                        b.key, b.min, b.max
                    ))
                );
            }
        }
    }

    #[test]
    fn new_settings_refuse_exactly_past_their_edges() {
        for (body, want) in [
            (
                "shutdown_grace_secs = 3601",
                "test.toml:2: shutdown_grace_secs = 3601 is out of range (0 to 3600)",
            ),
            (
                "write_timeout_secs = 0",
                "test.toml:2: write_timeout_secs = 0 is out of range (1 to 3600)",
            ),
            (
                "max_unauthenticated_per_source = 65537",
                "test.toml:2: max_unauthenticated_per_source = 65537 is out of range (0 to 65536)",
            ),
            (
                "new_connections_burst_per_source = 0",
                "test.toml:2: new_connections_burst_per_source = 0 is out of range (1 to 1000000)",
            ),
            (
                "nonces_per_key = 15",
                "test.toml:2: nonces_per_key = 15 is out of range (16 to 16777216)",
            ),
            (
                "max_agents_per_key = 4294967296",
                "test.toml:2: max_agents_per_key = 4294967296 is out of range (0 to 4294967295)",
            ),
        ] {
            assert_eq!(parse(&format!("{body}\n")), Err(want.to_string()));
        }
        let l = parse("shutdown_grace_secs = 0\nwrite_timeout_secs = 3600\nnew_connections_per_source_per_sec = 0\n")
            .expect("in range");
        assert_eq!(
            (l.shutdown_grace, l.write_timeout, l.new_connections_per_source_per_sec),
            (Duration::ZERO, Duration::from_secs(3600), 0)
        );
    }

    #[test]
    fn a_share_written_above_its_whole_is_refused() {
        assert_eq!(
            parse("max_pending_sessions = 100\nmax_pending_per_key = 101\n"),
            Err("test.toml:3: max_pending_per_key = 101 is above max_pending_sessions = 100: a key's share cannot exceed the whole".into())
        );
        assert_eq!(
            parse("max_pending_per_key = 4097\n"),
            Err("test.toml:2: max_pending_per_key = 4097 is above max_pending_sessions = 4096: a key's share cannot exceed the whole".into())
        );
        assert_eq!(
            parse("max_pending_per_key = 10\n\nmax_pending_per_control = 11\n"),
            Err("test.toml:4: max_pending_per_control = 11 is above max_pending_per_key = 10: a control's share cannot exceed its key's".into())
        );
        let l = parse("max_pending_sessions = 100\nmax_pending_per_key = 100\nmax_pending_per_control = 100\n")
            .expect("equal to the whole");
        assert_eq!((l.max_pending_per_key, l.max_pending_per_control), (100, 100));
    }

    #[test]
    fn an_absent_share_shrinks_to_a_lowered_whole() {
        // Valid before the shares existed, so valid now.
        let l = parse("max_pending_sessions = 16\n").expect("a small whole");
        assert_eq!(
            (l.max_pending_sessions, l.max_pending_per_key, l.max_pending_per_control),
            (16, 16, 16)
        );
        let l = parse("max_pending_per_key = 40\n").expect("a small key share");
        assert_eq!((l.max_pending_per_key, l.max_pending_per_control), (40, 40));
    }

    #[test]
    fn the_automatic_unauthenticated_share_is_a_64th_of_the_cap_at_least_8() {
        let auto = Limits::default();
        assert_eq!(auto.unauthenticated_per_source(0), 8);
        assert_eq!(auto.unauthenticated_per_source(511), 8);
        assert_eq!(auto.unauthenticated_per_source(576), 9);
        assert_eq!(auto.unauthenticated_per_source(19_744), 308);
        assert_eq!(auto.unauthenticated_per_source(usize::MAX), 65_536);
        let fixed = parse("max_unauthenticated_per_source = 3\n").expect("in range");
        assert_eq!(fixed.unauthenticated_per_source(19_744), 3);
    }
}
