//! The event log (`GWnnn.log`) of the real `ringway serve`: a session's
//! life line by line, rotation, pruning and numbering across a restart,
//! and a flood of failed proofs summarised (docs/ADMIN.md is the spec).
//!
//! Waits are on events: the gateway's stderr line comes first, then the
//! file is polled, with a bound, until the line is there (its writer is a
//! thread of its own with no event to wait on).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Instant;

use ringway::auth::{self, GatewayKey};
use ringway::eventlog::REPEAT_WINDOW;
use socket2::{Domain, Socket, Type};

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, LogConfig, Prng, STAMP_LEN, Service,
    TestDir, assert_stamped_within, file_names, log_lines, log_raw_lines, log_texts, quiet_stop_lines,
    spawn_agent_binary, spawn_control_binary, split_stamp, strings, unix_now,
};

/// The gateway key every test uses.
const KEY: &str = "ops-key-alpha";
/// ringway's version, as the start line names it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------
// 1. The event log of a session's life.

#[test]
fn a_sessions_life_is_logged_line_by_line_in_gw001() {
    let dir = TestDir::new("life");
    let mut conf = GatewayConfig::operated(&[KEY]);
    // The default: local time.
    conf.log = Some(LogConfig {
        utc: None,
        ..LogConfig::default()
    });
    conf.admin = false;
    let from = unix_now();
    let gw = Gateway::start_in(&dir, &conf);
    let echo = Service::echo();

    // The real binaries, as operators run them.
    let mut agent = spawn_agent_binary(&gw.addr().to_string(), KEY, "pc1", echo.addr(), &[]);
    gw.wait_for_event("Client pc1 connected", EVENT_TIMEOUT);
    let gateway = gw.addr().to_string();
    let (mut control, local) = spawn_control_binary(&gateway, KEY, "ops", "pc1", &[]);

    let payload: Vec<u8> = Prng::new(7).bytes(100_000);
    let mut s = TcpStream::connect(local).expect("connect to the control's listener");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(&payload).expect("send through the session");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the echo");
    assert!(
        back == payload,
        "the echo differs ({} of {} bytes)",
        back.len(),
        payload.len()
    );
    gw.wait_for_event("Control ops disconnected from Client pc1", EVENT_TIMEOUT);
    control.kill();
    agent.kill();
    gw.wait_for_event("Client pc1 Disconnected", EVENT_TIMEOUT);
    let start_lines = gw.start_lines().to_vec();
    gw.stop();
    let to = unix_now();

    assert_eq!(file_names(&dir.log_dir()), ["GW001.log"]);
    let lines = log_lines(&dir.log_dir(), 1);
    assert_stamped_within(&lines, from, to, false);
    let texts: Vec<&str> = lines.iter().map(|l| split_stamp(l).1).collect();
    let mut expected = start_lines;
    expected.extend(strings(&[
        "Client pc1 connected",
        "Control ops connected to Client pc1",
        "Control ops disconnected from Client pc1",
        "Client pc1 Disconnected",
    ]));
    expected.extend(quiet_stop_lines());
    assert_eq!(texts, expected);
    assert!(expected[0].starts_with(&format!("ringway V{VERSION}, running on linux ")));
    assert!(expected[1].starts_with("Listening on port 127.0.0.1:"));
}

// ---------------------------------------------------------------------------
// 2. Rotation, pruning and numbering across a restart.

/// `Client rot-17 connected` → `Client rot-## connected`, so that lines
/// whose agents came in any order compare equal.
fn anonymize(text: &str) -> String {
    match text.strip_prefix("Client rot-") {
        Some(rest) if rest.len() > 2 && rest.as_bytes()[..2].iter().all(u8::is_ascii_digit) => {
            format!("Client rot-##{}", &rest[2..])
        }
        _ => text.to_string(),
    }
}

/// Which file each line goes to under the writer's rule: a line that
/// would take a non-empty file past `limit` bytes starts the next file.
/// `state` is (current number, its size), carried across runs.
fn place(lines: &[String], limit: usize, state: &mut (u64, usize)) -> Vec<u64> {
    lines
        .iter()
        .map(|text| {
            let len = STAMP_LEN + text.len() + 1;
            if state.1 > 0 && state.1 + len > limit {
                *state = (state.0 + 1, 0);
            }
            state.1 += len;
            state.0
        })
        .collect()
}

/// Asserts the folder holds exactly the newest two files of `placed`, each
/// with its lines (agent names anonymized), and no agent twice per kind.
fn assert_newest_two(dir: &Path, expected: &[String], placed: &[u64]) {
    let newest = *placed.last().expect("lines were placed");
    assert!(newest >= 4, "too few lines to rotate past GW003: {newest}");
    let keep = [newest - 1, newest];
    let names: Vec<String> = keep.iter().map(|n| format!("GW{n:03}.log")).collect();
    assert_eq!(file_names(dir), names, "only the newest two files remain");
    let mut agents = BTreeSet::new();
    for n in keep {
        let want: Vec<String> = expected
            .iter()
            .zip(placed)
            .filter(|(_, p)| **p == n)
            .map(|(t, _)| t.clone())
            .collect();
        let lines = log_lines(dir, n);
        let size: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(size <= 1024 || lines.len() == 1, "GW{n:03}.log holds {size} bytes");
        let got: Vec<String> = lines.iter().map(|l| split_stamp(l).1.to_string()).collect();
        for t in got.iter().filter(|t| t.starts_with("Client rot-")) {
            assert!(agents.insert(t.clone()), "{t:?} logged twice");
        }
        let got: Vec<String> = got.iter().map(|t| anonymize(t)).collect();
        assert_eq!(got, want, "GW{n:03}.log");
    }
}

/// A gateway config whose event log keeps two files of 1 KiB: small
/// enough to rotate and prune within a test.
fn two_small_files() -> GatewayConfig {
    let mut conf = GatewayConfig::operated(&[KEY]);
    conf.admin = false;
    conf.log = Some(LogConfig {
        max_file_kb: 1,
        max_files: 2,
        ..LogConfig::default()
    });
    conf
}

#[test]
fn log_files_rotate_prune_and_keep_numbering_across_a_restart() {
    const AGENTS: usize = 60;
    let dir = TestDir::new("rotate");
    let conf = two_small_files();
    let from = unix_now();

    let gw = Gateway::start_in(&dir, &conf);
    let names: Vec<String> = (0..AGENTS).map(|i| format!("rot-{i:02}")).collect();
    let eps = names
        .iter()
        .map(|n| (gw.endpoint(KEY, n), Behaviour::IgnoreOpen))
        .collect();
    let (agents, registered) = AgentThread::start_many(eps);
    for (name, r) in names.iter().zip(registered) {
        r.unwrap_or_else(|e| panic!("{name} failed to register: {e}"));
        gw.wait_for_event(&format!("Client {name} connected"), EVENT_TIMEOUT);
    }
    agents.stop();
    for name in &names {
        gw.wait_for_event(&format!("Client {name} Disconnected"), EVENT_TIMEOUT);
    }
    let mut expected = gw.start_lines().to_vec();
    expected.extend((0..AGENTS).map(|_| "Client rot-## connected".to_string()));
    expected.extend((0..AGENTS).map(|_| "Client rot-## Disconnected".to_string()));
    expected.extend(quiet_stop_lines());
    gw.stop();

    let mut state = (1, 0);
    let placed = place(&expected, 1024, &mut state);
    assert_newest_two(&dir.log_dir(), &expected, &placed);

    // A restart appends to the newest file (or the next, if full), never
    // back at GW001.
    let gw = Gateway::start_in(&dir, &conf);
    let second_run = [gw.start_lines().to_vec(), quiet_stop_lines()].concat();
    gw.stop();
    let to = unix_now();
    let placed = [placed, place(&second_run, 1024, &mut state)].concat();
    let expected = [expected, second_run].concat();
    assert_newest_two(&dir.log_dir(), &expected, &placed);
    assert_stamped_within(&log_raw_lines(&dir.log_dir()), from, to, true);
}

// ---------------------------------------------------------------------------
// 3. A flood of failed proofs is summarised, not written line by line.

/// The flooding peer: another loopback address than the agent's, so its
/// failures are a source of their own.
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Sends `n` browse requests from [`FLOODER`], each on a connection of its
/// own and signed with a key the gateway does not have, over `threads`
/// threads; returns each answer's status line.
fn flood_bad_proofs(gateway: SocketAddr, n: usize, threads: usize) -> Vec<String> {
    let wrong = GatewayKey::new("not-the-gateway-key");
    let target = "/v1/clients";
    // An unknown key fails whatever it is bound to; the gateway says so
    // without first asking for its boot id.
    let req = auth::Signed {
        method: "GET",
        target,
        identity: "",
        binding: auth::Binding::Boot(None),
    };
    let proof = auth::sign(&wrong, &req, auth::unix_now(), auth::new_nonce());
    let request = format!("GET {target} HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: {proof}\r\n\r\n");
    let per_thread = n.div_ceil(threads);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let request = request.clone();
            let count = per_thread.min(n.saturating_sub(t * per_thread));
            thread::spawn(move || (0..count).map(|_| bad_request(gateway, &request)).collect::<Vec<_>>())
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("a flooding thread"))
        .collect()
}

/// One request from [`FLOODER`]; the answer's status line.
fn bad_request(gateway: SocketAddr, request: &str) -> String {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let from = SocketAddr::from((FLOODER, 0));
    socket.bind(&from.into()).expect("bind 127.0.0.2");
    socket
        .connect_timeout(&gateway.into(), IO_TIMEOUT)
        .expect("connect to the gateway");
    let mut s = TcpStream::from(socket);
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(request.as_bytes()).expect("send the request");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_flood_of_bad_proofs_cannot_rotate_out_real_events() {
    // What rotated the real line out of a 300 KB log before (issue 9).
    const BAD: usize = 3200;
    let dir = TestDir::new("flood");
    // Ten or so lines in all: a line per failure would rotate everything
    // else out 150 times over.
    let mut conf = two_small_files();
    // Every bad proof must reach the proof check: the per-source limits
    // (tests/sources.rs) would refuse most of this flood before it.
    conf.limits_extra.extend([
        "new_connections_per_source_per_sec = 0".into(),
        "max_unauthenticated_per_source = 65536".into(),
    ]);
    let gw = Gateway::start_in(&dir, &conf);
    let echo = Service::echo();
    let agent = gw.serving_agent(KEY, "pc1", echo.addr());

    let began = Instant::now();
    let statuses = flood_bad_proofs(gw.addr(), BAD, 8);
    let took = began.elapsed();
    let refused = statuses.iter().filter(|s| *s == "HTTP/1.1 401 Unauthorized").count();
    assert_eq!((statuses.len(), refused), (BAD, BAD), "every bad proof gets a 401");
    // All in one window, or the count below is split over two.
    assert!(took < REPEAT_WINDOW, "the burst took {took:?}, longer than one window");

    let first = "Security check failed for Control browse: unknown_key. Terminating connection from 127.0.0.2";
    let summary = format!("{first} … and 3,199 more from 127.0.0.2 in the last 10 s");
    // Written when the window closes, with no further event to wake it.
    gw.wait_for_event(&summary, REPEAT_WINDOW + EVENT_TIMEOUT);
    let failures: Vec<String> = gw
        .events()
        .into_iter()
        .filter(|e| e.starts_with("Security check failed"))
        .collect();
    assert_eq!(failures, [first.to_string(), summary.clone()], "stderr");

    agent.stop();
    gw.wait_for_event("Client pc1 Disconnected", EVENT_TIMEOUT);
    let mut expected = gw.start_lines().to_vec();
    gw.stop();
    expected.extend(strings(&[
        "Client pc1 connected",
        first,
        &summary,
        "Client pc1 Disconnected",
    ]));
    expected.extend(quiet_stop_lines());
    assert_eq!(log_texts(&dir.log_dir()), expected);
}
