//! Holes in the agent channel and pairing that hostile probes found
//! (issue 9): an agent that stops reading, bursts of connects to a healthy
//! agent, and one key's connect flood starving another key.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, Service, block_on, echo_round_trip,
    plain_binding, refusal,
};
use ringway::client::{self, connect};
use ringway::http::{HeadError, parse_response};
use ringway::proto;
use socket2::{Domain, Socket, Type};

const KEY_A: &str = "Testing1";
const KEY_B: &str = "Testing2";

/// Registers an agent on a socket whose receive buffer is as small as the
/// kernel allows, so that a peer that never reads fills it quickly.
fn register_tiny_window(gw: &Gateway, key: &str, name: &str) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(1).expect("shrink the receive buffer");
    socket.connect(&gw.addr().into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let ep = gw.endpoint(key, name);
    let extra = [
        ("Upgrade", proto::UPGRADE_AGENT.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    s.write_all(&client::request_head(
        &ep,
        plain_binding(&ep),
        "GET",
        proto::PATH_REGISTER,
        &extra,
    ))
    .expect("send the registration");
    let mut raw = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed during registration");
        raw.extend_from_slice(&buf[..n]);
        match parse_response(&raw) {
            Ok((head, _)) => {
                assert_eq!(head.status, 101);
                return s;
            }
            Err(HeadError::Incomplete) => {}
            Err(e) => panic!("bad answer {e:?}"),
        }
    }
}

#[test]
fn an_agent_that_stops_reading_is_closed_and_frees_its_licence() {
    let mut config = GatewayConfig::new(&[KEY_A]);
    config.max_clients = Some(1);
    config.limits_extra.push("write_timeout_secs = 1".into());
    let gw = Gateway::start(&config);
    let mut stuck = register_tiny_window(&gw, KEY_A, "stuck");
    gw.wait_for_event("Client stuck connected", EVENT_TIMEOUT);

    // Polls as fast as it can and never reads an answer: the gateway's
    // PONGs pile up in a zero window.
    let mut writer = stuck.try_clone().expect("clone");
    let flood = thread::spawn(move || {
        for seq in 0..200_000u32 {
            if writer.write_all(format!("PING {seq}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    gw.wait_for_event("Client stuck stopped reading its channel; closing", EVENT_TIMEOUT);
    gw.wait_for_event("Client stuck Disconnected", EVENT_TIMEOUT);

    // Its licence share is free again: another agent gets in.
    let service = Service::echo();
    let _next = AgentThread::start(gw.endpoint(KEY_A, "next"), Behaviour::Serve(service.addr()))
        .unwrap_or_else(|e| panic!("the licence was not freed: {e}"));
    gw.wait_for_event("Client next connected", EVENT_TIMEOUT);

    // And its socket is closed: what was sent drains, then the end (or a
    // reset, since the gateway closed with polls unread), never a timeout.
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        match stuck.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stuck agent's socket was not closed: {e}"),
        }
    }
    flood.join().expect("flood thread");
}

#[test]
fn bursts_of_connects_to_a_healthy_agent_are_not_refused() {
    let config = GatewayConfig::new(&[KEY_A]);
    let gw = Gateway::start(&config);
    let service = Service::echo();
    let _agent = gw.serving_agent(KEY_A, "pc1", service.addr());
    gw.wait_for_event("Client pc1 connected", EVENT_TIMEOUT);

    // 48 controls at once (three controls' shares), twice: each OPEN
    // waits in the agent's outbox only until the next write.
    for round in 0..2 {
        let sessions: Vec<_> = (0..48)
            .map(|i| {
                let ep = gw.endpoint(KEY_A, &format!("ops{}", i % 3));
                thread::spawn(move || {
                    echo_round_trip(&ep, "pc1", format!("burst {round} {i}").as_bytes());
                })
            })
            .collect();
        for s in sessions {
            s.join().expect("every connect of the burst relayed");
        }
    }
    assert_eq!(gw.count_events("Control ops0 connected to Client pc1"), 32);
}

#[test]
fn a_connect_flood_from_one_key_does_not_refuse_another() {
    let mut config = GatewayConfig::new(&[KEY_A, KEY_B]);
    config.workers = 1;
    config.pairing_timeout_secs = Some(5);
    config.limits_extra.extend([
        "max_pending_sessions = 40".to_string(),
        "max_pending_per_key = 10".to_string(),
        "max_pending_per_control = 4".to_string(),
    ]);
    let gw = Gateway::start(&config);
    let _mute = AgentThread::start(gw.endpoint(KEY_A, "mute"), Behaviour::IgnoreOpen)
        .unwrap_or_else(|e| panic!("registration failed: {e}"));
    let service = Service::echo();
    let _pc = gw.serving_agent(KEY_B, "pc1", service.addr());
    gw.wait_for_event("Client mute connected", EVENT_TIMEOUT);
    gw.wait_for_event("Client pc1 connected", EVENT_TIMEOUT);

    // Key A: 30 connects from 6 control names to an agent that never
    // joins. Each control gets 4 slots and the key 10; the rest are
    // refused at once.
    let flood: Vec<_> = (0..30)
        .map(|i| {
            let ep = gw.endpoint(KEY_A, &format!("flood{}", i % 6));
            thread::spawn(move || refusal(block_on(connect(&ep, "mute"))))
        })
        .collect();
    // While key A's slots are held, key B relays, every time.
    gw.wait_for_event_prefix("Control flood", EVENT_TIMEOUT);
    for i in 0..20 {
        echo_round_trip(&gw.endpoint(KEY_B, "ops"), "pc1", format!("key B {i}").as_bytes());
    }
    let mut timed_out = 0;
    let mut refused_key = 0;
    let mut refused_control = 0;
    for f in flood {
        match f.join().expect("flood thread") {
            (504, _) => timed_out += 1,
            (503, r) if r == "too many sessions waiting for their clients for this gateway key" => refused_key += 1,
            (503, r) if r == "too many sessions waiting for their clients for this control" => refused_control += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(timed_out, 10, "key A held exactly its share");
    assert_eq!(refused_key + refused_control, 20);
    assert!(refused_key > 0, "the key's share ran out, not only controls'");
    // Logged with the reason; the flood's repeats from one source are
    // summarised rather than written one by one.
    let logged: Vec<String> = gw
        .events()
        .into_iter()
        .filter(|e| e.starts_with("Control flood"))
        .collect();
    assert!(
        logged[0].contains("could not be paired: too many sessions waiting for their clients for this"),
        "{logged:?}"
    );
    assert!(logged.len() < 20, "repeats are summarised: {logged:?}");
}
