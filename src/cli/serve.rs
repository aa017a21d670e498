//! `ringway serve`: run the gateway until SIGINT or SIGTERM.

use std::path::Path;

use crate::config;
use crate::eventlog::EventLog;
use crate::gateway::Gateway;

/// Loads the config, starts the gateway and waits for a signal.
pub fn serve(path: &Path) -> Result<(), String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
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

    // Block the signals we wait for before any worker starts, so that the
    // workers inherit the mask and only this thread receives them.
    let signals = SignalSet::new(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    signals.block();

    let max_clients = config.max_clients;
    let gateway = match Gateway::start(config, events.clone()) {
        Ok(g) => g,
        Err(e) => {
            events.event(format!("Failed to start Gateway - {e}"));
            if let crate::gateway::StartError::Bind { addr, .. } = &e {
                events.event(format!("Failed to bind to listening port {addr}"));
            }
            events.flush();
            return Err(e.to_string());
        }
    };
    let max = if max_clients == 0 {
        "unlimited".to_string()
    } else {
        max_clients.to_string()
    };
    events.event(format!("Gateway started. Max licensed connections: {max}"));

    while signals.wait() == libc::SIGHUP {
        log::warn!("SIGHUP received: live reload is not built yet; restart to apply changes");
    }
    gateway.shutdown();
    events.event("Gateway stopped");
    events.flush();
    Ok(())
}

/// A set of signals handled synchronously by one thread (sigwait).
struct SignalSet(libc::sigset_t);

impl SignalSet {
    fn new(signals: &[libc::c_int]) -> Self {
        // SAFETY: sigemptyset/sigaddset initialise and fill a plain sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            Self(set)
        }
    }

    /// Blocks the set on this thread (threads spawned later inherit it).
    fn block(&self) {
        // SAFETY: the set is initialised; a null old-set pointer is allowed.
        unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut());
        }
    }

    /// Waits for one of the signals and returns it.
    fn wait(&self) -> libc::c_int {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set is initialised and blocked on this thread.
        unsafe {
            libc::sigwait(&self.0, &mut sig);
        }
        sig
    }
}
