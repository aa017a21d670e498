//! The admin listener of the real `ringway serve`: the console page (with
//! a hostile agent name, and in headless Chromium), Prometheus /metrics,
//! the JSON API and `ringway status` (docs/ADMIN.md is the spec).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use ringway::auth::KeyId;
use ringway::timefmt::rfc3339;
use serde_json::Value;

use common::{
    AgentThread, Behaviour, COMMAND_TIMEOUT, DEFAULT_WORKERS as WORKERS, EVENT_TIMEOUT, Finished, Gateway,
    GatewayConfig, Prng, Service, StdSession, TestDir, echo_round_trip, log_raw_lines, names, parse_exposition,
    poll_until, refusal, run_bounded,
};

/// The gateway key every test uses.
const KEY: &str = "ops-key-alpha";
/// The binary under test.
const RINGWAY: &str = env!("CARGO_BIN_EXE_ringway");
/// Where CI installs Chromium (`apt-get install -y chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";

// ---------------------------------------------------------------------------
// 1. A hostile agent name.

#[test]
fn a_hostile_agent_name_is_escaped_in_the_console_and_one_line_in_the_log() {
    const NAME: &str = "<script>alert(1)</script>\r\nGW forged";
    const SHOWN: &str = "<script>alert(1)</script>??GW forged";
    let dir = TestDir::new("hostile");
    let gw = Gateway::start_in(&dir, &GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    // The library percent-encodes the name on the wire.
    let hostile = AgentThread::start(gw.endpoint(KEY, NAME), Behaviour::Serve(echo.addr()))
        .unwrap_or_else(|e| panic!("the hostile agent failed to register: {e}"));
    gw.wait_for_event(&format!("Client {SHOWN} connected"), EVENT_TIMEOUT);

    let page = gw.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let row = "<tr class=\"client\"><td>&lt;script&gt;alert(1)&lt;/script&gt;\r\nGW forged</td>";
    assert!(page.body.contains(row), "no escaped row in:\n{}", page.body);
    assert!(!page.body.contains("<script"), "a raw <script in:\n{}", page.body);
    let clients = gw.get_json("/api/clients");
    assert_eq!(clients[0]["name"], NAME, "JSON carries the name as it is");
    assert_eq!(names(&gw.endpoint(KEY, "ops")), [NAME]);

    // On stderr too, one line.
    assert!(gw.lines().iter().all(|l| !l.starts_with("GW forged")));
    hostile.stop();
    gw.wait_for_event(&format!("Client {SHOWN} Disconnected"), EVENT_TIMEOUT);

    let mut expected = gw.start_lines().to_vec();
    expected.extend([
        format!("Client {SHOWN} connected"),
        format!("Client {SHOWN} Disconnected"),
    ]);
    assert_eq!(gw.wait_log_len(expected.len()), expected);
    let raw = log_raw_lines(&dir.log_dir());
    assert_eq!(raw.iter().filter(|l| l.contains("GW forged")).count(), 2);
    assert!(raw.iter().all(|l| !l.starts_with("GW forged")), "{raw:#?}");
}

// ---------------------------------------------------------------------------
// 2. The console in a real browser.

/// How Chromium's log (`--enable-logging=stderr`) marks what the page's
/// console shows: Content-Security-Policy violations and failed loads.
const PAGE_CONSOLE: &str = ":CONSOLE";

/// Chromium, headless, with a fresh profile in `dir`, on `args`; asserts
/// that the page logged nothing to its console (no CSP violation, no
/// stylesheet that failed to load).
fn chromium(dir: &Path, profile: &str, args: &[String]) -> Finished {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install it with `apt-get update && apt-get install -y chromium`"
    );
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", dir.join(profile).display()))
    .args(args);
    let done = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    assert_eq!(done.code, Some(0), "chromium failed: {}", done.stderr);
    let complaints: Vec<&str> = done.stderr.lines().filter(|l| l.contains(PAGE_CONSOLE)).collect();
    assert!(complaints.is_empty(), "the console page complained: {complaints:#?}");
    done
}

#[test]
fn the_console_renders_in_headless_chromium() {
    let dir = TestDir::new("chromium");
    let gw = Gateway::start_in(&dir, &GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(KEY, "pc1", echo.addr());
    let url = format!("http://{}/", gw.admin());

    let dom = chromium(dir.path(), "profile-dom", &["--dump-dom".into(), url.clone()]).stdout;
    assert!(
        dom.contains("<tr class=\"client\"><td>pc1</td>"),
        "no pc1 row in:\n{dom}"
    );
    assert!(
        dom.contains("id=\"clients-connected\">1<"),
        "no client count in:\n{dom}"
    );
    assert!(dom.contains("id=\"max-clients\">unlimited<"), "no maximum in:\n{dom}");
    assert!(dom.contains("id=\"sessions-active\">0<"), "no session count in:\n{dom}");

    let png = dir.path().join("console.png");
    let shot = format!("--screenshot={}", png.display());
    chromium(dir.path(), "profile-png", &[shot, "--window-size=1280,800".into(), url]);
    let bytes = fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.len() > 1024, "a {}-byte screenshot", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG magic");
    assert_eq!(&bytes[12..16], b"IHDR");
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((dim(16), dim(20)), (1280, 800), "screenshot size");
}

// ---------------------------------------------------------------------------
// 3. Metrics.

/// The families docs/ADMIN.md lists, with their types.
const FAMILIES: [(&str, &str); 32] = [
    ("ringway_role", "gauge"),
    ("ringway_standby", "gauge"),
    ("ringway_workers", "gauge"),
    ("ringway_workers_answered", "gauge"),
    ("ringway_agents_connected", "gauge"),
    ("ringway_agents_licensed_in_use", "gauge"),
    ("ringway_agents_by_key", "gauge"),
    ("ringway_sessions_by_key", "gauge"),
    ("ringway_max_clients", "gauge"),
    ("ringway_sessions_active", "gauge"),
    ("ringway_sessions_pending", "gauge"),
    ("ringway_sessions_total", "counter"),
    ("ringway_relay_bytes_total", "counter"),
    ("ringway_connections_accepted_total", "counter"),
    ("ringway_connections_open", "gauge"),
    ("ringway_connections_max", "gauge"),
    ("ringway_registrations_total", "counter"),
    ("ringway_heartbeat_expired_total", "counter"),
    ("ringway_tls_handshakes_total", "counter"),
    ("ringway_tls_agent_channels_compact_total", "counter"),
    ("ringway_tls_handshake_failures_total", "counter"),
    ("ringway_auth_failures_total", "counter"),
    ("ringway_rejected_total", "counter"),
    ("ringway_source_refusals_total", "counter"),
    ("ringway_sign_ins_total", "counter"),
    ("ringway_ticket_refusals_total", "counter"),
    ("ringway_approvals_total", "counter"),
    ("ringway_key_quota_refusals_total", "counter"),
    ("ringway_pin_refusals_total", "counter"),
    ("ringway_health_probes_total", "counter"),
    ("ringway_heap_trims_total", "counter"),
    ("ringway_heap_trim_microseconds_total", "counter"),
];

#[test]
fn the_prometheus_parser_refuses_malformed_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{w=\"0\",d=\"x\\\"y\"} 3\na_total{w=\"1\"} 4.5\n# TYPE b gauge\nb 1\n";
    let e = parse_exposition(good).expect("valid text");
    assert_eq!(e.sum("a_total", &[]), 7.5);
    assert_eq!(e.sum("a_total", &[("d", "x\"y")]), 3.0);
    let bad = [
        ("no newline at the end", "# TYPE b gauge\nb 1"),
        ("no TYPE", "c 1\n"),
        ("a value that is not a number", "# TYPE b gauge\nb one\n"),
        ("no value", "# TYPE b gauge\nb\n"),
        ("a broken label", "# TYPE b gauge\nb{w=0} 1\n"),
        ("an unterminated label", "# TYPE b gauge\nb{w=\"0} 1\n"),
        ("a duplicate sample", "# TYPE b gauge\nb 1\nb 2\n"),
        ("a duplicate TYPE", "# TYPE b gauge\n# TYPE b gauge\nb 1\n"),
        ("an unknown type", "# TYPE b meter\nb 1\n"),
        (
            "a split family",
            "# TYPE b gauge\nb{w=\"0\"} 1\n# TYPE c gauge\nc 1\nb{w=\"1\"} 1\n",
        ),
    ];
    for (why, text) in bad {
        assert!(parse_exposition(text).is_err(), "accepted {why}: {text:?}");
    }
}

#[test]
fn metrics_parse_and_count_sessions_bytes_and_auth_failures() {
    const N: usize = 300_000;
    let dir = TestDir::new("metrics");
    let gw = Gateway::start_in(&dir, &GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(KEY, "pc1", echo.addr());

    let m0 = gw.metrics();
    let declared: Vec<(&str, &str)> = m0.types.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut documented = FAMILIES.to_vec();
    documented.sort();
    assert_eq!(declared, documented, "the families and types docs/ADMIN.md lists");
    let per_worker: Vec<Vec<(String, String)>> = (0..WORKERS).map(|w| vec![("worker".into(), w.to_string())]).collect();
    for family in [
        "ringway_agents_connected",
        "ringway_sessions_total",
        "ringway_registrations_total",
    ] {
        assert_eq!(m0.label_sets(family), per_worker, "{family}");
    }
    assert_eq!(m0.sum("ringway_workers", &[]), WORKERS as f64);
    assert_eq!(m0.sum("ringway_workers_answered", &[]), WORKERS as f64);
    assert_eq!(m0.sum("ringway_agents_connected", &[]), 1.0);
    assert_eq!(m0.sum("ringway_agents_licensed_in_use", &[]), 1.0);
    assert_eq!(m0.sum("ringway_agents_by_key", &[("key", "key1")]), 1.0);
    assert_eq!(
        m0.label_sets("ringway_sessions_by_key"),
        Vec::<Vec<(String, String)>>::new()
    );
    assert_eq!(m0.sum("ringway_max_clients", &[]), 0.0);
    assert_eq!(m0.sum("ringway_registrations_total", &[]), 1.0);
    assert_eq!(m0.sum("ringway_sessions_active", &[]), 0.0);
    // The agent's channel is the one connection open.
    assert_eq!(m0.sum("ringway_connections_open", &[]), 1.0);
    assert!(m0.sum("ringway_connections_max", &[]) >= 64.0);

    let payload = Prng::new(6).bytes(N);
    echo_round_trip(&gw.endpoint(KEY, "ops"), "pc1", &payload);
    gw.wait_for_event("Control ops disconnected from Client pc1", EVENT_TIMEOUT);
    let m1 = gw.metrics();
    let delta = |name: &str, filter: &[(&str, &str)]| m1.sum(name, filter) - m0.sum(name, filter);
    assert_eq!(delta("ringway_sessions_total", &[]), 1.0);
    assert_eq!(
        delta("ringway_relay_bytes_total", &[("direction", "to_agent")]),
        N as f64
    );
    assert_eq!(
        delta("ringway_relay_bytes_total", &[("direction", "to_control")]),
        N as f64
    );
    // The control's connection and the agent's data connection.
    assert_eq!(delta("ringway_connections_accepted_total", &[]), 2.0);
    assert_eq!(delta("ringway_registrations_total", &[]), 0.0);
    assert_eq!(m1.sum("ringway_sessions_active", &[]), 0.0);
    assert_eq!(m1.sum("ringway_sessions_pending", &[]), 0.0);
    // The session's two connections gave their shares back.
    assert_eq!(m1.sum("ringway_connections_open", &[]), 1.0);
    // The control knew no boot id yet: its connect was signed again once.
    assert_eq!(delta("ringway_auth_failures_total", &[]), 1.0);
    assert_eq!(delta("ringway_auth_failures_total", &[("reason", "stale_boot")]), 1.0);

    let (status, _) = refusal(common::list(&gw.endpoint("not-the-key-1", "intruder")));
    assert_eq!(status, 401);
    gw.wait_for_event(
        "Security check failed for Control browse: unknown_key. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    let m2 = gw.metrics();
    let delta = |name: &str, filter: &[(&str, &str)]| m2.sum(name, filter) - m1.sum(name, filter);
    assert_eq!(delta("ringway_auth_failures_total", &[]), 1.0);
    assert_eq!(delta("ringway_auth_failures_total", &[("reason", "unknown_key")]), 1.0);
    assert_eq!(delta("ringway_rejected_total", &[("status", "401")]), 1.0);
    assert_eq!(delta("ringway_sessions_total", &[]), 0.0);
}

// ---------------------------------------------------------------------------
// 4. The JSON API and `ringway status`.

/// The keys of a JSON object, sorted.
fn keys_of(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// A JSON string field.
fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// A JSON unsigned field.
fn number(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count in {v}"))
}

#[test]
fn the_json_api_and_status_show_one_agent_and_one_session() {
    let dir = TestDir::new("api");
    let mut conf = GatewayConfig::operated(&[KEY]);
    // No poll during the test, so last_poll reads the same everywhere.
    conf.cmpi_secs = Some(3600);
    let gw = Gateway::start_in(&dir, &conf);
    let service = Service::manual();
    let from = rfc3339(SystemTime::now());
    let _pc1 = gw.serving_agent(KEY, "pc1", service.addr());
    let (
        StdSession {
            stream: mut control,
            early,
        },
        mut service_end,
    ) = gw.session(KEY, "ops", "pc1", &service);
    assert!(early.is_empty());
    control.write_all(&[b'a'; 1000]).expect("control sends");
    let mut got = vec![0u8; 1000];
    service_end.read_exact(&mut got).expect("the service receives");
    service_end.write_all(&[b'b'; 500]).expect("the service answers");
    let mut got = vec![0u8; 500];
    control.read_exact(&mut got).expect("the control receives");
    // A relay counts a chunk once its write completes: no event says so.
    let sessions = poll_until(EVENT_TIMEOUT, || {
        let v = gw.get_json("/api/sessions");
        let s = &v[0];
        (s["bytes_to_agent"] == 1000u64 && s["bytes_to_control"] == 500u64).then_some(v)
    })
    .expect("the session's byte counts reach 1000 and 500");
    let clients = gw.get_json("/api/clients");
    let to = rfc3339(SystemTime::now());

    let clients = clients.as_array().expect("an array of clients");
    assert_eq!(clients.len(), 1);
    let c = &clients[0];
    let client_fields = [
        "connected_since",
        "external_addr",
        "key",
        "last_poll",
        "local_ip",
        "mac",
        "name",
        "os",
        "sessions",
        "worker",
    ];
    assert_eq!(keys_of(c), client_fields);
    // The plain `keys = [...]` list names its keys by position.
    let kid = "key1".to_string();
    let wire_id = KeyId::of(KEY).to_string();
    assert_eq!(text(c, "name"), "pc1");
    assert_eq!(text(c, "local_ip"), "127.0.0.1");
    assert_eq!(text(c, "mac"), "02:00:00:00:00:01");
    assert_eq!(text(c, "os"), "ringway integration test");
    assert_eq!(text(c, "key"), kid);
    assert!(!c.to_string().contains(KEY), "the key itself leaks: {c}");
    assert!(!c.to_string().contains(&wire_id), "the key's hash leaks: {c}");
    assert_eq!(number(c, "sessions"), 1);
    let external: SocketAddr = text(c, "external_addr").parse().expect("external_addr is ip:port");
    let channel = common::tcp_table()
        .into_iter()
        .any(|e| e.local == external && e.remote == gw.addr() && e.state == 1);
    assert!(channel, "no agent connection from {external} to {}", gw.addr());
    let since = text(c, "connected_since");
    assert!(
        from.as_str() <= since && since <= to.as_str(),
        "{since} not in {from}..{to}"
    );
    assert_eq!(text(c, "last_poll"), since, "no poll yet");
    let worker = number(c, "worker");
    assert!(worker < WORKERS as u64);

    let sessions = sessions.as_array().expect("an array of sessions");
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    let session_fields = [
        "agent",
        "bytes_to_agent",
        "bytes_to_control",
        "control",
        "key",
        "operator",
        "started",
        "worker",
    ];
    assert_eq!(keys_of(s), session_fields);
    assert_eq!(text(s, "control"), "ops");
    assert_eq!(s["operator"], Value::Null);
    assert_eq!(text(s, "agent"), "pc1");
    assert_eq!(text(s, "key"), kid);
    let started = text(s, "started");
    assert!(
        since <= started && started <= to.as_str(),
        "{started} not in {since}..{to}"
    );
    let session_worker = number(s, "worker");
    let metrics = gw.metrics();
    let on = |name: &str, w: u64| metrics.sum(name, &[("worker", &w.to_string())]);
    assert_eq!(on("ringway_agents_connected", worker), 1.0, "the agent's worker");
    assert_eq!(
        on("ringway_sessions_active", session_worker),
        1.0,
        "the session's worker"
    );

    let mut cmd = Command::new(RINGWAY);
    cmd.arg("status").arg("--admin").arg(gw.admin().to_string());
    let status = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    assert_eq!(
        (status.code, status.stderr.as_str()),
        (Some(0), ""),
        "{}",
        status.stdout
    );
    let all: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(all[..2], ["Role: primary", ""], "{}", status.stdout);
    let lines = &all[2..];
    assert_eq!(lines.len(), 7, "{}", status.stdout);
    assert_eq!(lines[0], "Clients (1)");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header[..2], ["NAME", "LOCAL"]);
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    let (worker, session_worker) = (worker.to_string(), session_worker.to_string());
    let expect_row = [
        "pc1",
        "127.0.0.1",
        "02:00:00:00:00:01",
        text(c, "external_addr"),
        kid.as_str(),
        worker.as_str(),
        since,
        since,
        "1",
    ];
    assert_eq!(row, expect_row);
    assert_eq!(lines[3], "");
    assert_eq!(lines[4], "Active sessions (1)");
    assert!(lines[5].starts_with("CONTROL "), "{}", lines[5]);
    let row: Vec<&str> = lines[6].split_whitespace().collect();
    assert_eq!(
        row,
        ["ops", "-", "pc1", started, "1000", "500", session_worker.as_str()]
    );
}

// ---------------------------------------------------------------------------
// 5. `ringway status` and a hostile agent name.

#[test]
fn status_shows_a_hostile_agent_name_on_one_row_without_control_characters() {
    const NAME: &str = "evil\r\nfake-row 10.6.6.6 \u{1b}]0;owned\u{7}";
    let dir = TestDir::new("status-hostile");
    let gw = Gateway::start_in(&dir, &GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    let _evil = AgentThread::start(gw.endpoint(KEY, NAME), Behaviour::Serve(echo.addr()))
        .unwrap_or_else(|e| panic!("the hostile agent failed to register: {e}"));
    gw.wait_for_event("Client evil??fake-row 10.6.6.6 ?]0;owned? connected", EVENT_TIMEOUT);
    let mut cmd = Command::new(RINGWAY);
    cmd.arg("status").arg("--admin").arg(gw.admin().to_string());
    let status = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let out = &status.stdout;
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reach the terminal: {out:?}"
    );
    let lines: Vec<&str> = out.lines().skip(2).collect();
    // Role and a blank line, then Clients (1), header, one row, blank,
    // Active sessions (0), header.
    assert_eq!(out.lines().next(), Some("Role: primary"), "{out:?}");
    assert_eq!(lines.len(), 6, "one row per agent: {out:?}");
    assert!(lines[2].starts_with("evil") && lines[2].contains("fake-row"), "{out:?}");
}
