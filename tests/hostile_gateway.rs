//! What a hostile or broken gateway sends a client (issue 9, hole 3): a
//! CMPI of 2^64-1 in the registration answer or a `CMPI` frame killed
//! `ringway agent` ("overflow when multiplying duration by scalar"); a
//! zero CMPI was refused or ignored; a `Content-Length` past 64 bits was
//! reported as missing; a flood of `OPEN`s made the agent start a session
//! for each; texts in a refusal or a client list reached the terminal
//! as sent. Each test runs the real binary against a fake gateway written
//! here (a std listener on 127.0.0.1:0 speaking just enough of the
//! protocol) and asserts what the client sends or prints.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

use common::{
    COMMAND_TIMEOUT, EVENT_TIMEOUT, Finished, LoggedChild, Service, closed_port, ringway_client, run_bounded,
    spawn_agent_binary, wait_readable,
};
use ringway::client::MAX_BODY_BYTES;
use ringway::client::ranges::MAX_CMPI;

const KEY: &str = "Testing1";

/// The CMPI that killed the agent.
const HUGE: &str = "18446744073709551615";

/// A fake gateway: a listener on loopback that accepts one connection at
/// a time and reads its request head.
struct FakeGateway {
    listener: TcpListener,
}

impl FakeGateway {
    fn new() -> FakeGateway {
        FakeGateway {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind the fake gateway"),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("the fake gateway's address")
    }

    /// Accepts the next connection and reads its request head (through the
    /// blank line), both within [`EVENT_TIMEOUT`].
    fn accept_request(&self) -> (TcpStream, String) {
        assert!(
            wait_readable(&self.listener, EVENT_TIMEOUT),
            "no client dialed the fake gateway"
        );
        let (stream, _) = self.listener.accept().expect("accept the client");
        stream
            .set_read_timeout(Some(EVENT_TIMEOUT))
            .expect("set a read timeout");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // One byte at a time, so nothing past the head is consumed.
        while !head.ends_with(b"\r\n\r\n") {
            match (&stream).read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!("the request head ended early ({other:?}): {head:?}"),
            }
        }
        (stream, String::from_utf8_lossy(&head).into_owned())
    }
}

/// An agent channel as the fake gateway holds it.
struct Channel {
    lines: BufReader<TcpStream>,
}

impl Channel {
    /// Sends `raw` to the agent.
    fn send(&mut self, raw: &str) {
        self.lines
            .get_mut()
            .write_all(raw.as_bytes())
            .expect("write to the agent");
    }

    /// The agent's next line, `\n` included; within [`EVENT_TIMEOUT`].
    fn next_line(&mut self) -> String {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(n) if n > 0 => line,
            other => panic!("the agent sent no line ({other:?})"),
        }
    }
}

/// Starts the real agent `name` (publishing a closed port) against a fake
/// gateway, accepts its registration, answers `101` with `Ringway-Cmpi:
/// <cmpi>` and waits until the agent says it polls every `polls_every`
/// seconds.
fn registered_agent(gateway: &FakeGateway, name: &str, cmpi: &str, polls_every: u64) -> (LoggedChild, Channel) {
    registered_agent_exposing(gateway, name, cmpi, polls_every, closed_port())
}

/// As [`registered_agent`], publishing `expose`.
fn registered_agent_exposing(
    gateway: &FakeGateway,
    name: &str,
    cmpi: &str,
    polls_every: u64,
    expose: SocketAddr,
) -> (LoggedChild, Channel) {
    let agent = spawn_agent_binary(&gateway.addr().to_string(), KEY, name, expose, &[]);
    let (stream, head) = gateway.accept_request();
    assert!(
        head.starts_with("GET /v1/agent/register HTTP/1.1\r\n"),
        "a registration: {head:?}"
    );
    let mut channel = Channel {
        lines: BufReader::new(stream),
    };
    channel.send(&format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ringway-agent/1\r\nConnection: Upgrade\r\nRingway-Cmpi: {cmpi}\r\n\r\n"
    ));
    agent.wait_for_line(&format!("as {name:?} (poll every {polls_every} s)"), EVENT_TIMEOUT);
    (agent, channel)
}

/// Sends `CMPI <cmpi>` and waits until the agent says it now polls every
/// `polls_every` seconds.
fn set_cmpi(agent: &LoggedChild, channel: &mut Channel, cmpi: &str, polls_every: u64) {
    channel.send(&format!("CMPI {cmpi}\n"));
    agent.wait_for_line(
        &format!("the gateway set the poll interval to {polls_every} s"),
        EVENT_TIMEOUT,
    );
}

/// Asserts that the agent is still running and never panicked.
fn assert_alive(agent: &LoggedChild) {
    let lines = agent.lines();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "the agent panicked:\n{}",
        lines.join("\n")
    );
}

#[test]
fn a_huge_cmpi_header_does_not_crash_the_agent() {
    let gateway = FakeGateway::new();
    let (agent, mut channel) = registered_agent(&gateway, "huge-header", HUGE, MAX_CMPI.as_secs());
    // A day between polls is too long to wait for: a shorter CMPI must
    // bring the next poll forward, which only a live agent can do.
    set_cmpi(&agent, &mut channel, "1", 1);
    assert_eq!(channel.next_line(), "PING 1\n");
    assert_alive(&agent);
}

#[test]
fn a_huge_cmpi_frame_does_not_crash_the_agent() {
    let gateway = FakeGateway::new();
    let (agent, mut channel) = registered_agent(&gateway, "huge-frame", "1", 1);
    assert_eq!(channel.next_line(), "PING 1\n");
    channel.send("PONG 1\n");
    set_cmpi(&agent, &mut channel, HUGE, MAX_CMPI.as_secs());
    set_cmpi(&agent, &mut channel, "1", 1);
    assert_eq!(channel.next_line(), "PING 2\n");
    assert_alive(&agent);
}

#[test]
fn a_zero_cmpi_header_does_not_crash_the_agent() {
    let gateway = FakeGateway::new();
    // Clamped to the shortest interval, one second: the polls come.
    let (agent, mut channel) = registered_agent(&gateway, "zero-header", "0", 1);
    assert_eq!(channel.next_line(), "PING 1\n");
    channel.send("PONG 1\n");
    assert_eq!(channel.next_line(), "PING 2\n");
    assert_alive(&agent);
}

#[test]
fn a_zero_cmpi_frame_does_not_crash_the_agent() {
    let gateway = FakeGateway::new();
    let max = MAX_CMPI.as_secs();
    let (agent, mut channel) = registered_agent(&gateway, "zero-frame", &max.to_string(), max);
    // Clamped to one second, not ignored: the poll due in a day comes now.
    set_cmpi(&agent, &mut channel, "0", 1);
    assert_eq!(channel.next_line(), "PING 1\n");
    assert_alive(&agent);
}

/// Serves one `GET /v1/clients` on a thread, answering `answer`, then
/// waits for the client to close.
fn serve_browse(gateway: FakeGateway, answer: String) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut stream, head) = gateway.accept_request();
        assert!(head.starts_with("GET /v1/clients HTTP/1.1\r\n"), "a browse: {head:?}");
        stream.write_all(answer.as_bytes()).expect("write the answer");
        // The client leaves without reading more; EOF (or a reset) ends it.
        let _ = stream.read_to_end(&mut Vec::new());
    })
}

/// Runs `ringway control ls` against a fake gateway answering `answer`.
fn control_ls_against(answer: String) -> Finished {
    let gateway = FakeGateway::new();
    let addr = gateway.addr().to_string();
    let server = serve_browse(gateway, answer);
    let cmd = ringway_client(KEY, &["control", "ls", "--gateway", &addr, "--as", "ops"]);
    let done = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    server.join().expect("the fake gateway's thread");
    done
}

/// Runs `ringway control ls` against a fake gateway answering `answer`;
/// returns its exit code and stderr, having checked it listed nothing.
fn control_ls_fails_against(answer: String) -> (Option<i32>, String) {
    let done = control_ls_against(answer);
    assert_eq!(done.stdout, "", "nothing listed");
    (done.code, done.stderr)
}

#[test]
fn a_huge_content_length_does_not_crash_control_ls() {
    let over = (MAX_BODY_BYTES + 1).to_string();
    // 2^64-1, a length past 64 bits, and one byte over the cap: each is
    // refused before a byte of the body is read or a byte reserved for it.
    for length in [HUGE, "99999999999999999999999999", over.as_str()] {
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n[]");
        assert_eq!(
            control_ls_fails_against(answer),
            (
                Some(1),
                format!(
                    "ringway: protocol error: the gateway's answer has a body of {length} bytes, over the {MAX_BODY_BYTES}-byte limit\n"
                )
            ),
            "Content-Length: {length}"
        );
    }
}

#[test]
fn a_huge_content_length_on_a_refusal_shows_the_status_line() {
    let answer = format!("HTTP/1.1 503 Service Unavailable\r\nContent-Length: {HUGE}\r\n\r\nfull");
    assert_eq!(
        control_ls_fails_against(answer),
        (
            Some(1),
            "ringway: gateway refused (503): Service Unavailable\n".to_string()
        )
    );
}

#[test]
fn a_refusal_reason_cannot_drive_the_terminal() {
    let reason = "no\u{1b}[2J\u{7}";
    let answer = format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{reason}",
        reason.len()
    );
    assert_eq!(
        control_ls_fails_against(answer),
        (Some(1), "ringway: gateway refused (401): no?[2J?\n".to_string())
    );
}

#[test]
fn a_flood_of_opens_is_bounded_by_the_agent() {
    /// `ringway agent`'s bound on sessions at once (src/cli/agent.rs).
    const MAX_SESSIONS: usize = 256;
    let gateway = FakeGateway::new();
    // A service that accepts and holds every connection, and a fake
    // gateway that never answers a join: every session the agent starts
    // keeps its slot for the length of this test.
    let service = Service::manual();
    let max = MAX_CMPI.as_secs();
    let (agent, mut channel) = registered_agent_exposing(&gateway, "flooded", &max.to_string(), max, service.addr());
    let sid = |i: usize| format!("0.{i}.{i:032x}");
    let flood: String = (0..=MAX_SESSIONS).map(|i| format!("OPEN {}\n", sid(i))).collect();
    channel.send(&flood);
    // The one past the bound is refused at once, before any session could
    // give up its slot (a local dial or a join takes seconds to fail).
    assert_eq!(channel.next_line(), format!("FAIL {}\n", sid(MAX_SESSIONS)));
    agent.wait_for_line(
        &format!(
            "session {}: refused, {MAX_SESSIONS} sessions are already running",
            sid(MAX_SESSIONS)
        ),
        EVENT_TIMEOUT,
    );
    let refused = agent.lines().iter().filter(|l| l.contains(": refused, ")).count();
    assert_eq!(refused, 1, "only the session past the bound is refused");
    assert_alive(&agent);
}

#[test]
fn a_hostile_client_list_cannot_drive_the_terminal() {
    let list = r#"[{"name":"pc\u001b[2J1","external_addr":"203.0.113.9:1\u001b]0;owned\u0007","connected_since":"2026\r\nforged","last_poll":"","mac":"","local_ip":"","os":""}]"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{list}",
        list.len()
    );
    let done = control_ls_against(answer);
    assert!(done.success(), "{done:?}");
    let rows: Vec<&str> = done.stdout.lines().collect();
    // The table's columns (src/cli/control.rs), every field sanitised.
    let row = format!(
        "{:<24} {:<22} {:<21} {:<17} {:<15} {}",
        "pc?[2J1", "203.0.113.9:1?]0;owned?", "2026??forged", "", "", ""
    );
    assert_eq!(rows.len(), 2, "a header and one row: {:?}", done.stdout);
    assert_eq!(rows[1], row);
    assert!(!done.stdout.contains('\u{1b}'), "no escape reached the terminal");
}

/// `ringway status` read the admin listener's whole answer with
/// `read_to_end` and only then looked for the head's end: a peer that
/// sent a head of more than 8 KiB, or one that never ended, had all of it
/// held in memory (and was waited on until the read timeout). Both are now
/// refused once 8 KiB of head has arrived, without waiting for the peer
/// to close.
#[test]
fn an_admin_answer_head_over_8_kib_is_refused() {
    let pad = "a".repeat(ringway::http::MAX_HEAD_BYTES);
    let never_ends = format!("HTTP/1.1 200 OK\r\nX-Pad: {pad}");
    let whole = format!("HTTP/1.1 200 OK\r\nX-Pad: {pad}\r\nContent-Length: 2\r\n\r\n[]");
    for (answer, then_close) in [(never_ends, false), (whole, true)] {
        let gateway = FakeGateway::new();
        let addr = gateway.addr().to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, head) = gateway.accept_request();
            // `ringway status` asks for the gateway's role first.
            assert!(head.starts_with("GET /api/gateway HTTP/1.1\r\n"), "{head:?}");
            stream.write_all(answer.as_bytes()).expect("write the answer");
            if !then_close {
                // Held open: the client must leave (EOF, or a reset for
                // what it left unread) before this side's read deadline.
                let ended = stream.read_to_end(&mut Vec::new());
                let waited =
                    matches!(&ended, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
                assert!(!waited, "the client waited for the head to end: {ended:?}");
            }
        });
        let done = run_bounded(ringway_client(KEY, &["status", "--admin", &addr]), b"", COMMAND_TIMEOUT);
        server.join().expect("the fake admin listener's thread");
        assert_eq!(
            (done.code, done.stdout.as_str(), done.stderr.as_str()),
            (
                Some(1),
                "",
                format!("ringway: bad answer from {addr}: response head too large\n").as_str()
            ),
            "closed after the head: {then_close}"
        );
    }
}
