//! The gateway under test: the real `ringway serve` on a config written
//! into a fresh temporary folder, listening on a port it picks itself.

use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ringway::auth::GatewayKey;
use ringway::client::Endpoint;
use ringway::tls::Trust;

use super::{EVENT_TIMEOUT, LoggedChild, TcpEntry, tcp_table};

/// Where the gateway names its bound address on stderr.
const LISTENING: &str = "Listening on port ";

/// What goes into a test gateway's config file.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `[gateway] listen`: port 0 unless a test re-binds a known port.
    pub listen: SocketAddr,
    /// `[gateway] keys`.
    pub keys: Vec<String>,
    /// `[gateway] workers`: 2, the machine's cores, unless a test says.
    pub workers: usize,
    /// `[gateway] cmpi_secs`, if set.
    pub cmpi_secs: Option<u64>,
    /// `[gateway] max_clients`, if set.
    pub max_clients: Option<usize>,
    /// `[limits] head_timeout_secs`, if set.
    pub head_timeout_secs: Option<u64>,
    /// `[limits] pairing_timeout_secs`, if set.
    pub pairing_timeout_secs: Option<u64>,
}

impl GatewayConfig {
    /// A config on 127.0.0.1:0 with these keys and defaults otherwise.
    pub fn new(keys: &[&str]) -> GatewayConfig {
        GatewayConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            workers: 2,
            cmpi_secs: None,
            max_clients: None,
            head_timeout_secs: None,
            pairing_timeout_secs: None,
        }
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| format!("{k:?}")).collect();
        let mut text = format!(
            "[gateway]\nlisten = [\"{}\"]\nworkers = {}\nkeys = [{}]\n",
            self.listen,
            self.workers,
            keys.join(", ")
        );
        if let Some(v) = self.cmpi_secs {
            text.push_str(&format!("cmpi_secs = {v}\n"));
        }
        if let Some(v) = self.max_clients {
            text.push_str(&format!("max_clients = {v}\n"));
        }
        text.push_str("[limits]\n");
        if let Some(v) = self.head_timeout_secs {
            text.push_str(&format!("head_timeout_secs = {v}\n"));
        }
        if let Some(v) = self.pairing_timeout_secs {
            text.push_str(&format!("pairing_timeout_secs = {v}\n"));
        }
        text
    }
}

/// A running `ringway serve`, killed when dropped.
pub struct Gateway {
    process: LoggedChild,
    addr: SocketAddr,
    /// Declared after `process`, so the folder goes once the gateway is dead.
    _dir: TempDir,
}

/// A folder under the system's temp dir, removed when dropped (also when a
/// test fails while starting its gateway).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Gateway {
    /// Writes `config` into a fresh temporary folder, starts the real
    /// binary on it and waits until it names the address it listens on.
    pub fn start(config: &GatewayConfig) -> Gateway {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = TempDir::new(&format!("ringway-test-{}-{n}", std::process::id()));
        let file = dir.0.join("gateway.toml");
        fs::write(&file, config.to_toml()).expect("write the gateway config");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg("serve").arg("--config").arg(&file).env("RUST_LOG", "info");
        let process = LoggedChild::spawn(&format!("gateway #{n}"), cmd);
        let line = process.wait_for_line(LISTENING, EVENT_TIMEOUT);
        let addr = line
            .rsplit_once(LISTENING)
            .and_then(|(_, a)| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Gateway {
            process,
            addr,
            _dir: dir,
        }
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// An endpoint for this gateway proving `key` as `identity`.
    pub fn endpoint(&self, key: &str, identity: &str) -> Endpoint {
        endpoint(self.addr, key, identity)
    }

    /// See [`LoggedChild::wait_for_event`].
    pub fn wait_for_event(&self, text: &str, timeout: Duration) -> usize {
        self.process.wait_for_event(text, timeout)
    }

    /// See [`LoggedChild::wait_for_events`].
    pub fn wait_for_events(&self, text: &str, n: usize, timeout: Duration) {
        self.process.wait_for_events(text, n, timeout)
    }

    /// See [`LoggedChild::wait_for_event_prefix`].
    pub fn wait_for_event_prefix(&self, prefix: &str, timeout: Duration) -> String {
        self.process.wait_for_event_prefix(prefix, timeout)
    }

    /// See [`LoggedChild::count_events`].
    pub fn count_events(&self, text: &str) -> usize {
        self.process.count_events(text)
    }

    /// See [`LoggedChild::events`].
    pub fn events(&self) -> Vec<String> {
        self.process.events()
    }

    /// Kills the gateway (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The gateway's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The gateway's own IPv4 TCP sockets (listeners and connections that
    /// still have a descriptor), as /proc/net/tcp lists them.
    pub fn tcp_sockets(&self) -> Vec<TcpEntry> {
        let mut inodes = HashSet::new();
        for entry in fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .flatten()
        {
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            inodes.extend(inode);
        }
        tcp_table().into_iter().filter(|e| inodes.contains(&e.inode)).collect()
    }

    /// How many descriptors the gateway has open.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }
}

/// An endpoint for the gateway at `addr` proving `key` as `identity`.
pub fn endpoint(addr: SocketAddr, key: &str, identity: &str) -> Endpoint {
    // Plain HTTP: the trust setting is only read for https:// addresses.
    Endpoint::new(&addr.to_string(), GatewayKey::new(key), identity, &Trust::SystemRoots)
        .unwrap_or_else(|e| panic!("endpoint for {addr}: {e}"))
}

/// Starts the real `ringway agent` publishing `expose`, with its key in
/// `RINGWAY_KEY` as operators run it.
pub fn spawn_agent_binary(gateway: SocketAddr, key: &str, name: &str, expose: SocketAddr) -> LoggedChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.arg("agent")
        .arg("--gateway")
        .arg(gateway.to_string())
        .arg("--name")
        .arg(name)
        .arg("--expose")
        .arg(expose.to_string())
        .env("RINGWAY_KEY", key)
        .env("RUST_LOG", "info");
    LoggedChild::spawn(&format!("agent {name}"), cmd)
}
