//! Many agents and many sessions: every one of 200 agents is listed and
//! reachable, and 1,000 sessions leave no descriptor behind.

mod common;

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, Prng, Service, TCP_LISTEN, TcpEntry, browse_raw,
    echo_round_trip, list, names, poll_until,
};

const KEY: &str = "Testing1";

#[test]
fn two_hundred_agents_on_two_workers_are_listed_and_each_reachable() {
    const AGENTS: usize = 200;
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let service = Service::echo();
    let expected: Vec<String> = (0..AGENTS).map(|i| format!("fleet-{i:03}")).collect();
    let specs = expected
        .iter()
        .map(|name| (gw.endpoint(KEY, name), Behaviour::Serve(service.addr())))
        .collect();
    // All 200 run on one compio runtime thread of this process.
    let (agents, registered) = AgentThread::start_many(specs);
    let failed: Vec<String> = registered
        .iter()
        .zip(&expected)
        .filter_map(|(r, name)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    assert_eq!(failed, Vec::<String>::new(), "registrations refused");

    let control = gw.endpoint(KEY, "fleet-control");
    let listed: Vec<String> = list(&control)
        .expect("the control can browse")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(listed, expected, "the list names each agent once");

    let mut prng = Prng::new(200);
    for name in &expected {
        let mut payload = format!("hello {name}: ").into_bytes();
        payload.extend(prng.bytes(1000));
        echo_round_trip(&control, name, &payload);
    }
    assert_eq!(agents.opens(), AGENTS, "one session per agent");
    assert_eq!(service.accepted(), AGENTS);
    gw.wait_for_events(
        "Control fleet-control disconnected from Client fleet-199",
        1,
        EVENT_TIMEOUT,
    );
    assert_eq!(
        gw.events()
            .iter()
            .filter(|e| e.ends_with(" connected") && e.starts_with("Client fleet-"))
            .count(),
        AGENTS
    );
}

#[test]
fn library_browse_reads_a_list_longer_than_one_read() {
    const AGENTS: usize = 40;
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let expected: Vec<String> = (0..AGENTS).map(|i| format!("listed-agent-{i:02}")).collect();
    let specs = expected
        .iter()
        .map(|n| (gw.endpoint(KEY, n), Behaviour::IgnoreOpen))
        .collect();
    let (_agents, registered) = AgentThread::start_many(specs);
    assert!(registered.iter().all(Result::is_ok), "registrations refused");
    let control = gw.endpoint(KEY, "list-control");
    // The gateway's answer is right (several KiB of JSON)...
    let raw: Vec<String> = browse_raw(&control).into_iter().map(|a| a.name).collect();
    assert_eq!(raw, expected);
    // ...and the library must read all of it.
    assert_eq!(names(&control), expected);
}

#[test]
fn a_thousand_sessions_leave_no_descriptor_behind() {
    const SESSIONS: usize = 1000;
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let service = Service::echo();
    let _agent = AgentThread::start(gw.endpoint(KEY, "fd-agent"), Behaviour::Serve(service.addr()))
        .unwrap_or_else(|e| panic!("agent registration failed: {e}"));
    gw.wait_for_event("Client fd-agent connected", EVENT_TIMEOUT);
    let control = gw.endpoint(KEY, "fd-control");
    let disconnected = "Control fd-control disconnected from Client fd-agent";

    // At rest the gateway's TCP sockets are its listeners and the agent's
    // channel; anything else belongs to a session not yet closed.
    let connections =
        |gw: &Gateway| -> Vec<TcpEntry> { gw.tcp_sockets().into_iter().filter(|e| e.state != TCP_LISTEN).collect() };
    let channel = poll_until(EVENT_TIMEOUT, || {
        let open = connections(&gw);
        (open.len() == 1).then(|| open[0].inode)
    })
    .unwrap_or_else(|| panic!("expected only the agent's channel, got {:?}", connections(&gw)));
    let settle = |what: &str| {
        let idle = poll_until(EVENT_TIMEOUT, || {
            connections(&gw).iter().all(|e| e.inode == channel).then_some(())
        });
        assert!(
            idle.is_some(),
            "{what}: session sockets still open: {:?}",
            connections(&gw)
        );
    };

    echo_round_trip(&control, "fd-agent", b"warm-up");
    gw.wait_for_events(disconnected, 1, EVENT_TIMEOUT);
    settle("after the warm-up");
    let baseline = gw.fd_count();

    for i in 0..SESSIONS {
        echo_round_trip(&control, "fd-agent", format!("session {i} of {SESSIONS}").as_bytes());
    }
    gw.wait_for_events(disconnected, SESSIONS + 1, EVENT_TIMEOUT);
    assert_eq!(service.accepted(), SESSIONS + 1);
    settle("after the sessions");
    let back = poll_until(EVENT_TIMEOUT, || (gw.fd_count() == baseline).then_some(()));
    assert!(
        back.is_some(),
        "the gateway holds {} descriptors after {SESSIONS} sessions, {baseline} before",
        gw.fd_count()
    );
}
