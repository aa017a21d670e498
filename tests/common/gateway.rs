//! The gateway under test: the real `ringway serve` on a config written
//! into a test folder, listening on ports it picks itself. The one
//! launcher every test uses; reloading and stopping are in lifecycle.rs,
//! admin requests in admin.rs.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ringway::auth::GatewayKey;
use ringway::client::Endpoint;
use ringway::client::identity::AgentIdentity;
use ringway::client::sysinfo::os_description;
use ringway::tls::Trust;

use super::{
    AgentThread, Behaviour, EVENT_TIMEOUT, GatewayConfig, LoggedChild, Service, StdSession, TcpEntry, TestDir,
    connect_std, tcp_table,
};

/// Name of the config file in a gateway's folder.
const CONFIG_FILE: &str = "gateway.toml";
/// Where the gateway names each bound address.
const LISTENING: &str = "Listening on port ";
/// The start event that follows the listen lines, up to its maximum.
const STARTED: &str = "Gateway started. Max licensed connections: ";
/// How the start event names a maximum of 0 (no limit).
const UNLIMITED: &str = "unlimited";
/// Where the gateway names its admin listener.
const ADMIN_AT: &str = "Admin console on http://";
/// How the cluster's side thread's events start.
const CLUSTER_EVENT: &str = "Cluster directory ";
/// ringway's version, as the first start event names it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A running `ringway serve`, killed (SIGKILL, by pid) when dropped.
pub struct Gateway {
    process: LoggedChild,
    /// Bound addresses, in config order.
    listen: Vec<SocketAddr>,
    /// The admin listener, if configured.
    admin: Option<SocketAddr>,
    /// Worker threads, each of which answers an admin snapshot.
    workers: usize,
    /// The events this run logged at start, in order.
    start_lines: Vec<String>,
    /// The gateway's folder: its config file and event log folder.
    dir: PathBuf,
    /// The folder, if the gateway made it itself. Declared last, so it
    /// goes once the gateway is dead.
    _own_dir: Option<TestDir>,
}

impl Gateway {
    /// Writes `config` into a fresh folder of its own, starts the real
    /// binary on it and waits until it has started; asserts that its only
    /// events so far are its start events.
    pub fn start(config: &GatewayConfig) -> Gateway {
        let dir = TestDir::new("gateway");
        Gateway::launch(dir.path().to_path_buf(), Some(dir), config, true)
    }

    /// As [`Gateway::start`], in the test's folder `dir` (which holds the
    /// files the config names, or the event log of an earlier run).
    pub fn start_in(dir: &TestDir, config: &GatewayConfig) -> Gateway {
        Gateway::launch(dir.path().to_path_buf(), None, config, true)
    }

    /// As [`Gateway::start`], for a gateway that agents are already
    /// dialing (a restart on a known port): their events may come among
    /// the start events, so those are not checked to be alone.
    pub fn start_while_agents_dial(config: &GatewayConfig) -> Gateway {
        let dir = TestDir::new("gateway");
        Gateway::launch(dir.path().to_path_buf(), Some(dir), config, false)
    }

    /// As [`Gateway::start`], with `prepare` applied to the command first:
    /// a network namespace to start in, a lower open-file limit.
    pub fn start_prepared(config: &GatewayConfig, prepare: impl FnOnce(&mut Command)) -> Gateway {
        let dir = TestDir::new("gateway");
        Gateway::launch_prepared(dir.path().to_path_buf(), Some(dir), config, true, prepare)
    }

    fn launch(dir: PathBuf, own_dir: Option<TestDir>, config: &GatewayConfig, alone: bool) -> Gateway {
        Gateway::launch_prepared(dir, own_dir, config, alone, |_| {})
    }

    fn launch_prepared(
        dir: PathBuf,
        own_dir: Option<TestDir>,
        config: &GatewayConfig,
        alone: bool,
        prepare: impl FnOnce(&mut Command),
    ) -> Gateway {
        let file = dir.join(CONFIG_FILE);
        fs::write(&file, config.to_toml(&dir)).expect("write the gateway config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg("serve").arg("--config").arg(&file).env("RUST_LOG", "info");
        prepare(&mut cmd);
        let label = format!("gateway in {}", dir.display());
        let process = LoggedChild::spawn(&label, cmd);

        let started = match config.max_clients {
            None | Some(0) => format!("{STARTED}{UNLIMITED}"),
            Some(n) => format!("{STARTED}{n}"),
        };
        process.wait_for_event(&started, EVENT_TIMEOUT);
        let listen: Vec<SocketAddr> = process
            .events()
            .iter()
            .filter_map(|e| e.strip_prefix(LISTENING))
            .map(|a| a.parse().unwrap_or_else(|e| panic!("bad address {a:?}: {e}")))
            .collect();
        assert_eq!(listen.len(), config.listen.len(), "one listen line per address");
        let mut start_lines = vec![format!("ringway V{VERSION}, running on {}", os_description())];
        start_lines.extend(listen.iter().map(|a| format!("{LISTENING}{a}")));
        start_lines.push(started);
        let admin = config.admin.then(|| {
            let line = process.wait_for_event_prefix(ADMIN_AT, EVENT_TIMEOUT);
            start_lines.push(line.clone());
            let addr = line.strip_prefix(ADMIN_AT).and_then(|a| a.strip_suffix('/'));
            addr.and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no admin address in {line:?}"))
        });
        if alone {
            // A clustered gateway's side thread says when it reaches Redis,
            // at any point of the start: cluster tests wait for that line.
            let events: Vec<String> = process
                .events()
                .into_iter()
                .filter(|e| !e.starts_with(CLUSTER_EVENT))
                .collect();
            assert_eq!(events, start_lines, "the gateway's start events");
        }
        Gateway {
            process,
            listen,
            admin,
            workers: config.workers,
            start_lines,
            dir,
            _own_dir: own_dir,
        }
    }

    /// The first address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// `https://` and the first address: how TLS clients name the gateway.
    pub fn https(&self) -> String {
        format!("https://{}", self.addr())
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        // Invariant: only tests that configure [admin] ask for it.
        self.admin.expect("this gateway has an admin listener")
    }

    /// Its worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The events this run logged at start, in order.
    pub fn start_lines(&self) -> &[String] {
        &self.start_lines
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// The gateway's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The event log folder (written only if the config has `[log]`).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join(super::LOG_FOLDER)
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// This run's boot id, as its answers carry it (`Ringway-Boot`),
    /// asked with a request for a path it does not serve: no event, one
    /// `404` in its counters.
    pub fn boot(&self) -> String {
        super::ask_boot(self.addr()).to_string()
    }

    /// A plain-HTTP endpoint for this gateway proving `key` as `identity`.
    pub fn endpoint(&self, key: &str, identity: &str) -> Endpoint {
        endpoint(self.addr(), key, identity)
    }

    /// An endpoint over TLS (`https://`) trusting `trust`.
    pub fn tls_endpoint(&self, key: &str, identity: &str, trust: &Trust) -> Endpoint {
        let mut ep = Endpoint::new(&self.https(), GatewayKey::new(key), identity, trust)
            .unwrap_or_else(|e| panic!("TLS endpoint: {e}"));
        ep.agent_key = Some(test_machine());
        ep
    }

    /// Registers a library agent on `ep` doing `behaviour`, and waits until
    /// the gateway logs it.
    pub fn start_agent(&self, ep: Endpoint, behaviour: Behaviour) -> AgentThread {
        let name = ep.identity.clone();
        let agent =
            AgentThread::start(ep, behaviour).unwrap_or_else(|e| panic!("agent {name} failed to register: {e}"));
        self.wait_for_event(&format!("Client {name} connected"), EVENT_TIMEOUT);
        agent
    }

    /// A plain-HTTP library agent `name` proving `key` and serving
    /// `service`; see [`Gateway::start_agent`].
    pub fn serving_agent(&self, key: &str, name: &str, service: SocketAddr) -> AgentThread {
        self.start_agent(self.endpoint(key, name), Behaviour::Serve(service))
    }

    /// Opens a plain-HTTP session as `control` to `agent`, which serves
    /// `service`; returns it with the service's end of it.
    pub fn session(&self, key: &str, control: &str, agent: &str, service: &Service) -> (StdSession, TcpStream) {
        let session =
            connect_std(&self.endpoint(key, control), agent).unwrap_or_else(|e| panic!("connect failed: {e}"));
        let service_end = service.accept(EVENT_TIMEOUT);
        self.wait_for_event(&format!("Control {control} connected to Client {agent}"), EVENT_TIMEOUT);
        (session, service_end)
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

    /// See [`LoggedChild::wait_for_line`].
    pub fn wait_for_line(&self, substring: &str, timeout: Duration) -> String {
        self.process.wait_for_line(substring, timeout)
    }

    /// See [`LoggedChild::count_events`].
    pub fn count_events(&self, text: &str) -> usize {
        self.process.count_events(text)
    }

    /// See [`LoggedChild::events`].
    pub fn events(&self) -> Vec<String> {
        self.process.events()
    }

    /// See [`LoggedChild::lines`].
    pub fn lines(&self) -> Vec<String> {
        self.process.lines()
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

    /// The gateway's open descriptors: number and what each names
    /// (`socket:[inode]`, a path, `anon_inode:[io_uring]`), so a test can
    /// tell descriptors that are new from ones that were open before.
    pub fn descriptors(&self) -> BTreeSet<(u32, String)> {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .flatten()
            .filter_map(|entry| {
                let fd = entry.file_name().to_str()?.parse().ok()?;
                let target = fs::read_link(entry.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// How many descriptors the gateway has open.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }
}

/// A plain-HTTP endpoint for the gateway at `addr` proving `key` as
/// `identity`.
pub fn endpoint(addr: SocketAddr, key: &str, identity: &str) -> Endpoint {
    // Plain HTTP: the trust setting is only read for https:// addresses.
    let mut ep = Endpoint::new(&addr.to_string(), GatewayKey::new(key), identity, &Trust::SystemRoots)
        .unwrap_or_else(|e| panic!("endpoint for {addr}: {e}"));
    ep.agent_key = Some(test_machine());
    ep
}

/// The agent key of "this machine": every library agent of a test
/// process shares it, as agents on one machine share its state folder,
/// so a test's agent that registers a name again replaces itself. A test
/// that needs a second machine gives its endpoint another
/// ([`AgentIdentity::generate`]).
pub fn test_machine() -> Arc<AgentIdentity> {
    static MACHINE: LazyLock<Arc<AgentIdentity>> = LazyLock::new(|| Arc::new(AgentIdentity::generate()));
    MACHINE.clone()
}
