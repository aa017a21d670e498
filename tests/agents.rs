//! Agent life cycle: heartbeat expiry, replacement by a namesake, the
//! licence limit, pairing failures, and reconnecting after a restart.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, Service, TCP_ESTABLISHED, block_on, closed_port,
    dup_own_socket, echo_round_trip, is_listening, list, names, poll_until, refusal, register_raw, spawn_agent_binary,
    tcp_connections_to, wait_readable,
};
use ringway::client::{AgentChannel, AgentInfo, ChannelEnd, connect};

const KEY: &str = "Testing1";

#[test]
fn silent_agent_is_dropped_at_its_heartbeat_deadline() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.cmpi_secs = Some(1);
    let gw = Gateway::start(&config);
    // 2 x CMPI + 10 s.
    let deadline = Duration::from_secs(12);

    // Register through the library, then never poll: the channel is held
    // but `run` is never called.
    let channel = block_on(AgentChannel::register(
        &gw.endpoint(KEY, "silent"),
        &AgentInfo::default(),
    ))
    .unwrap_or_else(|e| panic!("registration failed: {e}"));
    let registered = Instant::now();
    assert_eq!(channel.cmpi(), Duration::from_secs(1), "the CMPI the gateway announced");
    gw.wait_for_event("Client silent connected", EVENT_TIMEOUT);
    assert_eq!(names(&gw.endpoint(KEY, "browser")), vec!["silent"]);

    // The channel's socket is the only connection of this process to this
    // gateway; watch a duplicate of it for the gateway's close.
    let ours: Vec<_> = tcp_connections_to(gw.addr())
        .into_iter()
        .filter(|c| c.state == TCP_ESTABLISHED)
        .collect();
    assert_eq!(ours.len(), 1, "connections to the gateway: {ours:?}");
    let socket = TcpStream::from(dup_own_socket(ours[0].inode).expect("find the channel's descriptor"));
    assert!(
        wait_readable(&socket, deadline + EVENT_TIMEOUT),
        "the gateway never closed the silent channel"
    );
    let closed_after = registered.elapsed();
    // The gateway says why, then closes: exactly one goodbye frame, then EOF.
    let mut said = Vec::new();
    (&socket).read_to_end(&mut said).expect("read the channel to its end");
    assert_eq!(String::from_utf8_lossy(&said), "BYE timeout\n");
    assert!(
        closed_after >= deadline - Duration::from_millis(500),
        "dropped after {closed_after:?}, before its deadline of {deadline:?}"
    );
    assert!(
        closed_after < deadline + Duration::from_secs(5),
        "dropped after {closed_after:?}, long past its deadline of {deadline:?}"
    );

    let timed_out = gw.wait_for_event("Client silent timed out: no poll for 12 s", EVENT_TIMEOUT);
    let disconnected = gw.wait_for_event("Client silent Disconnected", EVENT_TIMEOUT);
    assert!(
        timed_out < disconnected,
        "the timeout is logged before the disconnection"
    );
    assert_eq!(names(&gw.endpoint(KEY, "browser")), Vec::<String>::new());
    block_on(async move { drop(channel) });
}

#[test]
fn namesake_with_the_same_key_replaces_the_first_agent() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let service = Service::echo();
    // Distinct source addresses tell the two agents' connections apart.
    let first_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let second_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    let mut first_ep = gw.endpoint(KEY, "twin");
    first_ep.bind = Some(first_ip);
    let first = AgentThread::start(first_ep, Behaviour::IgnoreOpen).unwrap_or_else(|e| panic!("first: {e}"));
    gw.wait_for_event("Client twin connected", EVENT_TIMEOUT);

    let mut second_ep = gw.endpoint(KEY, "twin");
    second_ep.bind = Some(second_ip);
    let second =
        AgentThread::start(second_ep, Behaviour::Serve(service.addr())).unwrap_or_else(|e| panic!("second: {e}"));
    let (_, end) = first.wait_end(EVENT_TIMEOUT);
    assert_eq!(
        end,
        Ok(ChannelEnd::Bye("replaced".into())),
        "how the first channel ended"
    );
    let replaced = gw.wait_for_event_prefix("Client twin replaced: ", EVENT_TIMEOUT);
    gw.wait_for_events("Client twin connected", 2, EVENT_TIMEOUT);

    let from_second: Vec<_> = tcp_connections_to(gw.addr())
        .into_iter()
        .filter(|c| c.state == TCP_ESTABLISHED && c.local.ip() == second_ip)
        .collect();
    assert_eq!(from_second.len(), 1, "the second agent's channel: {from_second:?}");
    let second_addr = from_second[0].local;
    assert!(
        replaced.contains(&second_addr.to_string()),
        "{replaced:?} names the newcomer"
    );

    let control = gw.endpoint(KEY, "twin-control");
    let listed = list(&control).unwrap_or_else(|e| panic!("browse failed: {e}"));
    assert_eq!(listed.len(), 1, "entries: {listed:?}");
    assert_eq!(listed[0].name, "twin");
    assert_eq!(listed[0].external_addr, second_addr.to_string());
    // Only the second agent serves sessions, so an echo proves it is the
    // one the gateway reaches.
    echo_round_trip(&control, "twin", b"which twin answers?");
    assert_eq!(first.opens(), 0);
    assert_eq!(second.opens(), 1);
    assert_eq!(
        gw.count_events("Client twin Disconnected"),
        0,
        "a replaced agent is not logged as gone"
    );
}

#[test]
fn licence_limit_refuses_the_extra_agent_until_one_leaves() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.max_clients = Some(2);
    let gw = Gateway::start(&config);
    let start = |name: &str| AgentThread::start(gw.endpoint(KEY, name), Behaviour::IgnoreOpen);

    let a1 = start("lic-1").unwrap_or_else(|e| panic!("lic-1: {e}"));
    let _a2 = start("lic-2").unwrap_or_else(|e| panic!("lic-2: {e}"));
    let (status, reason) = refusal(start("lic-3"));
    assert_eq!(status, 503);
    assert_eq!(reason, "licensed maximum of 2 clients reached");
    gw.wait_for_event_prefix(
        "Licence exceed. Rejecting connection from Client lic-3 (",
        EVENT_TIMEOUT,
    );
    let control = gw.endpoint(KEY, "lic-control");
    assert_eq!(names(&control), vec!["lic-1", "lic-2"]);

    a1.stop();
    gw.wait_for_event("Client lic-1 Disconnected", EVENT_TIMEOUT);
    let _a3 = start("lic-3").unwrap_or_else(|e| panic!("lic-3 after lic-1 left: {e}"));
    gw.wait_for_event("Client lic-3 connected", EVENT_TIMEOUT);
    assert_eq!(names(&control), vec!["lic-2", "lic-3"]);
    // The freed slot was taken once: the licence is full again.
    assert_eq!(refusal(start("lic-4")).0, 503);
    gw.wait_for_event_prefix(
        "Licence exceed. Rejecting connection from Client lic-4 (",
        EVENT_TIMEOUT,
    );
}

#[test]
fn agent_that_ignores_open_makes_connect_time_out_with_504() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.pairing_timeout_secs = Some(1);
    let gw = Gateway::start(&config);
    let agent = AgentThread::start(gw.endpoint(KEY, "mute"), Behaviour::IgnoreOpen)
        .unwrap_or_else(|e| panic!("registration failed: {e}"));
    gw.wait_for_event("Client mute connected", EVENT_TIMEOUT);

    let asked = Instant::now();
    let (status, reason) = refusal(block_on(connect(&gw.endpoint(KEY, "impatient"), "mute")));
    let waited = asked.elapsed();
    assert_eq!(status, 504);
    assert_eq!(reason, "client mute did not join the session within 1 s");
    assert_eq!(agent.opens(), 1, "the agent was asked once");
    assert!(
        waited >= Duration::from_millis(950),
        "504 after {waited:?}, before the 1 s deadline"
    );
    assert!(waited < Duration::from_secs(5), "504 only after {waited:?}");
}

#[test]
fn agent_whose_service_refuses_makes_connect_fail_with_502() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.pairing_timeout_secs = Some(1);
    let gw = Gateway::start(&config);
    let agent = AgentThread::start(gw.endpoint(KEY, "broken"), Behaviour::Serve(closed_port()))
        .unwrap_or_else(|e| panic!("registration failed: {e}"));
    gw.wait_for_event("Client broken connected", EVENT_TIMEOUT);

    let (status, reason) = refusal(block_on(connect(&gw.endpoint(KEY, "hopeful"), "broken")));
    assert_eq!(status, 502);
    assert_eq!(reason, "client broken could not reach its local service");
    assert_eq!(agent.opens(), 1, "the agent was asked once");
}

#[test]
fn agent_binary_reconnects_after_the_gateway_restarts() {
    let service = Service::echo();
    let config = GatewayConfig::new(&[KEY]);
    let mut first = Gateway::start(&config);
    let agent = spawn_agent_binary(&first.addr().to_string(), KEY, "phoenix", service.addr(), &[]);
    first.wait_for_event("Client phoenix connected", EVENT_TIMEOUT);
    let addr = first.addr();
    first.kill();
    agent.wait_for_line("reconnecting in ", EVENT_TIMEOUT);
    // The killed gateway's listeners outlive its process for a few
    // milliseconds (the kernel tears io_uring instances down
    // asynchronously); binding before they are gone fails.
    assert!(
        poll_until(EVENT_TIMEOUT, || (!is_listening(addr)).then_some(())).is_some(),
        "the killed gateway's listeners never went away"
    );

    // The agent backs off 0.5-1 s, then doubles: ~10 s covers a few tries.
    let mut again = config.clone();
    again.listen = vec![addr];
    let second = Gateway::start_while_agents_dial(&again);
    assert_eq!(second.addr(), addr);
    second.wait_for_event("Client phoenix connected", Duration::from_secs(15));
    let control = second.endpoint(KEY, "phoenix-control");
    assert_eq!(names(&control), vec!["phoenix"]);
    echo_round_trip(&control, "phoenix", b"back again");
}

#[test]
fn agent_frame_split_across_reads_is_answered() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let (mut channel, early) = register_raw(&gw.endpoint(KEY, "slowpoke"));
    assert!(early.is_empty(), "nothing is pushed before a poll");
    gw.wait_for_event("Client slowpoke connected", EVENT_TIMEOUT);
    channel.set_nodelay(true).expect("no Nagle");
    channel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");

    // A whole frame is answered.
    channel.write_all(b"PING 41\n").expect("send a poll");
    assert_eq!(read_line(&mut channel), "PONG 41");
    // A frame in two segments, as a slow link delivers it. The pause makes
    // the split likely; a correct gateway answers the same either way.
    channel.write_all(b"PI").expect("send half a poll");
    std::thread::sleep(Duration::from_millis(200));
    channel.write_all(b"NG 42\n").expect("send the rest of the poll");
    assert_eq!(read_line(&mut channel), "PONG 42");
}

/// Reads one `\n`-terminated line (without it), a byte at a time.
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8_lossy(&line).into_owned(),
            Ok(1) => line.push(byte[0]),
            Ok(_) => panic!("the gateway closed the channel after {line:?}"),
            Err(e) => panic!("no complete line from the gateway ({e}) after {line:?}"),
        }
    }
}
