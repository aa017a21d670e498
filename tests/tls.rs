//! TLS on the gateway and its clients, checked with real outside tools:
//! `curl` browses with a bearer key, `openssl s_client` probes protocol
//! versions and reads the served certificate across a live swap, and the
//! `ringway` binaries and library relay through TLS on both legs.
//!
//! Every certificate comes from the real `ringway gen-cert`, written into
//! the test's own temporary folder. The gateway is the real binary, started
//! here (not through `common::Gateway`) because its config needs `[tls]`
//! and `[admin]` sections; it still uses the shared stderr collector.
//!
//! Outside tools: `curl` and `openssl` (Debian packages `curl`, `openssl`).

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use compio::BufResult;
use ring::digest;
use ringway::auth::GatewayKey;
use ringway::client::{self, Endpoint, Session};
use ringway::conn::Conn;
use ringway::relay::Duplex;
use ringway::tls::Trust;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, GatewayConfig, IO_TIMEOUT, LoggedChild, Prng, Service, block_on, list,
    poll_until, read_hashed, refusal, send_generated, sha256,
};

const KEY: &str = "Testing1";

/// Upper bound for one run of an outside command (curl, openssl, a
/// short-lived `ringway`): each takes well under a second; only a hang
/// gets near this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound for the 64 MiB exchange: a debug build moves it through
/// four TLS record layers in seconds; this only stops a stall.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Write size of the library control's generated stream.
const CHUNK: usize = 64 * 1024;

/// Where the gateway names its bound address, and its admin listener.
const LISTENING: &str = "Listening on port ";
const ADMIN_AT: &str = "Admin console on http://";

/// Where `ringway control connect --listen` names its local address.
const CONTROL_LISTENING: &str = "listening on ";

/// What gen-cert prints before the certificate's SHA-256.
const PIN_LINE: &str = "certificate SHA-256 (for --pin-sha256): ";

/// A plain request's refusal when `[tls] require = true` (the body, which
/// the library reports as the reason).
const TLS_ONLY: &str = "this gateway accepts TLS (https) connections only";

// ---------------------------------------------------------------------------
// Fixtures.

/// A temporary folder of the test's own, removed when dropped (declare it
/// first, so it outlives the processes using it).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringway-tls-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test's temp dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` with `input` on its stdin and waits for it, at most
/// [`COMMAND_TIMEOUT`] (then kills it by its pid and fails the test).
fn run(mut cmd: Command, input: &[u8]) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    // Invariant: stdin was set to piped just above.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Fed on a thread of its own, so a child that writes before it reads
    // cannot block on a full pipe; dropping the handle is the child's EOF.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("waiting for {what} failed: {e}"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which the waiter
            // thread has not reaped (it would have answered).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `ringway` binary under test.
fn ringway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringway"))
}

/// Runs the real `ringway gen-cert` for localhost and 127.0.0.1 into
/// `out`; returns the SHA-256 pin it printed.
fn gen_cert(out: &Path) -> String {
    let mut cmd = ringway();
    cmd.args(["gen-cert", "--host", "localhost", "--host", "127.0.0.1", "--out"])
        .arg(out);
    let output = run(cmd, b"");
    assert!(output.status.success(), "gen-cert failed: {}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let d = out.display();
    assert_eq!(lines.len(), 2, "gen-cert's output: {stdout:?}");
    assert_eq!(lines[0], format!("wrote {d}/ca.pem, {d}/cert.pem, {d}/key.pem"));
    let pin = lines[1]
        .strip_prefix(PIN_LINE)
        .unwrap_or_else(|| panic!("no pin in {:?}", lines[1]));
    assert!(
        pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "pin {pin:?} is not 64 lowercase hex digits"
    );
    pin.to_string()
}

/// SHA-256 (hex) of the first certificate in a PEM file, computed here
/// with ring rather than taken from gen-cert.
fn first_cert_sha256(pem: &Path) -> String {
    let first: CertificateDer<'static> = CertificateDer::pem_file_iter(pem)
        .unwrap_or_else(|e| panic!("read {}: {e}", pem.display()))
        .next()
        .unwrap_or_else(|| panic!("no certificate in {}", pem.display()))
        .unwrap_or_else(|e| panic!("bad PEM in {}: {e}", pem.display()));
    hex(digest::digest(&digest::SHA256, first.as_ref()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running `ringway serve` with TLS and a loopback admin listener (for
/// /metrics and as a barrier through every worker), killed when dropped.
struct TlsGateway {
    process: LoggedChild,
    addr: SocketAddr,
    admin: SocketAddr,
    /// Worker threads, each of which must answer an admin snapshot.
    workers: usize,
}

impl TlsGateway {
    /// Writes the config into `dir` and starts the gateway on port 0,
    /// serving `cert` and `key`.
    fn start(dir: &Path, cert: &Path, key: &Path, require: bool) -> TlsGateway {
        let base = GatewayConfig::new(&[KEY]);
        let mut config = base.to_toml();
        config.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
        config.push_str(&format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nrequire = {}\n",
            cert.display().to_string(),
            key.display().to_string(),
            require
        ));
        let file = dir.join("gateway.toml");
        fs::write(&file, config).expect("write the gateway config");
        let mut cmd = ringway();
        cmd.arg("serve").arg("--config").arg(&file).env("RUST_LOG", "info");
        let process = LoggedChild::spawn("tls gateway", cmd);
        let addr = address_after(&process.wait_for_line(LISTENING, EVENT_TIMEOUT), LISTENING);
        let admin = address_after(&process.wait_for_line(ADMIN_AT, EVENT_TIMEOUT), ADMIN_AT);
        TlsGateway {
            process,
            addr,
            admin,
            workers: base.workers,
        }
    }

    /// `https://127.0.0.1:PORT`.
    fn https(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A library endpoint over TLS trusting `trust`.
    fn tls_endpoint(&self, identity: &str, trust: &Trust) -> Endpoint {
        Endpoint::new(&self.https(), GatewayKey::new(KEY), identity, trust)
            .unwrap_or_else(|e| panic!("TLS endpoint: {e}"))
    }

    /// A library endpoint over plain HTTP.
    fn plain_endpoint(&self, identity: &str) -> Endpoint {
        Endpoint::new(
            &self.addr.to_string(),
            GatewayKey::new(KEY),
            identity,
            &Trust::SystemRoots,
        )
        .unwrap_or_else(|e| panic!("plain endpoint: {e}"))
    }

    /// Sends SIGHUP: re-read the config file.
    fn sighup(&self) {
        // SAFETY: kill(2) on the pid of the gateway this test started and
        // still holds (LoggedChild reaps it only when dropped).
        let rc = unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP to the gateway: {}", io::Error::last_os_error());
    }

    /// Returns once every worker has handled what was queued to it before
    /// the call: /metrics is a snapshot taken through each worker's message
    /// queue, in order, and lists a series for each worker that answered.
    fn sync_workers(&self) {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "/metrics answered {body:?}");
        let answered = body
            .lines()
            .filter(|l| l.starts_with("ringway_tls_handshakes_total{worker="))
            .count();
        assert_eq!(answered, self.workers, "workers that answered the snapshot");
    }

    /// `GET path` on the admin listener: status and body.
    fn admin_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.admin).expect("connect to the admin listener");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").expect("send the admin request");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("read the admin answer");
        let answer = text(&answer);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in the admin answer {answer:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, body.to_string())
    }

    /// The sum over all series of the counter `name` in /metrics (0 when
    /// no series exists yet).
    fn metric(&self, name: &str) -> u64 {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "/metrics answered {body:?}");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(series, value)| {
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{series} has the value {value:?}"))
            })
            .sum()
    }

    /// Waits until the counter `name` reads `want`: the gateway bumps its
    /// handshake counters just after the peer has seen the outcome, and
    /// has no event for it.
    fn wait_metric(&self, name: &str, want: u64) {
        let seen = poll_until(EVENT_TIMEOUT, || {
            let v = self.metric(name);
            (v == want).then_some(v)
        });
        assert_eq!(seen, Some(want), "{name} never read {want} (now {})", self.metric(name));
    }
}

/// The address at the end of a log line, after `marker` (a trailing `/` or
/// `;...` is cut off).
fn address_after(line: &str, marker: &str) -> SocketAddr {
    line.rsplit_once(marker)
        .map(|(_, rest)| rest.split([';', '/']).next().unwrap_or(rest).trim())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {marker:?} in {line:?}"))
}

/// Opens a relay session through the library.
fn open_session(ep: &Endpoint, agent: &str) -> Session {
    block_on(client::connect(ep, agent)).unwrap_or_else(|e| panic!("connect to {agent} failed: {e}"))
}

/// What one end of a session sent and received.
struct Transfer {
    sent_sha256: Vec<u8>,
    received_len: usize,
    received_sha256: Vec<u8>,
}

/// Sends `len` bytes of `Prng::new(seed)` through `session` and then
/// half-closes, while reading what comes back to EOF, both at once on the
/// same connection (as the relay's two pumps use it). The session is
/// dropped on the runtime it was opened on.
fn exchange(session: Session, seed: u64, len: usize) -> Transfer {
    block_on(async move {
        let Session { stream, early } = session;
        let work = futures_util::future::join(send_stream(&stream, seed, len), receive_stream(&stream, early));
        match compio::time::timeout(TRANSFER_TIMEOUT, work).await {
            Err(_) => panic!("the session did not finish within {TRANSFER_TIMEOUT:?}"),
            Ok((sent, received)) => {
                let sent_sha256 = sent.unwrap_or_else(|e| panic!("sending through the session failed: {e}"));
                let (received_len, received_sha256) =
                    received.unwrap_or_else(|e| panic!("reading from the session failed: {e}"));
                Transfer {
                    sent_sha256,
                    received_len,
                    received_sha256,
                }
            }
        }
    })
}

async fn send_stream(conn: &Conn, seed: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut prng = Prng::new(seed);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = Vec::with_capacity(CHUNK);
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        buf.clear();
        buf.resize(n, 0);
        prng.fill(&mut buf);
        ctx.update(&buf);
        let BufResult(res, b) = conn.write_all_from(buf).await;
        res?;
        buf = b;
        left -= n;
    }
    conn.shutdown_write().await?;
    Ok(ctx.finish().as_ref().to_vec())
}

async fn receive_stream(conn: &Conn, early: Vec<u8>) -> io::Result<(usize, Vec<u8>)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&early);
    let mut total = early.len();
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        let BufResult(res, b) = conn.read_into(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Ok((total, ctx.finish().as_ref().to_vec()));
        }
        ctx.update(&buf[..n]);
        total += n;
    }
}

/// Sends `payload` on a blocking session socket (from a second thread) and
/// reads exactly as many bytes back, which must be the same.
fn echo_exact(stream: &TcpStream, payload: &[u8]) {
    let mut tx = stream.try_clone().expect("clone the session socket");
    let data = payload.to_vec();
    let writer = std::thread::spawn(move || tx.write_all(&data));
    let mut back = vec![0u8; payload.len()];
    let mut rx = stream;
    rx.read_exact(&mut back).expect("read the echo");
    writer.join().expect("writer thread").expect("send through the session");
    assert!(
        back == payload,
        "the echo of {} bytes differs from what was sent",
        payload.len()
    );
}

/// Starts the real `ringway agent` over TLS, trusting `ca`.
fn spawn_agent_binary(gw: &TlsGateway, ca: &Path, name: &str, expose: SocketAddr) -> LoggedChild {
    let (https, ca, expose) = (gw.https(), ca.display().to_string(), expose.to_string());
    let mut cmd = ringway_client(&["agent", "--gateway", &https, "--ca-file", &ca]);
    cmd.args(["--name", name, "--expose", &expose]);
    LoggedChild::spawn(&format!("agent {name}"), cmd)
}

/// Starts the real `ringway control connect --listen 127.0.0.1:0` over
/// TLS, trusting `ca`; returns it and the local address it listens on.
fn spawn_control_binary(gw: &TlsGateway, ca: &Path, name: &str, agent: &str) -> (LoggedChild, SocketAddr) {
    let (https, ca) = (gw.https(), ca.display().to_string());
    let listen = ["--as", name, "--listen", "127.0.0.1:0"];
    let mut cmd = ringway_client(&["control", "connect", agent, "--gateway", &https, "--ca-file", &ca]);
    cmd.args(listen);
    let control = LoggedChild::spawn(&format!("control {name}"), cmd);
    let line = control.wait_for_line(CONTROL_LISTENING, EVENT_TIMEOUT);
    (control, address_after(&line, CONTROL_LISTENING))
}

/// `curl` against the gateway; its status, content type and body. The
/// first argument `-q` keeps any .curlrc out; `--noproxy` keeps a CI
/// proxy setting from routing loopback traffic.
fn curl(args: &[&str], url: &str) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", "20"])
        .args(args)
        .args(["-w", "\n%{http_code} %{content_type}", url]);
    let output = run(cmd, b"");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "curl {url} failed ({}): {}",
        output.status,
        text(&output.stderr)
    );
    let (body, trailer) = stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no status trailer in {stdout:?}"));
    let (status, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    let status = status.parse().unwrap_or_else(|_| panic!("bad status {status:?}"));
    (status, content_type.to_string(), body.to_string())
}

/// `openssl s_client` to the gateway, verifying against `ca` and the IP
/// 127.0.0.1, with `extra` options; stdin is empty, so it closes right
/// after the handshake.
fn s_client(addr: SocketAddr, ca: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1"])
        .args(extra);
    run(cmd, b"")
}

/// The serial of the certificate the gateway serves now, as `openssl x509
/// -serial` prints it, from a new handshake verified against `ca`.
fn served_serial(addr: SocketAddr, ca: &Path) -> String {
    let hello = s_client(addr, ca, &[]);
    let stdout = text(&hello.stdout);
    assert!(hello.status.success(), "s_client failed: {}", text(&hello.stderr));
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "s_client stdout:\n{stdout}"
    );
    pem_serial(&hello.stdout)
}

/// The serial of the first certificate in `pem` (s_client prints the
/// served one as PEM; a cert.pem starts with it).
fn pem_serial(pem: &[u8]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-serial"]);
    let x509 = run(cmd, pem);
    assert!(x509.status.success(), "x509 failed: {}", text(&x509.stderr));
    text(&x509.stdout).trim().to_string()
}

/// A `ringway` client command with the key in `RINGWAY_KEY`, as operators
/// run it (never on the command line).
fn ringway_client(args: &[&str]) -> Command {
    let mut cmd = ringway();
    cmd.args(args).env("RINGWAY_KEY", KEY).env("RUST_LOG", "info");
    cmd
}

/// `ringway control ls --json` over TLS with `trust` options; the output.
fn control_ls(gw: &TlsGateway, name: &str, trust: &[&str]) -> Output {
    let mut cmd = ringway_client(&["control", "ls", "--json", "--gateway", &gw.https(), "--as", name]);
    cmd.args(trust);
    run(cmd, b"")
}

/// The `name` fields of a JSON array of agents.
fn json_names(json: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON {json:?}: {e}"));
    let array = value.as_array().unwrap_or_else(|| panic!("not a JSON array: {json:?}"));
    array
        .iter()
        .map(|a| {
            a["name"]
                .as_str()
                .unwrap_or_else(|| panic!("agent without a name in {json:?}"))
                .to_string()
        })
        .collect()
}

/// A library agent over TLS, trusting `ca`, serving `behaviour`; waits
/// until the gateway has logged it.
fn start_tls_agent(gw: &TlsGateway, ca: &Path, name: &str, behaviour: Behaviour) -> AgentThread {
    let agent = AgentThread::start(gw.tls_endpoint(name, &Trust::CaFile(ca.to_path_buf())), behaviour)
        .unwrap_or_else(|e| panic!("TLS agent registration failed: {e}"));
    gw.process
        .wait_for_event(&format!("Client {name} connected"), EVENT_TIMEOUT);
    agent
}

/// A gateway serving a fresh gen-cert certificate, and gen-cert's files.
struct Rig {
    gw: TlsGateway,
    /// gen-cert's folder: ca.pem, cert.pem, key.pem.
    certs: PathBuf,
    /// The SHA-256 pin gen-cert printed.
    pin: String,
    /// Declared last so it is removed after the gateway is gone.
    dir: Scratch,
}

impl Rig {
    fn start(require: bool) -> Rig {
        let dir = Scratch::new();
        let certs = dir.path("certs");
        let pin = gen_cert(&certs);
        let gw = TlsGateway::start(&dir.0, &certs.join("cert.pem"), &certs.join("key.pem"), require);
        Rig { gw, certs, pin, dir }
    }

    /// The private CA clients trust.
    fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// A library endpoint over TLS trusting the CA.
    fn endpoint(&self, identity: &str) -> Endpoint {
        self.gw.tls_endpoint(identity, &Trust::CaFile(self.ca()))
    }

    /// A library agent over TLS; see [`start_tls_agent`].
    fn agent(&self, name: &str, behaviour: Behaviour) -> AgentThread {
        start_tls_agent(&self.gw, &self.ca(), name, behaviour)
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn curl_browses_with_a_bearer_key_over_https_only() {
    let rig = Rig::start(false);
    let gw = &rig.gw;
    let _agent = rig.agent("curl-agent", Behaviour::IgnoreOpen);
    let ca_arg = rig.ca().display().to_string();
    let bearer = format!("Authorization: Bearer {KEY}");
    let url = format!("https://127.0.0.1:{}/v1/clients", gw.addr.port());

    let (status, content_type, body) = curl(&["--cacert", &ca_arg, "-H", &bearer], &url);
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json"),
        "body {body:?}"
    );
    assert_eq!(json_names(&body), vec!["curl-agent"]);

    let plain = format!("http://127.0.0.1:{}/v1/clients", gw.addr.port());
    let (status, content_type, body) = curl(&["-H", &bearer], &plain);
    assert_eq!((status, content_type.as_str()), (401, "text/plain; charset=utf-8"));
    assert_eq!(
        body,
        "bearer keys are accepted over TLS (https) only; over plain HTTP prove the key\n"
    );

    let wrong = "Authorization: Bearer Wrong-key-1";
    let (status, _, body) = curl(&["--cacert", &ca_arg, "-H", wrong], &url);
    assert_eq!((status, body.as_str()), (401, "gateway key proof refused\n"));

    let refused = "Security check failed for Control browse. Terminating connection from 127.0.0.1";
    gw.process.wait_for_events(refused, 2, EVENT_TIMEOUT);
    assert_eq!(gw.process.count_events(refused), 2, "one per refused curl");
}

#[test]
fn openssl_handshakes_with_tls_1_2_and_1_3_but_not_1_1() {
    let rig = Rig::start(false);
    let (gw, ca) = (&rig.gw, rig.ca());
    const DONE: &str = "ringway_tls_handshakes_total";
    const FAILED: &str = "ringway_tls_handshake_failures_total";
    assert_eq!((gw.metric(DONE), gw.metric(FAILED)), (0, 0));

    // Security level 0 lets this openssl offer TLS 1.1 whatever the
    // distribution's defaults, so the refusal must come from the gateway:
    // its alert (40, handshake_failure) is what s_client reports.
    let old = s_client(gw.addr, &ca, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    let (stdout, stderr) = (text(&old.stdout), text(&old.stderr));
    assert!(!old.status.success(), "TLS 1.1 handshake succeeded:\n{stdout}");
    assert!(
        stdout.contains("New, (NONE), Cipher is (NONE)"),
        "s_client stdout:\n{stdout}"
    );
    assert!(stderr.contains("SSL alert number 40"), "s_client stderr:\n{stderr}");
    gw.wait_metric(FAILED, 1);

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let hello = s_client(gw.addr, &ca, &[flag, "-alpn", "http/1.1"]);
        let stdout = text(&hello.stdout);
        assert!(
            hello.status.success(),
            "{version} handshake failed ({}): {}\n{stdout}",
            hello.status,
            text(&hello.stderr)
        );
        assert!(
            stdout.contains(&format!("New, {version}, Cipher is ")),
            "s_client stdout:\n{stdout}"
        );
        assert!(
            stdout.contains("Verify return code: 0 (ok)"),
            "s_client stdout:\n{stdout}"
        );
        assert!(stdout.contains("ALPN protocol: http/1.1"), "s_client stdout:\n{stdout}");
    }
    gw.wait_metric(DONE, 2);
    assert_eq!(gw.metric(FAILED), 1, "only the TLS 1.1 attempt failed");
}

#[test]
fn certificate_swap_on_sighup_serves_the_new_one_and_keeps_live_sessions() {
    let dir = Scratch::new();
    let (a, b, live) = (dir.path("a"), dir.path("b"), dir.path("live"));
    gen_cert(&a);
    gen_cert(&b);
    fs::create_dir_all(&live).expect("create the live cert dir");
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    fs::copy(a.join("cert.pem"), &cert).expect("install cert A");
    fs::copy(a.join("key.pem"), &key).expect("install key A");
    let serial_of = |dir: &Path| pem_serial(&fs::read(dir.join("cert.pem")).expect("read cert.pem"));
    let (serial_a, serial_b) = (serial_of(&a), serial_of(&b));
    assert_ne!(serial_a, serial_b, "two gen-cert runs gave the same serial");

    let gw = TlsGateway::start(&dir.0, &cert, &key, false);
    let echo = Service::echo();
    let _agent = spawn_agent_binary(&gw, &a.join("ca.pem"), "swap-agent", echo.addr());
    gw.process.wait_for_event("Client swap-agent connected", EVENT_TIMEOUT);
    let (_control, listen) = spawn_control_binary(&gw, &a.join("ca.pem"), "swap-control", "swap-agent");
    let session = TcpStream::connect(listen).expect("connect to the control's listener");
    session.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    gw.process
        .wait_for_event("Control swap-control connected to Client swap-agent", EVENT_TIMEOUT);
    let mut prng = Prng::new(30);
    echo_exact(&session, &prng.bytes(256 * 1024));
    assert_eq!(served_serial(gw.addr, &a.join("ca.pem")), serial_a);

    // Swap in B and reload.
    fs::copy(b.join("cert.pem"), &cert).expect("install cert B");
    fs::copy(b.join("key.pem"), &key).expect("install key B");
    gw.sighup();
    gw.process.wait_for_event("Reloading configuration", EVENT_TIMEOUT);
    // That event comes before the workers are sent the new config; the
    // SIGHUP line comes after it was queued to every worker, and the
    // snapshot behind it in each queue proves it was applied.
    gw.process
        .wait_for_line("SIGHUP: configuration reloaded", EVENT_TIMEOUT);
    gw.sync_workers();
    let (status, sessions) = gw.admin_get("/api/sessions");
    assert_eq!(status, 200);
    let sessions: serde_json::Value = serde_json::from_str(&sessions).expect("session list JSON");
    let pairs: Vec<(&str, &str)> = sessions
        .as_array()
        .expect("a JSON array of sessions")
        .iter()
        .map(|s| (s["control"].as_str().unwrap_or("?"), s["agent"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        pairs,
        vec![("swap-control", "swap-agent")],
        "the session survived the reload"
    );

    assert_eq!(served_serial(gw.addr, &b.join("ca.pem")), serial_b);
    echo_exact(&session, &prng.bytes(256 * 1024));

    // A corrupt certificate refuses the whole reload; B stays in service.
    fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nthis is not base64 !!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write a corrupt cert.pem");
    gw.sighup();
    let rejected = gw.process.wait_for_event_prefix("Reload rejected - ", EVENT_TIMEOUT);
    assert!(
        rejected.contains(&cert.display().to_string()) && rejected.ends_with("; the running configuration stays"),
        "the rejection names the file: {rejected:?}"
    );
    assert_eq!(served_serial(gw.addr, &b.join("ca.pem")), serial_b);
    echo_exact(&session, &prng.bytes(256 * 1024));

    // So does a pair that does not fit (A's certificate, B's key): what an
    // operator copying one file at a time may have on disk.
    fs::copy(a.join("cert.pem"), &cert).expect("install cert A over the corrupt one");
    gw.sighup();
    let mismatch = gw.process.wait_for_line("do not fit together", EVENT_TIMEOUT);
    assert!(
        mismatch.contains("ringway::event] Reload rejected - ")
            && mismatch.ends_with("; the running configuration stays"),
        "the first line saying so is the rejection event: {mismatch:?}"
    );
    assert_eq!(served_serial(gw.addr, &b.join("ca.pem")), serial_b);
    assert_eq!(
        gw.process.count_events("Reloading configuration"),
        1,
        "neither bad reload began"
    );
    echo_exact(&session, &prng.bytes(256 * 1024));

    // The session still ends cleanly: half-close, the echo half-closes back.
    session.shutdown(Shutdown::Write).expect("half-close the session");
    let mut rest = Vec::new();
    (&session).read_to_end(&mut rest).expect("read to EOF");
    assert_eq!(rest.len(), 0, "nothing after the last echo");
    gw.process.wait_for_event(
        "Control swap-control disconnected from Client swap-agent",
        EVENT_TIMEOUT,
    );
}

#[test]
fn required_tls_refuses_plain_peers_and_serves_tls_ones() {
    let rig = Rig::start(true);
    let gw = &rig.gw;
    let echo = Service::echo();

    let plain_agent = AgentThread::start(gw.plain_endpoint("plain-agent"), Behaviour::Serve(echo.addr()));
    assert_eq!(refusal(plain_agent), (403, TLS_ONLY.to_string()));
    assert_eq!(
        refusal(list(&gw.plain_endpoint("plain-control"))),
        (403, TLS_ONLY.to_string())
    );
    let refused = "Unencrypted connection refused from 127.0.0.1: this gateway requires TLS";
    gw.process.wait_for_events(refused, 2, EVENT_TIMEOUT);
    assert_eq!(gw.process.count_events(refused), 2);

    let _agent = rig.agent("req-agent", Behaviour::Serve(echo.addr()));
    let control = rig.endpoint("req-control");
    let names: Vec<String> = list(&control)
        .unwrap_or_else(|e| panic!("TLS browse failed: {e}"))
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, vec!["req-agent"]);

    const LEN: usize = 1 << 20;
    let t = exchange(open_session(&control, "req-agent"), 40, LEN);
    assert_eq!(t.received_len, LEN, "echoed byte count");
    assert!(
        t.received_sha256 == t.sent_sha256,
        "the echo differs from what was sent"
    );
    gw.process
        .wait_for_event("Control req-control disconnected from Client req-agent", EVENT_TIMEOUT);
    assert_eq!(gw.process.count_events(refused), 2, "TLS peers are not refused");
}

#[test]
fn sixty_four_mib_each_way_at_once_over_tls_on_both_legs() {
    const LEN: usize = 64 << 20;
    let rig = Rig::start(false);
    let service = Service::manual();
    let _agent = rig.agent("bulk-agent", Behaviour::Serve(service.addr()));
    let control = rig.endpoint("bulk-control");

    let session = open_session(&control, "bulk-agent");
    let service_side = service.accept(EVENT_TIMEOUT);
    let mut service_tx = service_side.try_clone().expect("clone the service socket");
    let service_writer = std::thread::spawn(move || {
        let sent = send_generated(&mut service_tx, 52, LEN).expect("service sends");
        service_tx.shutdown(Shutdown::Write).expect("service half-closes");
        sent
    });
    let mut service_rx = service_side;
    let service_reader = std::thread::spawn(move || read_hashed(&mut service_rx, &[]).expect("service reads"));

    let control_side = exchange(session, 51, LEN);
    let service_sent = service_writer.join().expect("service writer");
    let (service_got, service_hash) = service_reader.join().expect("service reader");

    assert_eq!(control_side.received_len, LEN, "bytes the control received");
    assert_eq!(service_got, LEN, "bytes the service received");
    assert!(
        control_side.received_sha256 == service_sent,
        "control received other bytes than the service sent"
    );
    assert!(
        service_hash == control_side.sent_sha256,
        "service received other bytes than the control sent"
    );
    rig.gw.process.wait_for_event(
        "Control bulk-control disconnected from Client bulk-agent",
        EVENT_TIMEOUT,
    );
}

#[test]
fn client_refuses_a_gateway_it_cannot_verify() {
    let rig = Rig::start(false);
    let (gw, certs, pin) = (&rig.gw, &rig.certs, &rig.pin);
    let other = rig.dir.path("other");
    let other_pin = gen_cert(&other);
    assert_eq!(
        &first_cert_sha256(&certs.join("cert.pem")),
        pin,
        "gen-cert's pin is cert.pem's first DER"
    );
    assert_ne!(pin, &other_pin);
    let key_mode = fs::metadata(certs.join("key.pem"))
        .expect("stat key.pem")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "key.pem's mode");
    let _agent = rig.agent("pinned-agent", Behaviour::IgnoreOpen);
    const FAILED: &str = "ringway_tls_handshake_failures_total";

    // The wrong CA: same CA name, other key, so the chain does not verify.
    let other_ca = other.join("ca.pem").display().to_string();
    let wrong_ca = control_ls(gw, "wrong-ca", &["--ca-file", &other_ca]);
    let stderr = text(&wrong_ca.stderr);
    assert!(!wrong_ca.status.success(), "ls with the wrong CA succeeded");
    assert_eq!(text(&wrong_ca.stdout), "", "nothing listed");
    assert!(
        stderr.starts_with("ringway: invalid peer certificate: ") && stderr.lines().count() == 1,
        "stderr: {stderr:?}"
    );
    gw.wait_metric(FAILED, 1);

    // A pin of another (real) certificate.
    let wrong_pin = control_ls(gw, "wrong-pin", &["--pin-sha256", &other_pin]);
    assert!(!wrong_pin.status.success(), "ls with the wrong pin succeeded");
    assert_eq!(text(&wrong_pin.stdout), "", "nothing listed");
    assert_eq!(
        text(&wrong_pin.stderr),
        "ringway: unexpected error: the gateway's certificate does not match the pinned SHA-256\n"
    );
    // Each refusal ended in the handshake, before any request was sent.
    gw.wait_metric(FAILED, 2);

    // The right pin and the right CA both work.
    let right_ca = rig.ca().display().to_string();
    for trust in [["--pin-sha256", pin.as_str()], ["--ca-file", right_ca.as_str()]] {
        let ok = control_ls(gw, "right-trust", &trust);
        assert!(ok.status.success(), "ls with {trust:?} failed: {}", text(&ok.stderr));
        assert_eq!(json_names(&text(&ok.stdout)), vec!["pinned-agent"], "ls with {trust:?}");
    }
    assert_eq!(gw.metric(FAILED), 2, "no further handshake failed");
}

/// Not in issue 3's list: bytes a control sends in the same TLS write as
/// its request head land in the gateway's first decrypted read, before the
/// `101`; they must reach the agent first (docs/PROTOCOL.md, Sessions).
/// Sixteen sessions, so that agents' data connections accepted by the
/// other worker (handed over with their TLS state) are among them.
#[test]
fn bytes_sent_with_the_request_head_over_tls_reach_the_agent() {
    const LEN: usize = 100_000;
    let rig = Rig::start(false);
    let echo = Service::echo();
    let _agent = rig.agent("early-agent", Behaviour::Serve(echo.addr()));
    let control = rig.endpoint("early-control");
    let upgrade = [
        ("Upgrade", ringway::proto::UPGRADE_RELAY.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    let target = format!("{}early-agent", ringway::proto::PATH_CONNECT_PREFIX);
    for round in 0..16u64 {
        let payload = Prng::new(70 + round).bytes(LEN);
        let mut request = client::request_head(&control, "GET", &target, &upgrade);
        request.extend_from_slice(&payload);
        let (back_len, back_sha256) = block_on(async {
            let conn = client::dial(&control).await.expect("dial the gateway over TLS");
            let (head, early) = client::exchange(&conn, request).await.expect("request with payload");
            assert_eq!(head.status, 101, "round {round}");
            conn.shutdown_write().await.expect("half-close the session");
            compio::time::timeout(IO_TIMEOUT, receive_stream(&conn, early))
                .await
                .expect("the echo ends in time")
                .expect("read the echo")
        });
        assert_eq!(back_len, LEN, "round {round}: echoed byte count");
        assert!(
            back_sha256 == sha256(&payload),
            "round {round}: the echo differs from what was sent"
        );
    }
}
