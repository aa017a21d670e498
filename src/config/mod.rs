//! The gateway's TOML configuration: a pure parse into checked types, then
//! a load step that reads the files the configuration names.
//!
//! # Layout
//! - [`parse_str`] (`file.rs`) turns text into a [`ConfigFile`]: checked
//!   values, and the *paths* of certificates and token files. It does no
//!   I/O, so it is unit-tested and fuzzed. One function per section, each in
//!   its file with its bounds and tests: `gateway.rs` (the top-level
//!   `[gateway]` table), `keys.rs` (`[[keys]]` and the older list),
//!   `limits.rs`, `tls.rs`, `event_log.rs` (`[log]`), `admin.rs`, `auth.rs`
//!   and `operators.rs` (`[[operators]]`).
//! - [`load`] (`load.rs`) reads a file, parses it, takes relative paths
//!   from the file's folder and reads the certificate, key, token and TOTP
//!   secret files into the [`Config`] the gateway runs on. A reload goes the same way, so
//!   a bad file is refused before anything changes.
//!
//! Every error names the file, the line and the reason. Unknown keys are
//! errors (a misspelt option must not be silently ignored). Secrets never
//! reach `Debug`. Every whole-number setting is a named [`Bound`] with its
//! default, its range and the reason for them. config.toml.example
//! documents every option.

mod admin;
mod audit;
mod auth;
mod bound;
mod cluster;
mod error;
mod event_log;
mod file;
mod gateway;
mod keys;
mod limits;
mod load;
mod operators;
#[cfg(test)]
mod testing;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use admin::{AdminConfig, AdminFile, DEFAULT_ADMIN_LISTEN, MAX_ADMIN_HOSTS, MIN_ADMIN_TOKEN_LEN};
pub use audit::{AUDIT_MAX_FILE_KB, AUDIT_MAX_FILES};
pub use auth::{Approve, AuthConfig, LOCKOUT_AFTER, LOCKOUT_MINUTES, MAX_APPROVE_CHARS, TICKET_HOURS, TotpMode};
pub use bound::Bound;
pub use error::{ConfigError, Located};
pub use event_log::{LOG_MAX_FILE_KB, LOG_MAX_FILES};
pub use file::parse_str;
pub use gateway::{
    CMPI_SECS, DEFAULT_CMPI_SECS, DEFAULT_STATE_DIR, HEARTBEAT_GRACE, MAX_CLIENTS, MAX_CMPI_SECS, MAX_WORKERS, Role,
    WORKERS,
};
pub use keys::{KeyEntry, KeySecret, MAX_KEY_NAME_LEN, SHORT_KEY_CHARS, WEAK_KEY_BITS, check_key_name, estimated_bits};
pub use limits::{
    AUTO_UNAUTHENTICATED_DIVISOR, HANDSHAKE_TIMEOUT_SECS, HEAD_TIMEOUT_SECS, Limits, MAX_AGENTS_PER_KEY,
    MAX_CONNECTIONS, MAX_PENDING_PER_CONTROL, MAX_PENDING_PER_KEY, MAX_PENDING_SESSIONS,
    MAX_UNAUTHENTICATED_PER_SOURCE, MIN_AUTO_UNAUTHENTICATED, NEW_CONNECTIONS_BURST_PER_SOURCE,
    NEW_CONNECTIONS_PER_SOURCE_PER_SEC, NONCES_PER_KEY, PAIRING_TIMEOUT_SECS, RELAY_BUFFER_KB, SHUTDOWN_GRACE_SECS,
    WRITE_TIMEOUT_SECS,
};
pub use load::{MAX_CONFIG_BYTES, MAX_TOKEN_FILE_BYTES, MAX_TOTP_FILE_BYTES, load};
pub use operators::{MAX_AGENT_GLOBS, MAX_OPERATOR_KEYS, MAX_OPERATORS, Operator, OperatorFile, Scope, TotpSource};
pub use tls::TlsFiles;

pub use cluster::{
    CLUSTER_DRAIN_SECS, CLUSTER_LEASE_SECS, CLUSTER_SLACK_PERCENT, ClusterConfig, MAX_CLUSTER_ID_CHARS, redacted_url,
    valid_advertise, valid_cluster_id,
};

use crate::audit::AuditConfig;
use crate::auth::GatewayKey;
use crate::eventlog::EventLogConfig;

/// A gateway configuration, checked. `A`, `T`, `K` and `O` are its admin
/// and TLS settings, its keys and its operators: as the file names them in
/// a [`ConfigFile`] (what the pure parse gives), with their files read in a
/// [`Config`] (what the load step gives and the gateway runs on).
#[derive(Debug, Clone)]
pub struct Settings<A, T, K, O> {
    /// The file it came from, as errors name it.
    pub file: String,
    /// Every address to listen on, in the order given.
    pub listen: Vec<SocketAddr>,
    /// Event loops to run; 0 = one per core.
    pub workers: usize,
    /// How often agents poll.
    pub cmpi: Duration,
    /// Licensed agents; 0 = unlimited.
    pub max_clients: usize,
    /// Where the gateway keeps what must outlive a restart (the ticket
    /// key). In a [`ConfigFile`] as written; in a [`Config`] a relative
    /// one is taken from the file's folder. Made only once needed.
    pub state_dir: PathBuf,
    /// Primary or secondary (`[gateway] role`), for the console, metrics
    /// and the health probe.
    pub role: Role,
    /// Gateway keys (at least one), in the order given.
    pub keys: Vec<K>,
    /// Deadlines, sizes and shares.
    pub limits: Limits,
    /// The event log, if configured. In a [`ConfigFile`] its folder is as
    /// written; in a [`Config`] a relative one is taken from the file's.
    pub log: Option<EventLogConfig>,
    /// The audit trail, if configured; its file as written in a
    /// [`ConfigFile`], a relative one taken from the file's folder in a
    /// [`Config`].
    pub audit: Option<AuditConfig>,
    /// The admin listener, if configured.
    pub admin: Option<A>,
    /// TLS, if configured.
    pub tls: Option<T>,
    /// `[auth]`: how operators sign in (defaults when absent).
    pub auth: AuthConfig,
    /// `[[operators]]`, in the file's order; none means the gateway key
    /// alone admits a control, as before operators existed.
    pub operators: Vec<O>,
    /// `[cluster]`: the shared directory in Redis, if this gateway is one
    /// of several (docs/CLUSTER.md).
    pub cluster: Option<ClusterConfig>,
    /// What check-config and the gateway's start warn about (weak keys,
    /// keys named by position), each as `file:line: warning: ...`. Found
    /// by the load step, which sees every secret.
    pub warnings: Vec<String>,
}

/// A configuration file checked by [`parse_str`], the files it names not
/// yet read. No I/O made it, so a fuzzer can make millions.
pub type ConfigFile = Settings<AdminFile, TlsFiles, KeyEntry, OperatorFile>;

/// The configuration the gateway runs on: checked, its files read.
pub type Config = Settings<AdminConfig, TlsSettings, GatewayKey, Operator>;

impl Config {
    /// How long an agent may stay silent before it is dropped.
    pub fn heartbeat_deadline(&self) -> Duration {
        self.cmpi * 2 + HEARTBEAT_GRACE
    }
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
    pub server: Arc<rustls::ServerConfig>,
    /// Refuse every peer that does not speak TLS.
    pub require: bool,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::testing::Scratch;
    use super::*;

    /// The whole way from text to a running configuration, minus reading
    /// the config file itself.
    fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        parse_str(text, file)?.load(base)
    }

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
        assert_eq!(c.listen, vec!["127.0.0.1:0".parse().expect("an address")]);
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
    fn the_example_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../config.toml.example");
        let c = parse(text, "config.toml.example", None).expect("example parses");
        assert_eq!(c.listen, vec!["127.0.0.1:8443".parse().expect("an address")]);
        // The example says "the values shown are the defaults": keep it true.
        assert_eq!(c.limits, Limits::default());
        let admin = c.admin.expect("the example has [admin]");
        assert_eq!((admin.token, admin.hosts), (None, Vec::<String>::new()));
        assert_eq!(c.auth, AuthConfig::default());
        assert!(c.operators.is_empty(), "the example's operator is commented out");
    }

    #[test]
    fn the_examples_cluster_parses_once_uncommented() {
        let text = include_str!("../../config.toml.example");
        let at = text.find("# [cluster]").expect("a [cluster] example");
        let end = at + text[at..].find("\n\n").expect("the block ends");
        let uncommented: String = text[at..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let c = parse(
            &format!("{}{uncommented}{}", &text[..at], &text[end..]),
            "config.toml.example",
            None,
        )
        .expect("it parses");
        let cluster = c.cluster.expect("[cluster]");
        assert_eq!(
            (
                cluster.id.as_str(),
                cluster.advertise.as_deref(),
                cluster.lease.as_secs(),
                cluster.drain.as_secs()
            ),
            ("gw-eu-1", Some("https://gw-eu-1.example.com:443"), 15, 60)
        );
    }

    #[test]
    fn the_examples_operator_parses_once_uncommented() {
        let text = include_str!("../../config.toml.example");
        let at = text.find("# [[operators]]").expect("an [[operators]] example");
        let uncommented: String = text[at..]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let c = parse(&format!("{}{uncommented}", &text[..at]), "config.toml.example", None).expect("it parses");
        let [alice] = &c.operators[..] else {
            panic!("one operator: {:?}", c.operators)
        };
        assert_eq!(alice.name, "alice");
        assert!(alice.totp.is_some());
        assert_eq!(alice.scope.keys, Some(vec!["main".to_string()]));
        assert!(alice.scope.may_reach("kiosk-12") && !alice.scope.may_reach("kiosk-123"));
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = [\"Testing1\", \"short\"]\n"),
            "test.toml:3: gateway key #2 is 5 characters; keys must be at least 8"
        );
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:0\"]\nkeys = []\n"),
            "test.toml:3: no gateway keys: add a [[keys]] table with a name and a key, or [gateway] keys = [...]"
        );
        assert_eq!(
            parse_err("[gateway]\nlisten = [\"127.0.0.1:0\"]\n"),
            "test.toml:1: no gateway keys: add a [[keys]] table with a name and a key, or [gateway] keys = [...]"
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
        assert_eq!(
            c.admin.map(|a| a.listen),
            Some(DEFAULT_ADMIN_LISTEN.parse().expect("the default address"))
        );
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
        assert_eq!(log.max_file_kb, LOG_MAX_FILE_KB.default);
        assert!(log.utc);
    }

    #[test]
    fn load_reads_the_token_and_takes_relative_paths_from_the_file_folder() {
        let dir = Scratch::new("token");
        std::fs::write(dir.0.join("admin.token"), "  0123456789abcdef\n").expect("write a token");
        let text = format!(
            "{MINIMAL}[log]\ndir = \"log\"\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"admin.token\"\nhosts = [\"gw.example.com\"]\n"
        );
        std::fs::write(dir.0.join("gw.toml"), &text).expect("write a config");
        let c = load(&dir.0.join("gw.toml")).expect("a loadable config");
        assert_eq!(c.log.expect("a log").dir, dir.0.join("log"));
        let admin = c.admin.expect("an admin section");
        assert_eq!(admin.token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(admin.hosts, ["gw.example.com"]);

        // Without a base, a relative path stays as written.
        let c = parse_str(&text, "gw.toml").expect("valid");
        assert_eq!(c.log.as_ref().expect("a log").dir, PathBuf::from("log"));
    }

    #[test]
    fn load_refuses_a_short_missing_or_huge_token_naming_its_line() {
        let dir = Scratch::new("bad-token");
        let path = dir.0.join("gw.toml");
        let text = format!("{MINIMAL}[admin]\n\ntoken_file = \"admin.token\"\n");
        std::fs::write(&path, &text).expect("write a config");
        let token = dir.0.join("admin.token");
        let e = load(&path).expect_err("no token file");
        assert!(
            e.to_string().starts_with(&format!(
                "{}:6: cannot read admin token file {}: ",
                path.display(),
                token.display()
            )),
            "{e}"
        );
        std::fs::write(&token, "0123456789abcde\n").expect("write a short token");
        assert_eq!(
            load(&path).expect_err("a short token").to_string(),
            format!("{}:6: the admin token must be at least 16 characters", path.display())
        );
        std::fs::write(&token, "x".repeat(MAX_TOKEN_FILE_BYTES as usize + 1)).expect("write a huge token");
        assert_eq!(
            load(&path).expect_err("a huge token file").to_string(),
            format!(
                "{}:6: cannot read admin token file {}: larger than 4096 bytes",
                path.display(),
                token.display()
            )
        );
        std::fs::write(&token, "x".repeat(MAX_TOKEN_FILE_BYTES as usize)).expect("write a long token");
        assert_eq!(
            load(&path).map(|c| c.admin.and_then(|a| a.token).map(|t| t.len())),
            Ok(Some(4096))
        );
    }

    #[test]
    fn operators_and_auth_load_with_their_secret_files() {
        let dir = Scratch::new("operators");
        std::fs::write(dir.0.join("bob.totp"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n").expect("write a secret");
        let verifier = "$scram-argon2id$v=19$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNsdA$AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE$AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI";
        let text = format!(
            "{MINIMAL}[auth]\ntotp = \"required\"\nticket_hours = 8\n[[operators]]\nname = \"bob\"\nverifier = \"{verifier}\"\ntotp_secret_file = \"bob.totp\"\nagents = [\"pc-*\"]\n"
        );
        std::fs::write(dir.0.join("gw.toml"), &text).expect("write a config");
        let c = load(&dir.0.join("gw.toml")).expect("loadable");
        assert_eq!(
            (c.auth.totp, c.auth.ticket_lifetime),
            (TotpMode::Required, Duration::from_secs(8 * 3600))
        );
        let bob = &c.operators[0];
        assert_eq!(bob.name, "bob");
        assert!(bob.totp.is_some());
        assert!(bob.scope.may_reach("pc-7") && !bob.scope.may_reach("kiosk-1"));

        // Without its secret, bob cannot be an operator while TOTP is required.
        let without = text.replace("totp_secret_file = \"bob.totp\"\n", "");
        assert_eq!(
            parse_err(&without),
            "test.toml:8: operator bob has no TOTP secret, but [auth] totp = \"required\": set totp_secret or totp_secret_file"
        );
    }

    #[test]
    fn a_config_past_its_size_bound_is_refused_unread() {
        let dir = Scratch::new("huge");
        let path = dir.0.join("gw.toml");
        let file = std::fs::File::create(&path).expect("create a config");
        file.set_len(MAX_CONFIG_BYTES + 1).expect("make it sparse and huge");
        assert_eq!(
            load(&path).expect_err("too large").to_string(),
            format!("{}: cannot read: larger than 16777216 bytes", path.display())
        );
    }
}
