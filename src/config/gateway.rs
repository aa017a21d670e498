//! The `[gateway]` section: where to listen, how many event loops, the
//! agents' poll interval, the licence and the gateway's role (primary or
//! secondary). Its `keys` are checked in [`super::keys`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::bound::Bound;
use super::error::{ConfigError, Source};

/// Poll interval when none is configured: the seed product's CMPI default.
pub const DEFAULT_CMPI_SECS: u64 = 60;
/// Longest accepted CMPI: a day. Longer would leave dead agents listed for days.
pub const MAX_CMPI_SECS: u64 = 86_400;
/// Most workers accepted; far more than cores on any server we target.
pub const MAX_WORKERS: u64 = 1024;
/// Grace past two missed polls before an agent is dropped (the rule:
/// silent for 2 x CMPI + 10 s), covering network jitter on the last poll.
pub const HEARTBEAT_GRACE: Duration = Duration::from_secs(10);

/// `state_dir` when none is given: a `state` folder beside the config
/// file (relative paths are taken from the config's folder), so a test or
/// a first run works without one; packages set `/var/lib/ringway`.
pub const DEFAULT_STATE_DIR: &str = "state";

/// `workers`: 0 means one per core, the usual choice.
pub const WORKERS: Bound = Bound {
    key: "workers",
    default: 0,
    min: 0,
    max: MAX_WORKERS,
};
/// `cmpi_secs`: at least a second, so agents do not poll in a busy loop.
pub const CMPI_SECS: Bound = Bound {
    key: "cmpi_secs",
    default: DEFAULT_CMPI_SECS,
    min: 1,
    max: MAX_CMPI_SECS,
};
/// `max_clients`: 0 means no licence limit; past four billion agents a
/// number is a typo, not a licence.
pub const MAX_CLIENTS: Bound = Bound {
    key: "max_clients",
    default: 0,
    min: 0,
    max: u32::MAX as u64,
};

/// What this gateway is to its agents: the seed product's "standalone
/// Primary" or "standalone Secondary which will act as a backup". Agents
/// decide where to register themselves (their own list of gateways); the
/// role is what the console, `/metrics` and `GET /v1/health` say, so an
/// operator sees which gateway is the backup and whether it is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The gateway agents prefer (the default: a lone gateway is primary).
    #[default]
    Primary,
    /// A backup: agents register here while their primary is down, and
    /// go home once it is back. With no agents it is in standby.
    Secondary,
}

impl Role {
    /// The role as the config, `/metrics` and the health probe write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

/// `[gateway]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    listen: Spanned<Vec<Spanned<String>>>,
    workers: Option<Spanned<u64>>,
    cmpi_secs: Option<Spanned<u64>>,
    max_clients: Option<Spanned<u64>>,
    state_dir: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    /// Checked by [`super::keys::parse_keys`].
    pub keys: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[gateway]` checked, keys aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GatewaySection {
    pub listen: Vec<SocketAddr>,
    pub workers: usize,
    pub cmpi: Duration,
    pub max_clients: usize,
    pub state_dir: PathBuf,
    pub role: Role,
}

/// Checks `[gateway]`'s addresses and numbers.
pub(super) fn parse_gateway(raw: &RawGateway, src: &Source) -> Result<GatewaySection, ConfigError> {
    let mut listen = Vec::new();
    for item in raw.listen.get_ref() {
        let addr: SocketAddr = item.get_ref().parse().map_err(|_| {
            src.error(
                item.span(),
                format!(
                    "listen address {:?} is not ip:port (use 0.0.0.0:PORT or [::]:PORT for all interfaces)",
                    item.get_ref()
                ),
            )
        })?;
        src.push_unique(&mut listen, addr, item.span(), "listen address")?;
    }
    if listen.is_empty() {
        return Err(src.error(raw.listen.span(), "listen must name at least one ip:port"));
    }
    let state_dir = match &raw.state_dir {
        None => PathBuf::from(DEFAULT_STATE_DIR),
        Some(d) if d.get_ref().trim().is_empty() => {
            return Err(src.error(d.span(), "state_dir must not be empty"));
        }
        Some(d) => PathBuf::from(d.get_ref()),
    };
    let role = match raw.role.as_ref() {
        None => Role::default(),
        Some(r) => match r.get_ref().as_str() {
            "primary" => Role::Primary,
            "secondary" => Role::Secondary,
            other => {
                return Err(src.error(r.span(), format!("role {other:?} is not \"primary\" or \"secondary\"")));
            }
        },
    };
    Ok(GatewaySection {
        state_dir,
        role,
        listen,
        workers: WORKERS.take_usize(&raw.workers, src)?,
        cmpi: Duration::from_secs(CMPI_SECS.take(&raw.cmpi_secs, src)?),
        max_clients: MAX_CLIENTS.take_usize(&raw.max_clients, src)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<GatewaySection, String> {
        let text = format!("[gateway]\n{body}");
        section(&text, "gateway", |raw: Option<&RawGateway>, src| {
            parse_gateway(raw.expect("a [gateway] table"), src)
        })
    }

    const LISTEN: &str = "listen = [\"127.0.0.1:0\"]\n";

    #[test]
    fn defaults() {
        assert_eq!(
            parse(LISTEN),
            Ok(GatewaySection {
                listen: vec!["127.0.0.1:0".parse().expect("an address")],
                workers: 0,
                cmpi: Duration::from_secs(60),
                max_clients: 0,
                state_dir: PathBuf::from("state"),
                role: Role::Primary,
            })
        );
    }

    #[test]
    fn state_dir_is_kept_as_written_and_never_empty() {
        let g = parse(&format!("{LISTEN}state_dir = \"/var/lib/ringway\"\n")).expect("valid");
        assert_eq!(g.state_dir, PathBuf::from("/var/lib/ringway"));
        assert_eq!(
            parse(&format!("{LISTEN}state_dir = \" \"\n")),
            Err("test.toml:3: state_dir must not be empty".into())
        );
    }

    #[test]
    fn role_is_primary_or_secondary() {
        let role = |line: &str| parse(&format!("{LISTEN}{line}\n")).map(|g| g.role);
        assert_eq!(role(""), Ok(Role::Primary));
        assert_eq!(role("role = \"primary\""), Ok(Role::Primary));
        assert_eq!(role("role = \"secondary\""), Ok(Role::Secondary));
        assert_eq!(
            role("role = \"Secondary\""),
            Err("test.toml:3: role \"Secondary\" is not \"primary\" or \"secondary\"".into())
        );
    }

    #[test]
    fn listen_addresses_are_checked() {
        assert_eq!(
            parse("listen = [\"localhost\"]\n"),
            Err("test.toml:2: listen address \"localhost\" is not ip:port (use 0.0.0.0:PORT or [::]:PORT for all interfaces)".into())
        );
        assert_eq!(
            parse("listen = [\"127.0.0.1:1\", \"[::1]:1\", \"127.0.0.1:1\"]\n"),
            Err("test.toml:2: listen address 127.0.0.1:1 is given twice".into())
        );
        assert_eq!(
            parse("listen = []\n"),
            Err("test.toml:2: listen must name at least one ip:port".into())
        );
        let two = parse("listen = [\"127.0.0.1:1\", \"[::1]:1\"]\n").expect("two addresses");
        assert_eq!(two.listen.len(), 2);
    }

    #[test]
    fn numbers_at_their_edges() {
        for (line, want) in [
            ("workers = 1024", Ok(1024)),
            (
                "workers = 1025",
                Err("test.toml:3: workers = 1025 is out of range (0 to 1024)"),
            ),
            ("cmpi_secs = 1", Ok(1)),
            ("cmpi_secs = 86400", Ok(86_400)),
            (
                "cmpi_secs = 0",
                Err("test.toml:3: cmpi_secs = 0 is out of range (1 to 86400)"),
            ),
            (
                "cmpi_secs = 86401",
                Err("test.toml:3: cmpi_secs = 86401 is out of range (1 to 86400)"),
            ),
            ("max_clients = 4294967295", Ok(4_294_967_295)),
            (
                "max_clients = 4294967296",
                Err("test.toml:3: max_clients = 4294967296 is out of range (0 to 4294967295)"),
            ),
        ] {
            let got = parse(&format!("{LISTEN}{line}\n")).map(|g| match line.split(' ').next() {
                Some("workers") => g.workers as u64,
                Some("cmpi_secs") => g.cmpi.as_secs(),
                _ => g.max_clients as u64,
            });
            assert_eq!(got, want.map_err(String::from), "{line}");
        }
    }
}
