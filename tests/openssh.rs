//! OpenSSH, a program nobody here wrote, through the whole chain: `ssh`
//! with `ProxyCommand=ringway control connect --stdio` → gateway →
//! `ringway agent --expose` → sshd. The exposed service is a listener on
//! port 0 in this test that runs `sshd -i` (inetd mode) on each accepted
//! socket, so no fixed port is used and no daemon outlives the test. A
//! second test keeps a shell open through a secondary gateway while the
//! agent's channel fails back to its primary.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};

use common::{
    COMMAND_TIMEOUT, EVENT_TIMEOUT, Gateway, GatewayConfig, TestDir, is_listening, poll_until, run_bounded,
    spawn_agent_binary,
};
use ringway::auth::scram::{Argon2Params, Verifier};
use ringway::auth::totp::{self, TotpSecret};

const KEY: &str = "Testing1";
const SSHD: &str = "/usr/sbin/sshd";

/// Runs `ssh-keygen` to make an ed25519 key pair at `path`.
fn keygen(path: &Path) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path);
    let done = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    assert!(done.success(), "ssh-keygen failed: {}", done.stderr);
}

/// A local service that hands every accepted connection to `sshd -i`.
struct SshdService {
    addr: SocketAddr,
    children: Arc<Mutex<Vec<Child>>>,
}

impl SshdService {
    fn start(config: PathBuf) -> SshdService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sshd listener");
        let addr = listener.local_addr().expect("listener address");
        let children = Arc::new(Mutex::new(Vec::new()));
        let spawned = children.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                // sshd -i talks on stdin/stdout: give it the socket as both.
                // SAFETY: dup returns a new descriptor we then own alone.
                let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(conn.as_raw_fd())) };
                let child = Command::new(SSHD)
                    .arg("-i")
                    .arg("-f")
                    .arg(&config)
                    .stdin(Stdio::from(OwnedFd::from(conn)))
                    .stdout(Stdio::from(dup))
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start sshd -i");
                spawned.lock().expect("child list").push(child);
            }
        });
        SshdService { addr, children }
    }
}

impl Drop for SshdService {
    fn drop(&mut self) {
        for child in self.children.lock().expect("child list").iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Keys, an sshd config and an `sshd -i` service in a test folder, and
/// the `ssh` command that logs in to it.
struct SshRig {
    dir: TestDir,
    user_key: PathBuf,
    sshd: SshdService,
}

impl SshRig {
    fn new(name: &str) -> SshRig {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server and openssh-client (apt-get install -y openssh-server openssh-client)"
        );
        let dir = TestDir::new(name);
        let (host_key, user_key) = (dir.join("host_key"), dir.join("user_key"));
        keygen(&host_key);
        keygen(&user_key);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("user_key.pub"), &authorized).expect("authorize the user key");
        // sshd's privilege-separation directory; Debian's package creates it
        // at boot, a fresh container may not have it.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let sshd_config = dir.join("sshd_config");
        std::fs::write(
            &sshd_config,
            format!(
                "HostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .expect("write sshd_config");
        let sshd = SshdService::start(sshd_config);
        SshRig { dir, user_key, sshd }
    }

    /// `ssh user@pc1 remote` through `ringway control connect pc1
    /// <gateways> --as <control> --stdio`.
    fn ssh(&self, gateways: &str, control: &str, remote: &str) -> Command {
        let proxy = format!(
            "ProxyCommand={} control connect pc1 {gateways} --as {control} --stdio",
            env!("CARGO_BIN_EXE_ringway")
        );
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let mut ssh = Command::new("ssh");
        ssh.env("RINGWAY_KEY", KEY)
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.dir.join("known_hosts").display()))
            .arg("-i")
            .arg(&self.user_key)
            .arg("-o")
            .arg(proxy)
            .arg(format!("{user}@pc1"))
            .arg(remote);
        ssh
    }
}

#[test]
fn an_openssh_session_runs_through_agent_gateway_and_control() {
    let rig = SshRig::new("openssh");
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let gateway = gw.addr().to_string();
    let _agent = spawn_agent_binary(&gateway, KEY, "pc1", rig.sshd.addr, &[]);
    gw.wait_for_event("Client pc1 connected", EVENT_TIMEOUT);

    let ssh = rig.ssh(
        &format!("--gateway {gateway}"),
        "ops",
        "echo through-ringway-$((6*7)); head -c 100000 /dev/zero | wc -c",
    );
    let done = run_bounded(ssh, b"", COMMAND_TIMEOUT);
    assert!(done.success(), "ssh failed ({:?}): {}", done.code, done.stderr);
    assert_eq!(done.stdout, "through-ringway-42\n100000\n");

    gw.wait_for_event("Control ops connected to Client pc1", EVENT_TIMEOUT);
    gw.wait_for_event("Control ops disconnected from Client pc1", EVENT_TIMEOUT);
}

/// A running `ssh` whose stdin the test writes and whose stdout lines it
/// reads, each within [`EVENT_TIMEOUT`]; killed (by pid) if still running
/// when dropped.
struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Shell {
    fn start(mut cmd: Command) -> Shell {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start ssh");
        let stdin = child.stdin.take();
        // Invariant: stdout was set to piped just above.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Shell { child, stdin, lines }
    }

    /// Sends `line` to the remote shell and returns the line it answers.
    fn ask(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to ssh");
        stdin.flush().expect("flush to ssh");
        self.lines
            .recv_timeout(EVENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("no answer to {line:?} through ssh: {e}"))
    }

    /// Closes stdin (the remote loop ends) and waits for ssh to exit 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let exited = poll_until(EVENT_TIMEOUT, || self.child.try_wait().ok().flatten());
        let status = exited.unwrap_or_else(|| panic!("ssh did not exit after its stdin closed"));
        assert!(status.success(), "ssh exited with {status}");
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_shell_through_the_secondary_survives_the_agents_failback() {
    let rig = SshRig::new("openssh-failback");
    let mut primary_config = GatewayConfig::new(&[KEY]);
    primary_config.cmpi_secs = Some(5);
    let mut primary = Gateway::start(&primary_config);
    let p = primary.addr();
    primary_config.listen = vec![p];
    let mut secondary_config = primary_config.clone();
    secondary_config.listen = GatewayConfig::new(&[KEY]).listen;
    secondary_config.role = Some("secondary");
    let secondary = Gateway::start(&secondary_config);
    let s = secondary.addr().to_string();
    let agent = spawn_agent_binary(
        &p.to_string(),
        KEY,
        "pc1",
        rig.sshd.addr,
        &["--secondary", &s, "--probe-secs", "1", "--hold-down-secs", "2"],
    );
    agent.wait_for_line(&format!("registered with {p} "), EVENT_TIMEOUT);
    primary.kill();
    assert!(
        poll_until(EVENT_TIMEOUT, || (!is_listening(p)).then_some(())).is_some(),
        "the killed primary's listeners never went away"
    );
    secondary.wait_for_event(&format!("Client pc1 connected (failover from {p})"), EVENT_TIMEOUT);

    // A shell through the secondary, the control told of both gateways.
    let gateways = format!("--gateway {p} --secondary {s}");
    let mut shell = Shell::start(rig.ssh(&gateways, "ops", "while read l; do echo got-$l; done"));
    assert_eq!(shell.ask("one"), "got-one");
    secondary.wait_for_event("Control ops connected to Client pc1", EVENT_TIMEOUT);

    // The primary returns and the agent's channel goes home; the shell
    // stays where it is and keeps answering.
    let primary = Gateway::start_while_agents_dial(&primary_config);
    primary.wait_for_event(&format!("Client pc1 connected (failback from {s})"), EVENT_TIMEOUT);
    secondary.wait_for_event("Client pc1 Disconnected (failback)", EVENT_TIMEOUT);
    assert_eq!(shell.ask("two"), "got-two");
    shell.finish();
    secondary.wait_for_event("Control ops disconnected from Client pc1", EVENT_TIMEOUT);

    // A new ssh goes through the primary.
    let done = run_bounded(rig.ssh(&gateways, "ops2", "echo again"), b"", COMMAND_TIMEOUT);
    assert!(done.success(), "ssh failed ({:?}): {}", done.code, done.stderr);
    assert_eq!(done.stdout, "again\n");
    primary.wait_for_event("Control ops2 connected to Client pc1", EVENT_TIMEOUT);
    assert_eq!(secondary.count_events("Control ops2 connected to Client pc1"), 0);
}

#[test]
fn an_openssh_session_runs_with_operators_and_totp_on() {
    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const PASSWORD: &str = "ssh through two factors";
    let rig = SshRig::new("openssh-operators");
    let fast = Argon2Params {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };
    let verifier = Verifier::generate(PASSWORD.as_bytes(), &fast)
        .expect("a verifier")
        .to_text();
    let mut config = GatewayConfig::new(&[KEY]);
    config.tail = vec![format!(
        "[auth]\ntotp = \"required\"\ntotp_per_session = true\n[[operators]]\nname = \"alice\"\nverifier = {verifier:?}\ntotp_secret = {SECRET:?}\n"
    )];
    let gw = Gateway::start(&config);
    let gateway = gw.addr().to_string();
    let _agent = spawn_agent_binary(&gateway, KEY, "pc1", rig.sshd.addr, &[]);
    gw.wait_for_event("Client pc1 connected", EVENT_TIMEOUT);

    // Codes for this step and the one before, judged within this step:
    // wait, if need be, until 5 s of it remain at least (no event marks a
    // step's start).
    let now = loop {
        let now = common::unix_now();
        if now % 30 < 25 {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let secret = TotpSecret::from_base32(SECRET).expect("a secret");
    let code = |at: u64| totp::code_at(&secret, &totp::Params::DEFAULT, at);
    let home = rig.dir.join("home");
    let home = home.to_str().expect("UTF-8");
    let mut login = common::ringway_client(
        KEY,
        &[
            "control",
            "login",
            "--gateway",
            &gateway,
            "--user",
            "alice",
            "--as",
            "ops",
        ],
    );
    login
        .env("XDG_CONFIG_HOME", home)
        .env("RINGWAY_PASSWORD", PASSWORD)
        .env("RINGWAY_TOTP", code(now - 30));
    let done = run_bounded(login, b"", COMMAND_TIMEOUT);
    assert!(done.success(), "login failed: {}", done.stderr);
    let mut ssh = rig.ssh(
        &format!("--gateway {gateway}"),
        "ops",
        "echo through-ringway-$((6*7)); head -c 100000 /dev/zero | wc -c",
    );
    ssh.env("XDG_CONFIG_HOME", home).env("RINGWAY_TOTP", code(now));
    let done = run_bounded(ssh, b"", COMMAND_TIMEOUT);
    assert!(done.success(), "ssh failed ({:?}): {}", done.code, done.stderr);
    assert_eq!(done.stdout, "through-ringway-42\n100000\n");
    gw.wait_for_event("Control alice connected to Client pc1", EVENT_TIMEOUT);
    gw.wait_for_event("Control alice disconnected from Client pc1", EVENT_TIMEOUT);
}
