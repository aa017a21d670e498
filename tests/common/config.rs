//! What goes into a test gateway's config file, and its TOML text.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::LOG_FOLDER;

/// Worker threads of a test gateway unless a test says otherwise: two, the
/// machine's cores, so cross-worker hand-offs happen.
pub const DEFAULT_WORKERS: usize = 2;

/// What goes into a test gateway's config file. The file, and the event
/// log folder if there is one, live in the gateway's folder.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `[gateway] listen`: 127.0.0.1:0 unless a test re-binds a known port
    /// or listens on several addresses.
    pub listen: Vec<SocketAddr>,
    /// `[gateway] keys`, the plain list (written only when not empty).
    pub keys: Vec<String>,
    /// `[[keys]]` tables: name and inline secret.
    pub named_keys: Vec<(String, String)>,
    /// `[gateway] workers`: [`DEFAULT_WORKERS`] unless a test says.
    pub workers: usize,
    /// `[gateway] cmpi_secs`, if set.
    pub cmpi_secs: Option<u64>,
    /// `[gateway] max_clients`, if set.
    pub max_clients: Option<usize>,
    /// `[gateway] role` (`"primary"` or `"secondary"`), if set.
    pub role: Option<&'static str>,
    /// `[limits] head_timeout_secs`, if set.
    pub head_timeout_secs: Option<u64>,
    /// `[limits] pairing_timeout_secs`, if set.
    pub pairing_timeout_secs: Option<u64>,
    /// `[limits] max_connections`, if set.
    pub max_connections: Option<u64>,
    /// `[log]`: an event log in the gateway's `log` folder, if set.
    pub log: Option<LogConfig>,
    /// `[admin]`: whether to open the admin listener on 127.0.0.1:0.
    pub admin: bool,
    /// `[admin] hosts`: names the console is served under besides its
    /// address and loopback (written only when not empty).
    pub admin_hosts: Vec<String>,
    /// `[tls]`, if set.
    pub tls: Option<TlsConfig>,
    /// More `[limits]` lines as written (`"write_timeout_secs = 1"`), for
    /// settings no other test needs a field for.
    pub limits_extra: Vec<String>,
    /// More TOML at the end of the file as written (`[auth]`,
    /// `[[operators]]` blocks).
    pub tail: Vec<String>,
}

/// The `[log]` section of a test config (its `dir` is always the
/// gateway's `log` folder).
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// `max_file_kb`.
    pub max_file_kb: u64,
    /// `max_files`.
    pub max_files: u32,
    /// `Some(v)` writes `utc = v`; `None` leaves the default (local time).
    pub utc: Option<bool>,
}

impl Default for LogConfig {
    /// Files large and many enough that no test rotates by accident, in
    /// UTC so stamps do not depend on the machine's zone.
    fn default() -> LogConfig {
        LogConfig {
            max_file_kb: 1000,
            max_files: 10,
            utc: Some(true),
        }
    }
}

/// The `[tls]` section of a test config.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `cert`: the PEM chain served.
    pub cert: PathBuf,
    /// `key`: its private key.
    pub key: PathBuf,
    /// `require`: refuse plain HTTP peers.
    pub require: bool,
}

impl GatewayConfig {
    /// A config on 127.0.0.1:0 with these keys and defaults otherwise: no
    /// event log, no admin listener, no TLS.
    pub fn new(keys: &[&str]) -> GatewayConfig {
        GatewayConfig {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            keys: keys.iter().map(|k| k.to_string()).collect(),
            named_keys: Vec::new(),
            workers: DEFAULT_WORKERS,
            cmpi_secs: None,
            max_clients: None,
            role: None,
            head_timeout_secs: None,
            pairing_timeout_secs: None,
            max_connections: None,
            log: None,
            admin: false,
            admin_hosts: Vec::new(),
            tls: None,
            limits_extra: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// As [`GatewayConfig::new`], with an event log ([`LogConfig`]'s
    /// defaults) and the admin listener: a gateway as operators run it.
    pub fn operated(keys: &[&str]) -> GatewayConfig {
        GatewayConfig {
            log: Some(LogConfig::default()),
            admin: true,
            ..GatewayConfig::new(keys)
        }
    }

    /// The TOML text of this config for a gateway whose folder is `dir`.
    pub fn to_toml(&self, dir: &Path) -> String {
        let quoted = |items: Vec<String>| items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        let mut text = format!(
            "[gateway]\nlisten = [{}]\nworkers = {}\n",
            quoted(self.listen.iter().map(|a| a.to_string()).collect()),
            self.workers,
        );
        if !self.keys.is_empty() {
            text.push_str(&format!("keys = [{}]\n", quoted(self.keys.clone())));
        }
        if let Some(v) = self.cmpi_secs {
            text.push_str(&format!("cmpi_secs = {v}\n"));
        }
        if let Some(v) = self.max_clients {
            text.push_str(&format!("max_clients = {v}\n"));
        }
        if let Some(role) = self.role {
            text.push_str(&format!("role = {role:?}\n"));
        }
        text.push_str("[limits]\n");
        if let Some(v) = self.head_timeout_secs {
            text.push_str(&format!("head_timeout_secs = {v}\n"));
        }
        if let Some(v) = self.pairing_timeout_secs {
            text.push_str(&format!("pairing_timeout_secs = {v}\n"));
        }
        if let Some(v) = self.max_connections {
            text.push_str(&format!("max_connections = {v}\n"));
        }
        for line in &self.limits_extra {
            text.push_str(line);
            text.push('\n');
        }
        if let Some(log) = &self.log {
            let log_dir = dir.join(LOG_FOLDER);
            let log_dir = log_dir.to_str().expect("temp paths are UTF-8");
            text.push_str(&format!(
                "[log]\ndir = {log_dir:?}\nmax_file_kb = {}\nmax_files = {}\n",
                log.max_file_kb, log.max_files
            ));
            if let Some(utc) = log.utc {
                text.push_str(&format!("utc = {utc}\n"));
            }
        }
        if self.admin {
            text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
            if !self.admin_hosts.is_empty() {
                text.push_str(&format!("hosts = [{}]\n", quoted(self.admin_hosts.clone())));
            }
        }
        for (name, key) in &self.named_keys {
            text.push_str(&format!("[[keys]]\nname = {name:?}\nkey = {key:?}\n"));
        }
        if let Some(tls) = &self.tls {
            let path = |p: &Path| p.to_str().expect("temp paths are UTF-8").to_string();
            text.push_str(&format!(
                "[tls]\ncert = {:?}\nkey = {:?}\nrequire = {}\n",
                path(&tls.cert),
                path(&tls.key),
                tls.require
            ));
        }
        for block in &self.tail {
            text.push_str(block);
            if !block.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }
}
