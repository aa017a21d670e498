//! `ringway serve`: run the gateway until SIGINT or SIGTERM, then drain
//! it (a second one ends the drain at once); SIGHUP (or `ringway
//! reload`) re-reads the config file and applies it live.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, Signal};

use crate::admin::{self, AdminOps};
use crate::config;
use crate::eventlog::EventLog;
use crate::gateway::{Gateway, Snapshot};

/// The running gateway and what a reload needs.
struct Controller {
    path: PathBuf,
    gateway: Gateway,
    events: EventLog,
    /// One reload at a time (SIGHUP and the admin listener may race).
    reloading: Mutex<()>,
}

impl AdminOps for Controller {
    fn snapshot(&self) -> Snapshot {
        self.gateway.snapshot()
    }

    fn totals(&self) -> crate::admin::render::Totals {
        let (connections_open, max_connections) = self.gateway.connections();
        let (heap_trims, heap_trim_micros) = self.gateway.heap_trims();
        crate::admin::render::Totals {
            agents_connected: self.gateway.agents_connected(),
            max_clients: self.gateway.config().max_clients,
            connections_open,
            max_connections,
            role: self.gateway.config().role,
            heap_trims,
            heap_trim_micros,
        }
    }

    fn signins(&self) -> Vec<crate::gateway::SignInEntry> {
        self.gateway.signins()
    }

    fn cluster(&self) -> Option<crate::gateway::ClusterStatus> {
        self.gateway.cluster_status()
    }

    fn drain(&self, on: bool) -> Result<String, String> {
        self.gateway.drain(on)
    }

    fn reload(&self) -> Result<String, String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let new = match config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                self.events
                    .event(format!("Reload rejected - {e}; the running configuration stays"));
                return Err(e.to_string());
            }
        };
        for w in &new.warnings {
            log::warn!("{w}");
        }
        let admin_changed = new.admin != self.gateway.config().admin;
        let mut report = self.gateway.reload(new);
        if admin_changed {
            report.warnings.push("[admin] changes need a restart".into());
        }
        for w in &report.warnings {
            self.events.event(format!("Reload: {w}"));
        }
        Ok(if report.warnings.is_empty() {
            "configuration reloaded".to_string()
        } else {
            format!("configuration reloaded; {}", report.warnings.join("; "))
        })
    }

    fn forget(&self, name: &str, key: Option<&str>) -> Result<String, String> {
        self.gateway.forget_pin(name, key)
    }
}

/// Loads the config, starts the gateway and waits for signals.
pub fn serve(path: &Path) -> Result<(), String> {
    // Block the signals we wait for before any thread starts (the event
    // log's writer included), so every thread inherits the mask and only
    // this one receives them: a signal landing on another thread would
    // take the default action and kill the process.
    let signals: SigSet = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP].into_iter().collect();
    signals
        .thread_block()
        .map_err(|e| format!("cannot block SIGINT, SIGTERM and SIGHUP: {e}"))?;
    let config = config::load(path).map_err(|e| e.to_string())?;
    for w in &config.warnings {
        log::warn!("{w}");
    }
    let fds = raise_fd_limit();
    let events = match &config.log {
        Some(log) => EventLog::start(log.clone()).map_err(|e| format!("cannot open the event log: {e}"))?,
        None => EventLog::stderr_only(),
    };
    events.event(format!(
        "ringway V{}, running on {}",
        env!("CARGO_PKG_VERSION"),
        crate::client::sysinfo::os_description()
    ));
    if config
        .keys
        .iter()
        .any(|k| k.id() == crate::auth::KeyId::of("change-me-please"))
    {
        log::warn!("the example gateway key is configured: replace it before exposing this gateway");
    }

    let fail = |why: String| {
        events.event(format!("Failed to start Gateway - {why}"));
        events.flush();
        why
    };
    let admin = match &config.admin {
        Some(a) => Some((
            std::net::TcpListener::bind(a.listen)
                .map_err(|e| fail(format!("cannot listen on admin address {}: {e}", a.listen)))?,
            a.clone(),
        )),
        None => None,
    };
    let max_clients = config.max_clients;
    let gateway = match Gateway::start(config, events.clone()) {
        Ok(g) => g,
        Err(e) => {
            if let crate::gateway::StartError::Bind { addr, .. } = &e {
                events.event(format!("Failed to bind to listening port {addr}"));
            }
            return Err(fail(e.to_string()));
        }
    };
    let max = if max_clients == 0 {
        "unlimited".to_string()
    } else {
        max_clients.to_string()
    };
    events.event(format!("Gateway started. Max licensed connections: {max}"));
    match fds {
        Ok(n) => {
            // Each agent holds one socket; sessions hold two more. Warn when
            // the licence cannot be reached within the process's limit.
            if max_clients > 0 && (max_clients as u64) + 64 > n {
                log::warn!("open-file limit {n} is below max_clients {max_clients}: raise it (LimitNOFILE=)");
            }
            log::info!("open-file limit: {n}");
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }

    let ctl = Arc::new(Controller {
        path: path.to_path_buf(),
        gateway,
        events: events.clone(),
        reloading: Mutex::new(()),
    });
    if let Some((listener, settings)) = admin {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        admin::spawn(listener, settings, ctl.clone()).map_err(|e| e.to_string())?;
        events.event(format!("Admin console on http://{addr}/"));
    }

    // Signals are taken here, synchronously, with sigwait, rather than
    // through compio's `signal` or signal-hook:
    // - compio's `signal(SIGHUP)` is one-shot: its listener installs the
    //   handler and, when dropped, puts back SIG_DFL, so a second SIGHUP
    //   arriving while the first reload runs would kill the gateway (the
    //   default action), and it would need a runtime on this thread;
    // - signal-hook would install a handler and a self-pipe to do what a
    //   blocked mask and sigwait do with no handler at all; the kernel
    //   keeps a signal that arrives during a reload pending for the next
    //   wait either way.
    // nix (already built for compio) gives the safe SigSet wrappers.
    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => match ctl.reload() {
                Ok(summary) => log::info!("SIGHUP: {summary}"),
                Err(why) => log::warn!("SIGHUP: reload refused: {why}"),
            },
            Ok(_) => break,
            // sigwait fails only on an invalid set, which the one above is
            // not; stopping is the safe answer if it ever did.
            Err(e) => {
                log::error!("waiting for signals failed: {e}; stopping");
                break;
            }
        }
    }
    ctl.gateway.begin_shutdown();
    // During the drain a second SIGTERM or SIGINT ends it at once (an
    // operator who will not wait); SIGHUP no longer reloads.
    // Weak: the thread stays blocked in sigwait until the process exits,
    // and must not keep the gateway (and so the event log, whose last
    // clone going is what writes the summaries of open windows) alive.
    let hurry = Arc::downgrade(&ctl);
    let second = std::thread::Builder::new()
        .name("ringway-signals".into())
        .spawn(move || {
            while let Ok(Signal::SIGHUP) = signals.wait() {
                log::info!("SIGHUP during shutdown: ignored");
            }
            if let Some(ctl) = hurry.upgrade() {
                ctl.gateway.cut_short();
            }
        });
    if let Err(e) = second {
        log::warn!("cannot wait for a second signal ({e}); the drain runs its course");
    }
    ctl.gateway.wait_stopped();
    events.event("Gateway stopped");
    events.flush();
    Ok(())
}

/// Raises the soft open-file limit to the hard one and returns it. Every
/// agent holds a socket; the usual soft limit of 1,024 would cap a
/// gateway near a thousand agents while the hard limit allows far more.
fn raise_fd_limit() -> std::io::Result<u64> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}
