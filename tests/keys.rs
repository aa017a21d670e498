//! The gateway-key rule table: a control sees and reaches exactly the
//! agents that proved the same key, and neither side gets in with a key the
//! gateway does not hold. One test per row, each with its own gateway.

mod common;

use common::{AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, Service, echo_round_trip, list, refusal};
use ringway::client::connect;
use ringway::eventlog::REPEAT_WINDOW;

/// What a row of the table expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The agent's registration and the control's browse both get 401.
    Neither,
    /// The agent registers; the control sees nothing and connect gets 404.
    AgentAlone,
    /// The agent registers; the control lists it and relays bytes to it.
    Reachable,
}

const AGENT: &str = "keyed-agent";
const CONTROL: &str = "keyed-control";

fn check_row(control_key: &str, gateway_keys: &[&str], agent_key: &str, outcome: Outcome) {
    let gw = Gateway::start(&GatewayConfig::new(gateway_keys));
    let service = Service::echo();
    let agent_ep = gw.endpoint(agent_key, AGENT);
    let control = gw.endpoint(control_key, CONTROL);

    let agent = AgentThread::start(agent_ep, Behaviour::Serve(service.addr()));
    match outcome {
        Outcome::Neither => {
            assert_eq!(refusal(agent).0, 401, "agent registration");
            assert_eq!(refusal(list(&control)).0, 401, "browse");
            gw.wait_for_event_prefix(&format!("Security check failed for Client {AGENT} "), EVENT_TIMEOUT);
            // The browse came from the same source within the window: it
            // is counted, and summed when the window closes.
            gw.wait_for_event(
                "Security check failed for Control browse: unknown_key. Terminating connection from 127.0.0.1 \
                 … and 1 more from 127.0.0.1 in the last 10 s",
                REPEAT_WINDOW + EVENT_TIMEOUT,
            );
            assert_eq!(gw.count_events(&format!("Client {AGENT} connected")), 0);
        }
        Outcome::AgentAlone => {
            let _agent = agent.unwrap_or_else(|e| panic!("agent registration failed: {e}"));
            gw.wait_for_event(&format!("Client {AGENT} connected"), EVENT_TIMEOUT);
            let seen = list(&control).unwrap_or_else(|e| panic!("browse failed: {e}"));
            assert_eq!(seen, vec![], "a control must not see another key's agents");
            let (status, _) = refusal(common::block_on(connect(&control, AGENT)));
            assert_eq!(status, 404, "connect to another key's agent");
            assert_eq!(service.accepted(), 0, "the agent's service must never be dialled");
        }
        Outcome::Reachable => {
            let _agent = agent.unwrap_or_else(|e| panic!("agent registration failed: {e}"));
            gw.wait_for_event(&format!("Client {AGENT} connected"), EVENT_TIMEOUT);
            let seen = list(&control).unwrap_or_else(|e| panic!("browse failed: {e}"));
            let names: Vec<&str> = seen.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, vec![AGENT]);
            let payload = common::Prng::new(7).bytes(100_000);
            echo_round_trip(&control, AGENT, &payload);
            gw.wait_for_event(&format!("Control {CONTROL} connected to Client {AGENT}"), EVENT_TIMEOUT);
            gw.wait_for_event(
                &format!("Control {CONTROL} disconnected from Client {AGENT}"),
                EVENT_TIMEOUT,
            );
            assert_eq!(service.accepted(), 1);
        }
    }
}

#[test]
fn control_and_agent_with_unknown_keys_are_both_refused() {
    check_row("Testing1", &["Testing2"], "Testing9", Outcome::Neither);
}

#[test]
fn agent_on_another_configured_key_is_invisible_to_the_control() {
    check_row("Testing2", &["Testing1", "Testing2"], "Testing1", Outcome::AgentAlone);
}

#[test]
fn same_single_key_lets_the_control_reach_the_agent() {
    check_row("Testing1", &["Testing1"], "Testing1", Outcome::Reachable);
}

#[test]
fn shared_key_the_gateway_does_not_hold_is_refused() {
    check_row("Testing2", &["Testing1"], "Testing2", Outcome::Neither);
}

#[test]
fn shared_key_among_several_lets_the_control_reach_the_agent() {
    check_row(
        "Testing2",
        &["Testing1", "Testing2", "Testing3"],
        "Testing2",
        Outcome::Reachable,
    );
}

/// Named keys (`[[keys]]`): the API and the console show the name, never
/// the key or the hash the wire uses to find it; a reload adds one live and
/// renames another without touching its agents.
#[test]
fn named_keys_show_their_names_never_a_hash_and_reload_live() {
    const ACME: &str = "acme-secret-0001";
    const GLOBEX: &str = "globex-secret-02";
    let dir = common::TestDir::new("named-keys");
    let mut conf = GatewayConfig::operated(&[]);
    conf.named_keys = vec![("acme".into(), ACME.into())];
    let gw = Gateway::start_in(&dir, &conf);
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(ACME, "pc1", echo.addr());
    assert_eq!(common::names(&gw.endpoint(ACME, "ops")), ["pc1"]);
    let key_of = |agent: &str| -> String {
        let clients = gw.get_json("/api/clients");
        let row = clients
            .as_array()
            .expect("an array of clients")
            .iter()
            .find(|c| c["name"] == agent)
            .unwrap_or_else(|| panic!("{agent} is not listed: {clients}"))
            .clone();
        let shown = row.to_string();
        for hidden in [ACME.to_string(), ringway::auth::KeyId::of(ACME).to_string()] {
            assert!(!shown.contains(&hidden), "{hidden} shown: {shown}");
        }
        row["key"].as_str().expect("a key name").to_string()
    };
    assert_eq!(key_of("pc1"), "acme");
    let (status, _) = refusal(list(&gw.endpoint(GLOBEX, "ops2")));
    assert_eq!(status, 401);

    // Add globex and rename acme in one reload: pc1 stays connected.
    conf.named_keys = vec![("acme-corp".into(), ACME.into()), ("globex".into(), GLOBEX.into())];
    gw.rewrite(&conf);
    gw.reload_by_sighup();
    let _pc2 = gw.serving_agent(GLOBEX, "pc2", echo.addr());
    assert_eq!(common::names(&gw.endpoint(GLOBEX, "ops2")), ["pc2"]);
    assert_eq!((key_of("pc1"), key_of("pc2")), ("acme-corp".into(), "globex".into()));
    echo_round_trip(&gw.endpoint(ACME, "ops"), "pc1", b"still here after the rename");
    let log = gw.events().join("\n");
    assert!(!log.contains(&ringway::auth::KeyId::of(ACME).to_string()), "{log}");
}
