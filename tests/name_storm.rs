//! Two machines with one agent name (issue 9, hole 11): they used to
//! replace each other 1.3 times a second, forever. Now the agent that
//! loses its name backs off on a slow, growing ladder and says why, and
//! the gateway logs a name's replacements at most once a minute.
//!
//! Two machines dispute a name only where the gateway does not pin names
//! to agent keys (`[auth] pin_agent_names = false`); with pins (the
//! default) the second machine is refused instead (tests/pins.rs).

mod common;

use std::time::{Duration, Instant};

use common::{EVENT_TIMEOUT, Gateway, GatewayConfig, LoggedChild, closed_port, register_raw, spawn_agent_binary};
use ringway::client::backoff::{NAME_IN_USE_START, jitter};

const KEY: &str = "Testing1";

/// How much earlier than its pause a returning agent may be seen: the
/// test notices each registration a little after the gateway logs it, and
/// two shared cores can delay that. A storm returns within a second, so
/// the check still tells the two apart.
const SLACK: Duration = Duration::from_secs(1);

/// The lines in which `agent` said that its name is taken.
fn name_in_use_lines(agent: &LoggedChild, name: &str) -> Vec<String> {
    let said = format!("the name {name:?} is in use by another machine");
    agent.lines().into_iter().filter(|l| l.contains(&said)).collect()
}

#[test]
fn two_agents_with_one_name_do_not_storm() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.tail.push("[auth]\npin_agent_names = false\n".into());
    let gw = Gateway::start(&config);
    let connected = "Client twin connected";
    let gateway = gw.addr().to_string();
    let first = spawn_agent_binary(&gateway, KEY, "twin", closed_port(), &[]);
    gw.wait_for_event(connected, EVENT_TIMEOUT);

    // The second machine takes the name; the first hears `BYE replaced`.
    let second = spawn_agent_binary(&gateway, KEY, "twin", closed_port(), &[]);
    gw.wait_for_events(connected, 2, EVENT_TIMEOUT);
    let taken = Instant::now();
    gw.wait_for_event_prefix("Client twin replaced: ", EVENT_TIMEOUT);
    let said = first.wait_for_line("is in use by another machine", EVENT_TIMEOUT);
    assert!(
        said.contains("the name \"twin\" is in use by another machine") && said.contains("--name"),
        "a plain message naming the name and the fix: {said:?}"
    );

    // The first comes back only after the shortest pause of the slow
    // ladder, not within a second.
    let shortest = jitter(NAME_IN_USE_START, 0.0);
    gw.wait_for_events(connected, 3, NAME_IN_USE_START + EVENT_TIMEOUT);
    let back_after = taken.elapsed();
    assert!(
        back_after + SLACK >= shortest,
        "the replaced agent came back after {back_after:?}, before its pause of at least {shortest:?}"
    );
    // Now the second lost the name, and says so once.
    second.wait_for_line("is in use by another machine", EVENT_TIMEOUT);

    // In all: three registrations, one message from each agent, and no
    // storm in between (a storm would have registered many times).
    assert_eq!(gw.count_events(connected), 3, "registrations: {:#?}", gw.events());
    // Two replacements, one line: the second came within the minute.
    let replaced_lines = gw
        .events()
        .iter()
        .filter(|e| e.starts_with("Client twin replaced: "))
        .count();
    assert_eq!(replaced_lines, 1, "{:#?}", gw.events());
    assert_eq!(name_in_use_lines(&first, "twin").len(), 1, "{:#?}", first.lines());
    assert_eq!(name_in_use_lines(&second, "twin").len(), 1, "{:#?}", second.lines());
}

#[test]
fn a_name_storm_from_agents_that_do_not_back_off_is_logged_once() {
    /// Registrations of one name in a row, each replacing the last, as an
    /// agent that ignores `BYE replaced` would make.
    const FLAPS: usize = 6;
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let ep = gw.endpoint(KEY, "storm");
    // Each socket is kept, so every registration replaces a live channel.
    let channels: Vec<_> = (0..FLAPS).map(|_| register_raw(&ep)).collect();
    gw.wait_for_events("Client storm connected", FLAPS, EVENT_TIMEOUT);
    let replaced: Vec<String> = gw
        .events()
        .into_iter()
        .filter(|e| e.starts_with("Client storm replaced: "))
        .collect();
    assert_eq!(
        replaced.len(),
        1,
        "{FLAPS} registrations, one line within the minute: {replaced:#?}"
    );
    assert!(
        !replaced[0].contains(" more times "),
        "the first line has nothing to count: {replaced:?}"
    );
    drop(channels);
}
