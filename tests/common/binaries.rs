//! The real `ringway` client binaries, run as operators run them: the key
//! in `RINGWAY_KEY`, never on the command line; and any other `ringway`
//! command (`gen-key`, `operator add`).

use std::net::SocketAddr;
use std::process::Command;

use super::{EVENT_TIMEOUT, LoggedChild};

/// Where `ringway control connect --listen` names its local address.
const CONTROL_LISTENING: &str = "listening on ";

/// A `ringway` command with `args`, logging at info.
pub fn ringway_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.args(args).env("RUST_LOG", "info");
    cmd
}

/// A `ringway` command with `args`, proving `key`, logging at info.
pub fn ringway_client(key: &str, args: &[&str]) -> Command {
    let mut cmd = ringway_command(args);
    cmd.env("RINGWAY_KEY", key);
    // The boot ids `ringway control` keeps between runs go to a folder of
    // this test process (a test may point it elsewhere), never the user's
    // ~/.cache.
    cmd.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join(format!("ringway-test-cache-{}", std::process::id())),
    );
    cmd
}

/// Starts the real `ringway agent` on `gateway` (an address, or an
/// `https://` URL with trust options in `extra`), publishing `expose`.
pub fn spawn_agent_binary(gateway: &str, key: &str, name: &str, expose: SocketAddr, extra: &[&str]) -> LoggedChild {
    let expose = expose.to_string();
    let mut cmd = ringway_client(key, &["agent", "--gateway", gateway]);
    // One state folder for every agent a test process starts (unless the
    // test gives --state-dir): "this machine", as for library agents, and
    // never the user's own ~/.local/state.
    let state = std::env::temp_dir().join(format!("ringway-test-agent-state-{}", std::process::id()));
    cmd.env("XDG_STATE_HOME", state);
    cmd.args(extra).args(["--name", name, "--expose", &expose]);
    LoggedChild::spawn(&format!("agent {name}"), cmd)
}

/// Starts the real `ringway control connect AGENT --as NAME --listen
/// 127.0.0.1:0` on `gateway` (with `extra` options, as for
/// [`spawn_agent_binary`]); returns it and the local address it listens on.
pub fn spawn_control_binary(
    gateway: &str,
    key: &str,
    name: &str,
    agent: &str,
    extra: &[&str],
) -> (LoggedChild, SocketAddr) {
    let mut cmd = ringway_client(key, &["control", "connect", agent, "--gateway", gateway]);
    cmd.args(extra).args(["--as", name, "--listen", "127.0.0.1:0"]);
    let control = LoggedChild::spawn(&format!("control {name}"), cmd);
    let line = control.wait_for_line(CONTROL_LISTENING, EVENT_TIMEOUT);
    (control, address_after(&line, CONTROL_LISTENING))
}

/// The address at the end of a log line, after `marker` (a trailing `/` or
/// `;...` is cut off).
fn address_after(line: &str, marker: &str) -> SocketAddr {
    line.rsplit_once(marker)
        .map(|(_, rest)| rest.split([';', '/']).next().unwrap_or(rest).trim())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {marker:?} in {line:?}"))
}
