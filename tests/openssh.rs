//! OpenSSH, a program nobody here wrote, through the whole chain: `ssh`
//! with `ProxyCommand=ringway control connect --stdio` → gateway →
//! `ringway agent --expose` → sshd. The exposed service is a listener on
//! port 0 in this test that runs `sshd -i` (inetd mode) on each accepted
//! socket, so no fixed port is used and no daemon outlives the test.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{COMMAND_TIMEOUT, EVENT_TIMEOUT, Gateway, GatewayConfig, TestDir, run_bounded, spawn_agent_binary};
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

/// sshd's files in `dir` (host key, the user's key, authorized_keys,
/// sshd_config) and the service running `sshd -i`; the user's key path.
fn sshd_in(dir: &TestDir) -> (SshdService, PathBuf) {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install openssh-server and openssh-client (apt-get install -y openssh-server openssh-client)"
    );
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
    (SshdService::start(sshd_config), user_key)
}

/// `ssh` to pc1 through `ringway control connect --stdio` on `gateway`,
/// with `env` for the ProxyCommand; checks the remote command's output.
fn ssh_through(gateway: &str, dir: &TestDir, user_key: &Path, env: &[(&str, &str)]) {
    let proxy = format!(
        "ProxyCommand={} control connect pc1 --gateway {gateway} --as ops --stdio",
        env!("CARGO_BIN_EXE_ringway")
    );
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut ssh = Command::new("ssh");
    ssh.env("RINGWAY_KEY", KEY)
        .envs(env.iter().copied())
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", dir.join("known_hosts").display()))
        .arg("-i")
        .arg(user_key)
        .arg("-o")
        .arg(proxy)
        .arg(format!("{user}@pc1"))
        .arg("echo through-ringway-$((6*7)); head -c 100000 /dev/zero | wc -c");
    let done = run_bounded(ssh, b"", COMMAND_TIMEOUT);
    assert!(done.success(), "ssh failed ({:?}): {}", done.code, done.stderr);
    assert_eq!(done.stdout, "through-ringway-42\n100000\n");
}

#[test]
fn an_openssh_session_runs_through_agent_gateway_and_control() {
    let dir = TestDir::new("openssh");
    let (sshd, user_key) = sshd_in(&dir);
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let gateway = gw.addr().to_string();
    let _agent = spawn_agent_binary(&gateway, KEY, "pc1", sshd.addr, &[]);
    gw.wait_for_event("Client pc1 connected", EVENT_TIMEOUT);
    ssh_through(&gateway, &dir, &user_key, &[]);
    gw.wait_for_event("Control ops connected to Client pc1", EVENT_TIMEOUT);
    gw.wait_for_event("Control ops disconnected from Client pc1", EVENT_TIMEOUT);
}

/// The same with an operator who signs in with a password and a TOTP
/// code, and gives a fresh code for the session (`totp_per_session`).
#[test]
fn an_openssh_session_runs_with_operators_and_totp_on() {
    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const PASSWORD: &str = "ssh through two factors";
    let dir = TestDir::new("openssh-operators");
    let (sshd, user_key) = sshd_in(&dir);
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
    let _agent = spawn_agent_binary(&gateway, KEY, "pc1", sshd.addr, &[]);
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
    let home = dir.join("home");
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
    ssh_through(
        &gateway,
        &dir,
        &user_key,
        &[("XDG_CONFIG_HOME", home), ("RINGWAY_TOTP", &code(now))],
    );
    gw.wait_for_event("Control alice connected to Client pc1", EVENT_TIMEOUT);
    gw.wait_for_event("Control alice disconnected from Client pc1", EVENT_TIMEOUT);
}
