//! The event log (`GWnnn.log`) of the real `ringway serve`: a session's
//! life line by line, and rotation, pruning and numbering across a
//! restart (docs/ADMIN.md is the spec).
//!
//! Waits are on events: the gateway's stderr line comes first, then the
//! file is polled, with a bound, until the line is there (its writer is a
//! thread of its own with no event to wait on).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, LogConfig, Prng, STAMP_LEN, Service,
    TestDir, assert_stamped_within, file_names, log_lines, log_raw_lines, spawn_agent_binary, spawn_control_binary,
    split_stamp, strings, unix_now,
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
        "Gateway stopped",
    ]));
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

#[test]
fn log_files_rotate_prune_and_keep_numbering_across_a_restart() {
    const AGENTS: usize = 60;
    let dir = TestDir::new("rotate");
    let mut conf = GatewayConfig::operated(&[KEY]);
    conf.admin = false;
    conf.log = Some(LogConfig {
        max_file_kb: 1,
        max_files: 2,
        ..LogConfig::default()
    });
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
    expected.push("Gateway stopped".into());
    gw.stop();

    let mut state = (1, 0);
    let placed = place(&expected, 1024, &mut state);
    assert_newest_two(&dir.log_dir(), &expected, &placed);

    // A restart appends to the newest file (or the next, if full), never
    // back at GW001.
    let gw = Gateway::start_in(&dir, &conf);
    let second_run = [gw.start_lines().to_vec(), strings(&["Gateway stopped"])].concat();
    gw.stop();
    let to = unix_now();
    let placed = [placed, place(&second_run, 1024, &mut state)].concat();
    let expected = [expected, second_run].concat();
    assert_newest_two(&dir.log_dir(), &expected, &placed);
    assert_stamped_within(&log_raw_lines(&dir.log_dir()), from, to, true);
}
