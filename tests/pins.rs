//! Agent identities that cannot be hijacked (issue 10 item 6): a name is
//! pinned to the agent key that first registered it, per gateway key, on
//! disk; another machine with the name gets 409 and the pinned agent is
//! left alone; `ringway agents forget` releases a name; `[auth]
//! pin_agent_names = false` is first come, as before.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::{
    AgentThread, Behaviour, COMMAND_TIMEOUT, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, Prng, Reply, Service,
    TestDir, echo_round_trip, http_request, list, plain_binding, read_reply, refusal, ringway_command, run_bounded,
    spawn_agent_binary,
};
use ringway::auth::Binding;
use ringway::client::identity::{AGENT_KEY_FILE, AgentIdentity};
use ringway::client::{self, Endpoint};
use ringway::proto;

const KEY: &str = "Testing1";

/// The reason a second machine is given.
fn taken(name: &str) -> String {
    format!(
        "the name {name} is taken by another machine (its agent key differs); \
         choose another name, or ask the administrator to release it"
    )
}

/// The gateway's line for a refused second machine.
fn refused_line(name: &str, new: SocketAddr, pinned: &str) -> String {
    format!(
        "Client {name} refused: the name is pinned to another machine's agent key (key key1); \
         new connection from {new}, pinned machine at {pinned}"
    )
}

/// An endpoint for `name` on `gw` as the machine holding `id`.
fn as_machine(gw: &Gateway, name: &str, id: &Arc<AgentIdentity>) -> Endpoint {
    let mut ep = gw.endpoint(KEY, name);
    ep.agent_key = Some(id.clone());
    ep
}

/// The registration head the library signs for `ep` (with its agent key
/// headers, if it has a key), unsent.
fn registration_head(ep: &Endpoint, binding: Binding) -> String {
    let extra = [
        ("Upgrade", proto::UPGRADE_AGENT.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    let head = client::request_head(ep, binding, "GET", proto::PATH_REGISTER, &extra);
    String::from_utf8(head).expect("a head is text")
}

/// Sends a registration head on a blocking socket and reads the refusal
/// to its close: the answer and the address it came from.
fn refused_registration(gw: &Gateway, head: &str) -> (Reply, SocketAddr) {
    let mut s = TcpStream::connect(gw.addr()).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    let local = s.local_addr().expect("a local address");
    s.write_all(head.as_bytes()).expect("send the registration");
    (read_reply(&mut s), local)
}

/// Where the gateway sees agent `name` connected from.
fn external(gw: &Gateway, name: &str) -> String {
    let agents = list(&gw.endpoint(KEY, "ctl")).expect("browse");
    agents
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {agents:?}"))
        .external_addr
        .clone()
}

#[test]
fn a_second_machine_gets_409_and_the_first_keeps_its_name() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    let (a, b) = (Arc::new(AgentIdentity::generate()), Arc::new(AgentIdentity::generate()));
    let _first = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::Serve(echo.addr()));
    let pinned_at = external(&gw, "pc1");

    // The second machine, on a socket whose address we know: 409, the
    // reason, and the line naming both addresses.
    let ep = as_machine(&gw, "pc1", &b);
    let (reply, from) = refused_registration(&gw, &registration_head(&ep, plain_binding(&ep)));
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (409, format!("{}\n", taken("pc1")).as_str())
    );
    let line = refused_line("pc1", from, &pinned_at);
    gw.wait_for_event(&line, EVENT_TIMEOUT);
    // Again through the library: the same answer; within the minute the
    // refusal is only counted, not logged again.
    let second = AgentThread::start(as_machine(&gw, "pc1", &b), Behaviour::Serve(echo.addr()));
    assert_eq!(refusal(second), (409, taken("pc1")));
    gw.wait_metric("ringway_pin_refusals_total", 2);
    let refusals: Vec<String> = gw
        .events()
        .into_iter()
        .filter(|e| e.starts_with("Client pc1 refused"))
        .collect();
    assert_eq!(refusals, vec![line]);

    // The first agent was never replaced: its channel still serves
    // sessions, byte for byte, from where it registered.
    let payload = Prng::new(6).bytes(256 * 1024);
    echo_round_trip(&gw.endpoint(KEY, "ctl"), "pc1", &payload);
    assert_eq!(external(&gw, "pc1"), pinned_at);
    assert_eq!(gw.count_events("Client pc1 connected"), 1);
    assert!(
        !gw.events().iter().any(|e| e.contains("replaced")),
        "{:#?}",
        gw.events()
    );
}

#[test]
fn the_same_machine_registering_again_replaces_itself() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let a = Arc::new(AgentIdentity::generate());
    let first = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen);
    let _again = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen);
    gw.wait_for_event_prefix("Client pc1 replaced: ", EVENT_TIMEOUT);
    let (_, end) = first.wait_end(EVENT_TIMEOUT);
    assert_eq!(end, Ok(client::ChannelEnd::Bye("replaced".into())));
    assert_eq!(gw.metric("ringway_pin_refusals_total"), 0);
}

#[test]
fn pins_survive_a_kill_9_and_a_restart() {
    let dir = TestDir::new("pins-restart");
    let config = GatewayConfig::operated(&[KEY]);
    let (a, b) = (Arc::new(AgentIdentity::generate()), Arc::new(AgentIdentity::generate()));
    {
        let mut gw = Gateway::start_in(&dir, &config);
        let agent = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen);
        drop(agent);
        gw.kill();
    }
    let gw = Gateway::start_in(&dir, &config);
    assert_eq!(
        refusal(AgentThread::start(as_machine(&gw, "pc1", &b), Behaviour::IgnoreOpen)),
        (409, taken("pc1"))
    );
    let line = gw.wait_for_event_prefix("Client pc1 refused: ", EVENT_TIMEOUT);
    assert!(line.ends_with(" (not connected)"), "the pinned machine is away: {line}");
    // The pinned machine itself still gets in.
    let _back = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen);
}

#[test]
fn forget_releases_a_name_for_another_machine() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let (a, b) = (Arc::new(AgentIdentity::generate()), Arc::new(AgentIdentity::generate()));
    drop(gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen));
    assert_eq!(
        refusal(AgentThread::start(as_machine(&gw, "pc1", &b), Behaviour::IgnoreOpen)).0,
        409
    );

    // The admin API refuses an unknown name, and a GET.
    let missing = http_request(gw.admin(), "POST", "/api/agents/forget?name=nobody");
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "no pin for client nobody\n")
    );
    assert_eq!(
        http_request(gw.admin(), "GET", "/api/agents/forget?name=pc1").status,
        405
    );

    // The CLI releases it, and says so; the gateway logs it.
    let admin = gw.admin().to_string();
    let done = run_bounded(
        ringway_command(&["agents", "forget", "pc1", "--admin", &admin, "--key", "key1"]),
        b"",
        COMMAND_TIMEOUT,
    );
    assert!(done.success(), "{done:?}");
    assert_eq!(done.stdout, "released the pin of client pc1 (key key1)\n");
    gw.wait_for_event(
        "Client pc1 (key key1): name pin released by the administrator",
        EVENT_TIMEOUT,
    );

    // Now the second machine registers, and pins the name for itself.
    let _second = gw.start_agent(as_machine(&gw, "pc1", &b), Behaviour::IgnoreOpen);
    assert_eq!(
        refusal(AgentThread::start(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen)),
        (409, taken("pc1"))
    );
}

#[test]
fn with_pinning_off_the_first_come_rule_returns() {
    let mut config = GatewayConfig::operated(&[KEY]);
    config.tail.push("[auth]\npin_agent_names = false\n".into());
    let gw = Gateway::start(&config);
    let (a, b) = (Arc::new(AgentIdentity::generate()), Arc::new(AgentIdentity::generate()));
    let first = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen);
    let _second = gw.start_agent(as_machine(&gw, "pc1", &b), Behaviour::IgnoreOpen);
    gw.wait_for_event_prefix("Client pc1 replaced: ", EVENT_TIMEOUT);
    assert_eq!(
        first.wait_end(EVENT_TIMEOUT).1,
        Ok(client::ChannelEnd::Bye("replaced".into()))
    );
    // An agent without a key (an old version) gets in too.
    let mut old = gw.endpoint(KEY, "old");
    old.agent_key = None;
    let _old = gw.start_agent(old, Behaviour::IgnoreOpen);
    // No store was made: nothing is pinned.
    assert!(!gw.dir().join("state").join("pins.redb").exists());
    let forget = http_request(gw.admin(), "POST", "/api/agents/forget?name=pc1");
    assert_eq!(forget.status, 404, "{}", forget.body);
}

#[test]
fn an_agent_without_a_key_is_told_to_upgrade() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let mut old = gw.endpoint(KEY, "old");
    old.agent_key = None;
    assert_eq!(
        refusal(AgentThread::start(old, Behaviour::IgnoreOpen)),
        (
            400,
            "this gateway pins agent names to agent keys: upgrade the agent (it sends Ringway-Agent-Key)".into()
        )
    );
}

#[test]
fn a_replayed_public_key_with_a_signature_for_another_binding_is_refused() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let victim = Arc::new(AgentIdentity::generate());
    let _pinned = gw.start_agent(as_machine(&gw, "pc1", &victim), Behaviour::IgnoreOpen);

    // What an eavesdropper captured: the victim's key headers from a
    // registration bound to another gateway run's boot id.
    let captured_ep = as_machine(&gw, "pc1", &victim);
    let captured = registration_head(&captured_ep, Binding::Boot(Some(ringway::auth::BootId::random())));
    let key_lines: String = captured
        .lines()
        .filter(|l| l.starts_with("Ringway-Agent-"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert_eq!(key_lines.matches("\r\n").count(), 2, "{captured}");

    // The attacker holds the gateway key and proves it with a fresh,
    // valid proof for this run, then adds the captured headers.
    let mut attacker = gw.endpoint(KEY, "pc1");
    attacker.agent_key = None;
    let own = registration_head(&attacker, plain_binding(&attacker));
    let forged = own.replacen("\r\n\r\n", &format!("\r\n{key_lines}\r\n"), 1);
    let (reply, _) = refused_registration(&gw, &forged);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (403, "the agent key signature does not match this request\n")
    );
    gw.wait_for_event(
        "Security check failed for Client pc1 (): agent_key_mismatch. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    assert_eq!(gw.count_events("Client pc1 connected"), 1);
}

/// A change to a registration head, given the head and its agent key and
/// signature lines.
type Mutation = fn(&str, &str, &str) -> String;

#[test]
fn broken_agent_key_headers_are_refused_with_400() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let id = Arc::new(AgentIdentity::generate());
    let ep = as_machine(&gw, "pc1", &id);
    let cases: [(Mutation, &str); 5] = [
        (
            |head, key, _| head.replacen(key, &format!("{key}\r\n{key}"), 1),
            "duplicate Ringway-Agent-Key header",
        ),
        (
            |head, _, sig| head.replacen(sig, &format!("{sig}\r\n{sig}"), 1),
            "duplicate Ringway-Agent-Sig header",
        ),
        (
            |head, key, _| head.replacen(key, &key[..key.len() - 1], 1),
            "Ringway-Agent-Key must be base64url (no padding) of 32 bytes",
        ),
        (
            |head, _, sig| head.replacen(sig, &format!("{sig}AA"), 1),
            "Ringway-Agent-Sig must be base64url (no padding) of 64 bytes",
        ),
        (
            |head, _, sig| head.replacen(&format!("{sig}\r\n"), "", 1),
            "Ringway-Agent-Key and Ringway-Agent-Sig go together",
        ),
    ];
    for (mutate, why) in cases {
        // A fresh head each time: the gateway accepts a proof's nonce once.
        let head = registration_head(&ep, plain_binding(&ep));
        let line = |prefix: &str| {
            head.lines()
                .find(|l| l.starts_with(prefix))
                .expect("a line")
                .to_string()
        };
        let request = mutate(&head, &line("Ringway-Agent-Key: "), &line("Ringway-Agent-Sig: "));
        let (reply, _) = refused_registration(&gw, &request);
        assert_eq!((reply.status, reply.body.trim_end()), (400, why), "{request}");
    }
    assert_eq!(gw.count_events("Client pc1 connected"), 0);
}

#[test]
fn the_agent_binary_keeps_its_key_and_says_plainly_when_its_name_is_taken() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let dir = TestDir::new("agent-state");
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    let gateway = gw.addr().to_string();
    let closed = common::closed_port();
    let a_state = a_dir.to_str().expect("UTF-8").to_string();
    let first = spawn_agent_binary(&gateway, KEY, "twin", closed, &["--state-dir", &a_state]);
    gw.wait_for_event("Client twin connected", EVENT_TIMEOUT);
    let key_file = a_dir.join(AGENT_KEY_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).expect("a key file").permissions());
    assert_eq!(mode & 0o777, 0o600);
    drop(first);

    // Another machine (its own state folder) with the same name.
    let b_state = b_dir.to_str().expect("UTF-8").to_string();
    let second = spawn_agent_binary(&gateway, KEY, "twin", closed, &["--state-dir", &b_state]);
    let said = second.wait_for_line("is taken by another machine", EVENT_TIMEOUT);
    assert!(
        said.contains("the name \"twin\" is taken by another machine") && said.contains("ringway agents forget"),
        "{said}"
    );
    gw.wait_for_event_prefix("Client twin refused: ", EVENT_TIMEOUT);

    // The first machine comes back with the key it kept: it gets in.
    let _again = spawn_agent_binary(&gateway, KEY, "twin", closed, &["--state-dir", &a_state]);
    gw.wait_for_events("Client twin connected", 2, EVENT_TIMEOUT);
}

#[test]
fn pin_agent_names_applies_on_reload() {
    let mut config = GatewayConfig::operated(&[KEY]);
    config.tail.push("[auth]\npin_agent_names = false\n".into());
    let gw = Gateway::start(&config);
    let (a, b) = (Arc::new(AgentIdentity::generate()), Arc::new(AgentIdentity::generate()));
    let keyless = || {
        let mut old = gw.endpoint(KEY, "old");
        old.agent_key = None;
        old
    };
    let _old = gw.start_agent(keyless(), Behaviour::IgnoreOpen);

    // Turned on: the store opens, keyless agents are told to upgrade, and
    // names pin from now on.
    config.tail.clear();
    gw.rewrite(&config);
    gw.reload_by_sighup();
    assert_eq!(refusal(AgentThread::start(keyless(), Behaviour::IgnoreOpen)).0, 400);
    let _a = gw.start_agent(as_machine(&gw, "pc1", &a), Behaviour::IgnoreOpen);
    assert_eq!(
        refusal(AgentThread::start(as_machine(&gw, "pc1", &b), Behaviour::IgnoreOpen)),
        (409, taken("pc1"))
    );
    assert!(gw.dir().join("state").join("pins.redb").exists());
}
