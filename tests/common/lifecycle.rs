//! Changing a running gateway: rewriting its config and reloading it (by
//! SIGHUP or `ringway reload`), and stopping it with SIGTERM.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::{COMMAND_TIMEOUT, EVENT_TIMEOUT, Finished, Gateway, GatewayConfig, poll_until, run_bounded};

/// Logged once every worker has applied a reload.
pub const RELOADED: &str = "Configuration reloaded";

/// The last events of a gateway stopped with nothing left to drain, with
/// the default 30 s grace.
pub fn quiet_stop_lines() -> Vec<String> {
    [
        "Shutting down: stopped accepting connections; 0 clients told to go, 0 waiting sessions refused, 0 sessions running (grace 30 s)",
        "Shutdown drain over: 0 sessions finished, 0 cut",
        "Gateway stopped",
    ]
    .map(String::from)
    .to_vec()
}

impl Gateway {
    /// Replaces the config file (for the next reload).
    pub fn rewrite(&self, config: &GatewayConfig) {
        fs::write(self.config_path(), config.to_toml(self.dir())).expect("rewrite the gateway config");
    }

    /// Sends `signal` to the gateway as it is; see [`Gateway::sighup`] for
    /// when that is safe.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pids fit in pid_t");
        // SAFETY: kill has no memory effects; the pid is our own child,
        // not yet reaped (LoggedChild reaps it only when killing it).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal the gateway");
    }

    /// Sends SIGHUP (re-read the config file). Safe any time after the
    /// start events: the gateway blocks its signals before any thread
    /// starts, so one arriving outside `sigwait` waits for it.
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Reloads through SIGHUP and waits until every worker runs the new
    /// config.
    pub fn reload_by_sighup(&self) {
        let done = self.count_events(RELOADED);
        self.sighup();
        self.wait_reloaded(done + 1);
    }

    /// Waits for the `n`th `Configuration reloaded`.
    pub fn wait_reloaded(&self, n: usize) {
        self.wait_for_events(RELOADED, n, EVENT_TIMEOUT);
    }

    /// Runs `ringway reload --admin ADDR`.
    pub fn reload_command(&self) -> Finished {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg("reload").arg("--admin").arg(self.admin().to_string());
        run_bounded(cmd, b"", COMMAND_TIMEOUT)
    }

    /// SIGTERM, then waits for the process to exit: it flushes the event
    /// log before exiting, so every line is in the files afterwards.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        self.wait_for_event("Gateway stopped", EVENT_TIMEOUT);
        assert!(
            self.wait_exited(EVENT_TIMEOUT),
            "the gateway did not exit after SIGTERM"
        );
        self.kill();
    }

    /// Waits up to `timeout` for the process to exit; false if it did not.
    pub fn wait_exited(&self, timeout: Duration) -> bool {
        let stat = format!("/proc/{}/stat", self.pid());
        // The exit has no event of its own: the child turns zombie (it is
        // reaped only by kill()), a state /proc shows.
        let exited = poll_until(timeout, || {
            let text = fs::read_to_string(&stat).ok()?;
            let state = text.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
            (state == Some('Z')).then_some(())
        });
        exited.is_some()
    }
}
