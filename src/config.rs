//! The gateway's TOML configuration, parsed into checked types.
//!
//! Every error names the file, the line and the reason. Unknown keys are
//! errors (a misspelt option must not be silently ignored). Secrets never
//! reach `Debug`. config.toml.example documents every option.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::auth::{GatewayKey, MIN_KEY_LEN};
use crate::eventlog::EventLogConfig;

/// Poll interval when none is configured: the seed product's CMPI default.
pub const DEFAULT_CMPI_SECS: u64 = 60;
/// Longest accepted CMPI: a day. Longer would leave dead agents listed for days.
pub const MAX_CMPI_SECS: u64 = 86_400;
/// Most workers accepted; far more than cores on any server we target.
pub const MAX_WORKERS: u64 = 1024;
/// Grace past two missed polls before an agent is dropped (the rule:
/// silent for 2 x CMPI + 10 s), covering network jitter on the last poll.
pub const HEARTBEAT_GRACE: Duration = Duration::from_secs(10);

/// Default deadline for a request head to arrive in full. Long enough for a
/// slow mobile link, short enough that idle half-open sockets do not pile up.
pub const DEFAULT_HEAD_TIMEOUT_SECS: u64 = 10;
/// Default deadline for an agent to join a session the control asked for.
/// The agent dials its local service and the gateway; 10 s covers a slow
/// service and a congested uplink.
pub const DEFAULT_PAIRING_TIMEOUT_SECS: u64 = 10;
/// Default relay buffer per direction. 64 KiB keeps a 10 Gbit/s stream fed
/// in few syscalls; two of them per session bound a session's memory.
pub const DEFAULT_RELAY_BUFFER_KB: u64 = 64;
/// Default cap on sessions waiting for their agent, per worker: each holds
/// a control socket, so this bounds what a flood of connects can pin.
pub const DEFAULT_MAX_PENDING_SESSIONS: u64 = 4096;

/// Default deadline for a TLS handshake: as long as for a request head,
/// for the same reasons.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// Default size at which the event log starts its next file (the seed's).
pub const DEFAULT_LOG_MAX_FILE_KB: u64 = 1000;
/// Default count of event log files kept.
pub const DEFAULT_LOG_MAX_FILES: u32 = 10;

/// A configuration error: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line of the offending value (0 if the file itself is the problem).
    pub line: usize,
    /// What is wrong, in one line.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The checked configuration of a gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every address to listen on, in the order given.
    pub listen: Vec<SocketAddr>,
    /// Event loops to run; 0 = one per core.
    pub workers: usize,
    /// How often agents poll.
    pub cmpi: Duration,
    /// Licensed agents; 0 = unlimited.
    pub max_clients: usize,
    /// Gateway keys (at least one).
    pub keys: Vec<GatewayKey>,
    /// Deadlines and sizes.
    pub limits: Limits,
    /// The event log, if configured.
    pub log: Option<EventLogConfig>,
    /// The admin listener, if configured.
    pub admin: Option<AdminConfig>,
    /// TLS, if configured.
    pub tls: Option<TlsSettings>,
}

/// The gateway's TLS settings, with the certificate already loaded (so a
/// reload with a bad certificate fails before anything changes).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain, for messages.
    pub cert: PathBuf,
    /// PEM private key, for messages.
    pub key: PathBuf,
    /// The ready rustls config; new handshakes use the one in force.
    pub server: std::sync::Arc<rustls::ServerConfig>,
    /// Refuse every peer that does not speak TLS.
    pub require: bool,
}

/// Default admin address: loopback, so the console is not on the internet
/// unless asked for (and then a token is required).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Shortest admin token accepted: 16 characters, so it is not guessed.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The admin listener's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the console, API and metrics are served.
    pub listen: SocketAddr,
    /// The bearer token every admin request must carry, if any.
    pub token: Option<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "hidden"))
            .finish()
    }
}

impl Config {
    /// How long an agent may stay silent before it is dropped.
    pub fn heartbeat_deadline(&self) -> Duration {
        self.cmpi * 2 + HEARTBEAT_GRACE
    }
}

/// Deadlines and sizes, each with a default above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a request head.
    pub head_timeout: Duration,
    /// Time allowed for an agent to join a session.
    pub pairing_timeout: Duration,
    /// Bytes per relay direction buffer.
    pub relay_buffer: usize,
    /// Sessions waiting for an agent, per worker.
    pub max_pending_sessions: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections the gateway holds at most (0: derived from the
    /// open-file limit at start).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(DEFAULT_HEAD_TIMEOUT_SECS),
            pairing_timeout: Duration::from_secs(DEFAULT_PAIRING_TIMEOUT_SECS),
            relay_buffer: (DEFAULT_RELAY_BUFFER_KB * 1024) as usize,
            max_pending_sessions: DEFAULT_MAX_PENDING_SESSIONS as usize,
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            max_connections: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: Spanned<RawGateway>,
    limits: Option<RawLimits>,
    log: Option<RawLog>,
    admin: Option<RawAdmin>,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    require: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Spanned<Vec<Spanned<String>>>,
    workers: Option<Spanned<u64>>,
    cmpi_secs: Option<Spanned<u64>>,
    max_clients: Option<Spanned<u64>>,
    keys: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    head_timeout_secs: Option<Spanned<u64>>,
    pairing_timeout_secs: Option<Spanned<u64>>,
    relay_buffer_kb: Option<Spanned<u64>>,
    max_pending_sessions: Option<Spanned<u64>>,
    handshake_timeout_secs: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    dir: Spanned<String>,
    max_file_kb: Option<Spanned<u64>>,
    max_files: Option<Spanned<u64>>,
    utc: Option<bool>,
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    parse(&text, &file, path.parent())
}

/// Parses configuration text. `file` names it in errors; relative log
/// directories are taken from `base` (the config file's folder).
pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let err = |span: std::ops::Range<usize>, reason: String| ConfigError {
        file: file.to_string(),
        line: line_of(text, span.start),
        reason,
    };
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| err(e.span().unwrap_or(0..0), e.message().trim_end().replace('\n', "; ")))?;
    let gw_span = raw.gateway.span();
    let gw = raw.gateway.into_inner();

    let listen_span = gw.listen.span();
    let mut listen = Vec::new();
    for item in gw.listen.into_inner() {
        let addr: SocketAddr = item.get_ref().parse().map_err(|_| {
            err(
                item.span(),
                format!(
                    "listen address {:?} is not ip:port (use 0.0.0.0:PORT or [::]:PORT for all interfaces)",
                    item.get_ref()
                ),
            )
        })?;
        if listen.contains(&addr) {
            return Err(err(item.span(), format!("listen address {addr} is given twice")));
        }
        listen.push(addr);
    }
    if listen.is_empty() {
        return Err(err(listen_span, "listen must name at least one ip:port".into()));
    }

    let workers = bounded(&gw.workers, 0, 0, MAX_WORKERS, "workers", &err)? as usize;
    let cmpi = bounded(&gw.cmpi_secs, DEFAULT_CMPI_SECS, 1, MAX_CMPI_SECS, "cmpi_secs", &err)?;
    let max_clients = bounded(&gw.max_clients, 0, 0, u32::MAX as u64, "max_clients", &err)? as usize;

    let Some(raw_keys) = gw.keys else {
        return Err(err(
            gw_span,
            "no gateway keys: [gateway] keys must list at least one".into(),
        ));
    };
    let keys_span = raw_keys.span();
    let mut keys: Vec<GatewayKey> = Vec::new();
    for (i, k) in raw_keys.into_inner().into_iter().enumerate() {
        let n = k.get_ref().chars().count();
        if n < MIN_KEY_LEN {
            return Err(err(
                k.span(),
                format!(
                    "gateway key #{} is {n} characters; keys must be at least {MIN_KEY_LEN}",
                    i + 1
                ),
            ));
        }
        let key = GatewayKey::new(k.get_ref());
        if keys.iter().any(|other| other.id() == key.id()) {
            return Err(err(k.span(), format!("gateway key #{} is given twice", i + 1)));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(err(
            keys_span,
            "no gateway keys: [gateway] keys must list at least one".into(),
        ));
    }

    let mut limits = Limits::default();
    if let Some(l) = raw.limits {
        limits.head_timeout = Duration::from_secs(bounded(
            &l.head_timeout_secs,
            DEFAULT_HEAD_TIMEOUT_SECS,
            1,
            3600,
            "head_timeout_secs",
            &err,
        )?);
        limits.pairing_timeout = Duration::from_secs(bounded(
            &l.pairing_timeout_secs,
            DEFAULT_PAIRING_TIMEOUT_SECS,
            1,
            3600,
            "pairing_timeout_secs",
            &err,
        )?);
        limits.relay_buffer = bounded(
            &l.relay_buffer_kb,
            DEFAULT_RELAY_BUFFER_KB,
            4,
            4096,
            "relay_buffer_kb",
            &err,
        )? as usize
            * 1024;
        limits.max_pending_sessions = bounded(
            &l.max_pending_sessions,
            DEFAULT_MAX_PENDING_SESSIONS,
            1,
            1 << 20,
            "max_pending_sessions",
            &err,
        )? as usize;
        limits.handshake_timeout = Duration::from_secs(bounded(
            &l.handshake_timeout_secs,
            DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            1,
            3600,
            "handshake_timeout_secs",
            &err,
        )?);
        limits.max_connections = bounded(&l.max_connections, 0, 0, 100_000_000, "max_connections", &err)? as usize;
    }

    let log = match raw.log {
        None => None,
        Some(l) => {
            if l.dir.get_ref().is_empty() {
                return Err(err(l.dir.span(), "log dir must not be empty".into()));
            }
            let mut dir = PathBuf::from(l.dir.get_ref());
            if dir.is_relative()
                && let Some(base) = base
            {
                dir = base.join(dir);
            }
            Some(EventLogConfig {
                dir,
                max_file_kb: bounded(&l.max_file_kb, DEFAULT_LOG_MAX_FILE_KB, 1, 1 << 30, "max_file_kb", &err)?,
                max_files: bounded(
                    &l.max_files,
                    DEFAULT_LOG_MAX_FILES as u64,
                    1,
                    100_000,
                    "max_files",
                    &err,
                )? as u32,
                utc: l.utc.unwrap_or(false),
            })
        }
    };

    let admin = match raw.admin {
        None => None,
        Some(a) => {
            let listen = match &a.listen {
                None => DEFAULT_ADMIN_LISTEN
                    .parse()
                    .map_err(|_| err(0..0, "bad default admin address".into()))?,
                Some(l) => l
                    .get_ref()
                    .parse::<SocketAddr>()
                    .map_err(|_| err(l.span(), format!("admin listen {:?} is not ip:port", l.get_ref())))?,
            };
            let token = match &a.token_file {
                None => None,
                Some(f) => {
                    let mut path = PathBuf::from(f.get_ref());
                    if path.is_relative()
                        && let Some(base) = base
                    {
                        path = base.join(path);
                    }
                    let token = std::fs::read_to_string(&path)
                        .map_err(|e| {
                            err(
                                f.span(),
                                format!("cannot read admin token file {}: {e}", path.display()),
                            )
                        })?
                        .trim()
                        .to_string();
                    if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
                        return Err(err(
                            f.span(),
                            format!("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
                        ));
                    }
                    Some(token)
                }
            };
            if !listen.ip().is_loopback() && token.is_none() {
                let span = a.listen.as_ref().map_or(0..0, |l| l.span());
                return Err(err(
                    span,
                    format!("admin listen {listen} is not loopback: set token_file so the console is not open to all"),
                ));
            }
            Some(AdminConfig { listen, token })
        }
    };

    let tls = match raw.tls {
        None => None,
        Some(t) => {
            let require = t.require.as_ref().is_some_and(|r| *r.get_ref());
            let resolve = |p: &Spanned<String>| {
                let mut path = PathBuf::from(p.get_ref());
                if path.is_relative()
                    && let Some(base) = base
                {
                    path = base.join(path);
                }
                path
            };
            match (&t.cert, &t.key) {
                (Some(c), Some(k)) => {
                    let (cert, key) = (resolve(c), resolve(k));
                    let server = crate::tls::load_server_config(&cert, &key).map_err(|why| err(c.span(), why))?;
                    Some(TlsSettings {
                        cert,
                        key,
                        server,
                        require,
                    })
                }
                (None, None) if require => {
                    let span = t.require.as_ref().map_or(0..0, |r| r.span());
                    return Err(err(span, "require = true needs a certificate: set cert and key".into()));
                }
                (None, None) => None,
                (Some(c), None) => return Err(err(c.span(), "cert is set but key is not".into())),
                (None, Some(k)) => return Err(err(k.span(), "key is set but cert is not".into())),
            }
        }
    };

    Ok(Config {
        listen,
        workers,
        cmpi: Duration::from_secs(cmpi),
        max_clients,
        keys,
        limits,
        log,
        admin,
        tls,
    })
}

/// Takes an optional number, or its default, and checks its range.
fn bounded(
    value: &Option<Spanned<u64>>,
    default: u64,
    min: u64,
    max: u64,
    name: &str,
    err: &impl Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(err(
            v.span(),
            format!("{name} = {} is out of range ({min} to {max})", v.get_ref()),
        )),
    }
}

/// 1-based line number of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, "test.toml", None).expect("valid config")
    }

    fn parse_err(text: &str) -> String {
        parse(text, "test.toml", None).expect_err("invalid config").to_string()
    }

    const MINIMAL: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = [\"Testing1\"]\n";

    #[test]
    fn defaults_fill_in() {
        let c = parse_ok(MINIMAL);
        assert_eq!(c.listen, vec!["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(c.workers, 0);
        assert_eq!(c.cmpi, Duration::from_secs(60));
        assert_eq!(c.heartbeat_deadline(), Duration::from_secs(130));
        assert_eq!(c.max_clients, 0);
        assert_eq!(c.keys.len(), 1);
        assert_eq!(c.limits, Limits::default());
        assert!(c.log.is_none());
        assert!(c.admin.is_none());
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config.toml.example");
        let c = parse(text, "config.toml.example", None).expect("example parses");
        assert!(!c.listen.is_empty());
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = [\"Testing1\", \"short\"]\n"),
            "test.toml:3: gateway key #2 is 5 characters; keys must be at least 8"
        );
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = []\n"),
            "test.toml:3: no gateway keys: [gateway] keys must list at least one"
        );
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:0\"]\n"),
            "test.toml:1: no gateway keys: [gateway] keys must list at least one"
        );
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"localhost\"]\nkeys = [\"Testing1\"]\n"),
            "test.toml:2: listen address \"localhost\" is not ip:port (use 0.0.0.0:PORT or [::]:PORT for all interfaces)"
        );
        assert_eq!(
            parse_err(&format!("{MINIMAL}cmpi_secs = 0\n")),
            "test.toml:4: cmpi_secs = 0 is out of range (1 to 86400)"
        );
        assert!(parse_err(&format!("{MINIMAL}colour = \"blue\"\n")).starts_with("test.toml:4: unknown field `colour`"));
        assert!(parse_err("[gateway\n").starts_with("test.toml:1: "));
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\nkeys = [\"Testing1\"]\n"),
            "test.toml:2: listen address 127.0.0.1:1 is given twice"
        );
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let c = parse_ok(&format!("{MINIMAL}[admin]\n"));
        assert_eq!(c.admin.map(|a| a.listen), Some(DEFAULT_ADMIN_LISTEN.parse().unwrap()));
        assert_eq!(
            parse_err(&format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:9090\"\n")),
            "test.toml:5: admin listen 0.0.0.0:9090 is not loopback: set token_file so the console is not open to all"
        );
    }

    #[test]
    fn tls_errors_are_clear() {
        assert_eq!(
            parse_err(&format!("{MINIMAL}[tls]\nrequire = true\n")),
            "test.toml:5: require = true needs a certificate: set cert and key"
        );
        let e = parse_err(&format!(
            "{MINIMAL}[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n"
        ));
        assert!(
            e.starts_with("test.toml:5: cannot read certificate /nonexistent/c.pem"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let e = load(Path::new("/nonexistent/ringway.toml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/ringway.toml: cannot read: "));
    }

    #[test]
    fn limits_and_log_parse() {
        let c = parse_ok(&format!(
            "{MINIMAL}[limits]\nhead_timeout_secs = 2\nrelay_buffer_kb = 16\n[log]\ndir = \"/tmp/x\"\nmax_files = 3\nutc = true\n"
        ));
        assert_eq!(c.limits.head_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.relay_buffer, 16 * 1024);
        let log = c.log.expect("log section");
        assert_eq!(log.dir, PathBuf::from("/tmp/x"));
        assert_eq!(log.max_files, 3);
        assert_eq!(log.max_file_kb, DEFAULT_LOG_MAX_FILE_KB);
        assert!(log.utc);
    }
}
