//! TLS on the gateway checked with real outside tools: `curl` browses with
//! a bearer key, `openssl s_client` probes protocol versions and reads the
//! served certificate across a live swap (by SIGHUP, with a session of the
//! `ringway` binaries kept flowing). tls_relay.rs has the library and
//! binary clients relaying through TLS.
//!
//! Every certificate comes from the real `ringway gen-cert`, written into
//! the test's own temporary folder.
//!
//! Outside tools: `curl` and `openssl` (Debian packages `curl`, `openssl`).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use common::{
    Behaviour, COMMAND_TIMEOUT, EVENT_TIMEOUT, Finished, Gateway, IO_TIMEOUT, Prng, Service, TestDir, TlsRig, gen_cert,
    json_names, run_bounded, spawn_agent_binary, spawn_control_binary, tls_config,
};

use ringway::eventlog::REPEAT_WINDOW;

const KEY: &str = "Testing1";

// ---------------------------------------------------------------------------
// Outside tools.

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

/// `curl` against the gateway; its status, content type and body. The
/// first argument `-q` keeps any .curlrc out; `--noproxy` keeps a CI
/// proxy setting from routing loopback traffic.
fn curl(args: &[&str], url: &str) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", "20"])
        .args(args)
        .args(["-w", "\n%{http_code} %{content_type}", url]);
    let output = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    let stdout = &output.stdout;
    assert!(
        output.success(),
        "curl {url} failed ({:?}): {}",
        output.code,
        output.stderr
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
fn s_client(addr: SocketAddr, ca: &Path, extra: &[&str]) -> Finished {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1"])
        .args(extra);
    run_bounded(cmd, b"", COMMAND_TIMEOUT)
}

/// The serial of the certificate the gateway serves now, as `openssl x509
/// -serial` prints it, from a new handshake verified against `ca`.
fn served_serial(addr: SocketAddr, ca: &Path) -> String {
    let hello = s_client(addr, ca, &[]);
    let stdout = &hello.stdout;
    assert!(hello.success(), "s_client failed: {}", hello.stderr);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "s_client stdout:\n{stdout}"
    );
    pem_serial(hello.stdout.as_bytes())
}

/// The serial of the first certificate in `pem` (s_client prints the
/// served one as PEM; a cert.pem starts with it).
fn pem_serial(pem: &[u8]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-serial"]);
    let x509 = run_bounded(cmd, pem, COMMAND_TIMEOUT);
    assert!(x509.success(), "x509 failed: {}", x509.stderr);
    x509.stdout.trim().to_string()
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn curl_browses_with_a_bearer_key_over_https_only() {
    let rig = TlsRig::start(KEY, false);
    let gw = &rig.gw;
    let _agent = rig.agent("curl-agent", Behaviour::IgnoreOpen);
    let ca_arg = rig.ca().display().to_string();
    let bearer = format!("Authorization: Bearer {KEY}");
    let url = format!("https://127.0.0.1:{}/v1/clients", gw.addr().port());

    let (status, content_type, body) = curl(&["--cacert", &ca_arg, "-H", &bearer], &url);
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json"),
        "body {body:?}"
    );
    assert_eq!(json_names(&body), vec!["curl-agent"]);

    let plain = format!("http://127.0.0.1:{}/v1/clients", gw.addr().port());
    let (status, content_type, body) = curl(&["-H", &bearer], &plain);
    assert_eq!((status, content_type.as_str()), (401, "text/plain; charset=utf-8"));
    assert_eq!(
        body,
        "bearer keys are accepted over TLS (https) only; over plain HTTP prove the key\n"
    );

    let wrong = "Authorization: Bearer Wrong-key-1";
    let (status, _, body) = curl(&["--cacert", &ca_arg, "-H", wrong], &url);
    assert_eq!((status, body.as_str()), (401, "gateway key proof refused\n"));

    // One source: the first refusal is written, the second counted and
    // summed when the window closes.
    let plain = "Gateway key key1 was sent in clear over plain HTTP from 127.0.0.1: treat it as exposed and replace it";
    let wrong = "Security check failed for Control browse: unknown_key. Terminating connection from 127.0.0.1 \
                 … and 1 more from 127.0.0.1 in the last 10 s";
    gw.wait_for_event(wrong, REPEAT_WINDOW + EVENT_TIMEOUT);
    assert_eq!(
        (gw.count_events(plain), gw.count_events(wrong)),
        (1, 1),
        "one per refused curl"
    );
}

#[test]
fn openssl_handshakes_with_tls_1_2_and_1_3_but_not_1_1() {
    let rig = TlsRig::start(KEY, false);
    let (gw, ca) = (&rig.gw, rig.ca());
    const DONE: &str = "ringway_tls_handshakes_total";
    const FAILED: &str = "ringway_tls_handshake_failures_total";
    assert_eq!((gw.metric(DONE), gw.metric(FAILED)), (0, 0));

    // Security level 0 lets this openssl offer TLS 1.1 whatever the
    // distribution's defaults, so the refusal must come from the gateway:
    // its alert (40, handshake_failure) is what s_client reports.
    let old = s_client(gw.addr(), &ca, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    let (stdout, stderr) = (&old.stdout, &old.stderr);
    assert!(!old.success(), "TLS 1.1 handshake succeeded:\n{stdout}");
    assert!(
        stdout.contains("New, (NONE), Cipher is (NONE)"),
        "s_client stdout:\n{stdout}"
    );
    assert!(stderr.contains("SSL alert number 40"), "s_client stderr:\n{stderr}");
    gw.wait_metric(FAILED, 1);

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let hello = s_client(gw.addr(), &ca, &[flag, "-alpn", "http/1.1"]);
        let stdout = &hello.stdout;
        assert!(
            hello.success(),
            "{version} handshake failed ({:?}): {}\n{stdout}",
            hello.code,
            hello.stderr
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
    let dir = TestDir::new("swap");
    let (a, b, live) = (dir.join("a"), dir.join("b"), dir.join("live"));
    gen_cert(&a);
    gen_cert(&b);
    fs::create_dir_all(&live).expect("create the live cert dir");
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    fs::copy(a.join("cert.pem"), &cert).expect("install cert A");
    fs::copy(a.join("key.pem"), &key).expect("install key A");
    let serial_of = |dir: &Path| pem_serial(&fs::read(dir.join("cert.pem")).expect("read cert.pem"));
    let (serial_a, serial_b) = (serial_of(&a), serial_of(&b));
    assert_ne!(serial_a, serial_b, "two gen-cert runs gave the same serial");

    let gw = Gateway::start_in(&dir, &tls_config(KEY, &live, false));
    let echo = Service::echo();
    let (https, ca_a) = (gw.https(), a.join("ca.pem").display().to_string());
    let trust_a = ["--ca-file", ca_a.as_str()];
    let _agent = spawn_agent_binary(&https, KEY, "swap-agent", echo.addr(), &trust_a);
    gw.wait_for_event("Client swap-agent connected", EVENT_TIMEOUT);
    let (_control, listen) = spawn_control_binary(&https, KEY, "swap-control", "swap-agent", &trust_a);
    let session = TcpStream::connect(listen).expect("connect to the control's listener");
    session.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    gw.wait_for_event("Control swap-control connected to Client swap-agent", EVENT_TIMEOUT);
    let mut prng = Prng::new(30);
    echo_exact(&session, &prng.bytes(256 * 1024));
    assert_eq!(served_serial(gw.addr(), &a.join("ca.pem")), serial_a);

    // Swap in B and reload.
    fs::copy(b.join("cert.pem"), &cert).expect("install cert B");
    fs::copy(b.join("key.pem"), &key).expect("install key B");
    gw.sighup();
    gw.wait_for_event("Reloading configuration", EVENT_TIMEOUT);
    // That event comes before the workers are sent the new config; the
    // SIGHUP line comes after it was queued to every worker, and the
    // snapshot behind it in each queue proves it was applied.
    gw.wait_for_line("SIGHUP: configuration reloaded", EVENT_TIMEOUT);
    gw.sync_workers();
    let reply = gw.get("/api/sessions");
    assert_eq!(reply.status, 200);
    let sessions: serde_json::Value = serde_json::from_str(&reply.body).expect("session list JSON");
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

    assert_eq!(served_serial(gw.addr(), &b.join("ca.pem")), serial_b);
    echo_exact(&session, &prng.bytes(256 * 1024));

    // A corrupt certificate refuses the whole reload; B stays in service.
    fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nthis is not base64 !!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write a corrupt cert.pem");
    gw.sighup();
    let rejected = gw.wait_for_event_prefix("Reload rejected - ", EVENT_TIMEOUT);
    assert!(
        rejected.contains(&cert.display().to_string()) && rejected.ends_with("; the running configuration stays"),
        "the rejection names the file: {rejected:?}"
    );
    assert_eq!(served_serial(gw.addr(), &b.join("ca.pem")), serial_b);
    echo_exact(&session, &prng.bytes(256 * 1024));

    // So does a pair that does not fit (A's certificate, B's key): what an
    // operator copying one file at a time may have on disk.
    fs::copy(a.join("cert.pem"), &cert).expect("install cert A over the corrupt one");
    gw.sighup();
    let mismatch = gw.wait_for_line("do not fit together", EVENT_TIMEOUT);
    assert!(
        mismatch.contains("ringway::event] Reload rejected - ")
            && mismatch.ends_with("; the running configuration stays"),
        "the first line saying so is the rejection event: {mismatch:?}"
    );
    assert_eq!(served_serial(gw.addr(), &b.join("ca.pem")), serial_b);
    assert_eq!(
        gw.count_events("Reloading configuration"),
        1,
        "neither bad reload began"
    );
    echo_exact(&session, &prng.bytes(256 * 1024));

    // The session still ends cleanly: half-close, the echo half-closes back.
    session.shutdown(Shutdown::Write).expect("half-close the session");
    let mut rest = Vec::new();
    (&session).read_to_end(&mut rest).expect("read to EOF");
    assert_eq!(rest.len(), 0, "nothing after the last echo");
    gw.wait_for_event(
        "Control swap-control disconnected from Client swap-agent",
        EVENT_TIMEOUT,
    );
}

/// TLS budgets (hole 13): the handshake and the request head have
/// deadlines of their own. A client whose handshake is slow still gets
/// the whole `head_timeout_secs` after it for its head; when one deadline
/// covered both, this head (2.5 s after the accept, 1 s after the
/// handshake, with a 2 s head deadline) was answered 408.
#[test]
fn a_slow_handshake_does_not_eat_the_head_deadline() {
    let dir = TestDir::new("tls-budgets");
    let certs = dir.join("certs");
    gen_cert(&certs);
    let mut config = tls_config(KEY, &certs, false);
    config.head_timeout_secs = Some(2);
    config.limits_extra.push("handshake_timeout_secs = 4".to_string());
    let gw = Gateway::start_in(&dir, &config);

    let trust = ringway::tls::Trust::CaFile(certs.join("ca.pem"));
    let client = ringway::tls::client_config(&trust).expect("client config");
    let name = "localhost".try_into().expect("server name");
    let mut tls = rustls::ClientConnection::new(client, name).expect("client connection");
    let mut tcp = TcpStream::connect(gw.addr()).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");

    // The ClientHello in two halves 1.5 s apart: a slow link.
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).expect("client hello");
    let (first, rest) = hello.split_at(hello.len() / 2);
    tcp.write_all(first).expect("first half");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    tcp.write_all(rest).expect("second half");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("handshake");
    }

    // Past where one shared 2 s deadline would have ended, well inside
    // the head's own.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    let head = format!("GET /v1/clients HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("answer");
        assert!(n > 0, "closed before an answer: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 "), "answer: {text:?}");
}
