//! The approval hook (`[auth] approve_command`, `approve_url`): asked
//! before each connect with who wants to reach what, it lets the session
//! through on yes and refuses it with `403 the connection was not
//! approved` on no or on no answer in time. The hooks here are stubs: a
//! shell script that answers by the agent's name and writes down what it
//! was told, and a one-thread HTTP server that does the same.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, Service, TestDir, block_on, echo_round_trip, refusal};
use ringway::client::connect;

const KEY: &str = "Testing1";
const NOT_APPROVED: (u16, &str) = (403, "the connection was not approved");

/// A gateway asking `hook` (TOML lines for `[auth]`), with agents pc1 and
/// kiosk1 serving an echo.
fn gateway(dir: &TestDir, hook: &str) -> (Gateway, Service, Vec<common::AgentThread>) {
    let mut config = GatewayConfig::new(&[KEY]);
    config.admin = true;
    config.tail.push(format!("[auth]\n{hook}\n"));
    let gw = Gateway::start_in(dir, &config);
    let service = Service::echo();
    let agents = ["pc1", "kiosk1"]
        .iter()
        .map(|name| {
            let a = gw.serving_agent(KEY, name, service.addr());
            gw.wait_for_event(&format!("Client {name} connected"), EVENT_TIMEOUT);
            a
        })
        .collect();
    (gw, service, agents)
}

fn approvals(gw: &Gateway, outcome: &str) -> f64 {
    gw.metrics().sum("ringway_approvals_total", &[("outcome", outcome)])
}

#[test]
fn the_approval_command_lets_through_what_it_approves_and_refuses_the_rest() {
    let dir = TestDir::new("approve-command");
    let told = dir.join("told");
    let script = dir.join("approve.sh");
    // Writes down its environment, then says yes to pc1 only.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$RINGWAY_OPERATOR|$RINGWAY_CONTROL|$RINGWAY_AGENT|$RINGWAY_SOURCE|$RINGWAY_KEY\" >> {}\n[ \"$RINGWAY_AGENT\" = pc1 ]\n",
            told.display()
        ),
    )
    .expect("script");
    let hook = format!("approve_command = \"/bin/sh {}\"", script.display());
    let (gw, _service, _agents) = gateway(&dir, &hook);

    echo_round_trip(&gw.endpoint(KEY, "ops"), "pc1", b"approved bytes, exactly these");
    let denied = refusal(block_on(connect(&gw.endpoint(KEY, "ops"), "kiosk1")));
    assert_eq!((denied.0, denied.1.as_str()), NOT_APPROVED);

    let lines = std::fs::read_to_string(&told).expect("the hook ran");
    assert_eq!(lines, "|ops|pc1|127.0.0.1|key1\n|ops|kiosk1|127.0.0.1|key1\n");
    gw.wait_for_event(
        "Control ops was not approved to reach Client kiosk1: approve_command said no (exit status: 1). \
         Rejecting connection request from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    assert_eq!(gw.count_events("Control ops connected to Client pc1"), 1);
    assert_eq!(gw.count_events("Control ops connected to Client kiosk1"), 0);
    assert_eq!((approvals(&gw, "yes"), approvals(&gw, "no")), (1.0, 1.0));
}

#[test]
fn an_approval_that_does_not_come_in_time_is_a_no() {
    let dir = TestDir::new("approve-late");
    let hook = "approve_command = \"sleep 30\"\napprove_timeout_secs = 1";
    let (gw, _service, _agents) = gateway(&dir, hook);
    let asked = Instant::now();
    let denied = refusal(block_on(connect(&gw.endpoint(KEY, "ops"), "pc1")));
    let waited = asked.elapsed();
    assert_eq!((denied.0, denied.1.as_str()), NOT_APPROVED);
    assert!(
        waited >= Duration::from_millis(950),
        "refused after {waited:?}, before the deadline"
    );
    assert!(waited < Duration::from_secs(10), "refused only after {waited:?}");
    gw.wait_for_event(
        "Control ops was not approved to reach Client pc1: approve_command did not answer in time. \
         Rejecting connection request from 127.0.0.1",
        EVENT_TIMEOUT,
    );
}

/// A stub approval server: answers each POST `204` if its JSON names
/// agent pc1, else `403`, and passes every body it read to the test.
fn approval_server(asked: mpsc::Sender<String>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("a length");
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).expect("body");
            let body = String::from_utf8(body).expect("utf-8");
            let status = if body.contains("\"agent\":\"pc1\"") {
                "204 No Content"
            } else {
                "403 Forbidden"
            };
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            if asked.send(body).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn the_approval_url_gets_the_question_as_json_and_its_status_is_the_answer() {
    let dir = TestDir::new("approve-url");
    let (tx, rx) = mpsc::channel();
    let server = approval_server(tx);
    let hook = format!("approve_url = \"http://{server}/ringway/approve\"");
    let (gw, _service, _agents) = gateway(&dir, &hook);

    echo_round_trip(&gw.endpoint(KEY, "ops"), "pc1", b"approved over http");
    let denied = refusal(block_on(connect(&gw.endpoint(KEY, "ops"), "kiosk1")));
    assert_eq!((denied.0, denied.1.as_str()), NOT_APPROVED);

    let bodies: Vec<serde_json::Value> = (0..2)
        .map(|_| serde_json::from_str(&rx.recv_timeout(EVENT_TIMEOUT).expect("asked")).expect("JSON"))
        .collect();
    for (body, agent) in bodies.iter().zip(["pc1", "kiosk1"]) {
        assert_eq!(
            body,
            &serde_json::json!({"operator": "", "control": "ops", "agent": agent, "source": "127.0.0.1", "key": "key1"})
        );
    }
    gw.wait_for_event(
        "Control ops was not approved to reach Client kiosk1: approve_url answered 403. \
         Rejecting connection request from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    assert_eq!((approvals(&gw, "yes"), approvals(&gw, "no")), (1.0, 1.0));
}
