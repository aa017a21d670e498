//! `ringway agent`: publish a local TCP service through a gateway, and
//! stay registered: move to the next gateway of its list (`--secondary`)
//! when one goes away, back to the primary once it has stayed up for the
//! hold-down (see [`crate::client::failover`]), reconnect with jittered
//! exponential backoff when none answers, and back off much longer when
//! the gateway gave the name to another machine (see
//! [`crate::client::backoff`]).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use compio::net::TcpStream;
use ring::rand::SecureRandom;

use super::ClientArgs;
use crate::client::backoff::{Backoff, Pause};
use crate::client::identity::{AgentIdentity, default_state_dir};
use crate::client::roam::{self, Home, Homing, Moved};
use crate::client::{
    self, AgentChannel, AgentHandler, AgentInfo, ChannelEnd, ClientError, Endpoint, Outgoing, sysinfo,
};
use crate::proto::{FromAgent, SessionId};
use crate::relay::{Counters, relay};

/// Most sessions served at once. Each holds two relay buffers (128 KiB)
/// and a socket to the local service, so this bounds what a flood of
/// `OPEN`s from the gateway can take (32 MiB); a remote-support machine
/// has a handful of sessions, never hundreds. Past it the agent answers
/// `FAIL`, which the control sees as `502`.
const MAX_SESSIONS: usize = 256;
/// How long the agent waits for its local service to accept. Shorter than
/// the gateway's pairing deadline (10 s by default), so a service that
/// does not answer becomes a quick FAIL (502) rather than a 504.
const LOCAL_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Relay buffer per direction on the agent's side.
const RELAY_BUFFER: usize = 64 * 1024;

/// Arguments of `ringway agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Read the settings from this TOML file: each is the long option of
    /// the same name (`gateway = "..."`, `secondary = ["...", "..."]`,
    /// `key_file`, `expose`, `name`, `ca_file`, `pin_sha256`, `insecure`,
    /// `state_dir`, `dead_after`, `probe_secs`, `hold_down_secs`). An
    /// option on the command line wins over the file.
    #[arg(long, value_name = "FILE")]
    _config: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
    /// This agent's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// The local service to publish, HOST:PORT (e.g. 127.0.0.1:22).
    #[arg(long)]
    expose: String,
    /// Where the agent keeps its key pair (made on the first run; the
    /// gateway pins this agent's name to it). Default:
    /// $XDG_STATE_HOME/ringway, else ~/.local/state/ringway.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Treat a gateway that sends nothing for this long as gone, and move
    /// to the next (default: the gateway's CMPI + 10 s). Down to 2 s: the
    /// agent then polls every half of it.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=86_400))]
    dead_after: Option<u64>,
    /// While on a secondary, probe the gateways before it this often,
    /// jittered between half and all of it (default: CMPI / 5, 1 to 60 s).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    probe_secs: Option<u64>,
    /// Move back only to a gateway that has answered every probe for this
    /// long (default: two probe intervals), so a flapping primary does not
    /// make agents flap.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    hold_down_secs: Option<u64>,
}

/// How the agent moves between its gateways.
struct Moves {
    /// `--dead-after`, if given.
    dead_after: Option<Duration>,
    /// `--probe-secs`, if given (else from the CMPI).
    probe: Option<Duration>,
    /// `--hold-down-secs`, if given (else from the probe interval).
    hold_down: Option<Duration>,
}

/// Runs the agent until killed.
pub fn run(args: AgentArgs) -> Result<(), String> {
    let name = args.name.unwrap_or_else(sysinfo::hostname);
    if !crate::proto::valid_name(&name) {
        return Err(format!("invalid agent name {name:?}: 1 to 64 characters, not blank"));
    }
    let state_dir = args
        .state_dir
        .or_else(default_state_dir)
        .ok_or("no state folder: set --state-dir (or XDG_STATE_HOME or HOME)")?;
    let identity = Arc::new(AgentIdentity::load_or_create(&state_dir)?);
    log::info!("agent key {} (in {})", identity.public(), state_dir.display());
    let mut eps = args.client.endpoints(&name)?;
    for ep in &mut eps {
        ep.agent_key = Some(identity.clone());
    }
    let moves = Moves {
        dead_after: args.dead_after.map(Duration::from_secs),
        probe: args.probe_secs.map(Duration::from_secs),
        hold_down: args.hold_down_secs.map(Duration::from_secs),
    };
    let expose = Rc::new(args.expose);
    super::client_runtime()?.block_on(async move {
        let mut backoff = Backoff::new();
        let sessions = Rc::new(Cell::new(0usize));
        // The gateway whose channel this agent held last, and the one to
        // try last in the next round (it just failed).
        let mut last: Option<usize> = None;
        let mut avoid: Option<usize> = None;
        loop {
            let info = AgentInfo {
                mac: sysinfo::mac_address(),
                local_ip: String::new(),
                os: sysinfo::os_description(),
            };
            // A 409 (the name is pinned to another machine's agent key)
            // is said once below, with its pause on the slow ladder.
            let taken = Cell::new(false);
            let failed = |i: usize, e: ClientError| match e {
                ClientError::Refused { status: 409, .. } => taken.set(true),
                e => log::warn!("cannot register with {}: {e}", eps[i].gateway),
            };
            let Some((at, channel)) = roam::register_round(&eps, &info, last, avoid, failed).await else {
                avoid = None;
                let pause = if taken.get() {
                    backoff.after_name_taken(random_fraction())
                } else {
                    backoff.after_failure(random_fraction())
                };
                say_pause(&name, pause);
                compio::time::sleep(pause.duration()).await;
                continue;
            };
            backoff.registered();
            let since = Instant::now();
            let (at, end) = hold(&eps, &info, &moves, &expose, &sessions, at, channel, &mut last).await;
            let replaced = matches!(&end, Ok(end) if end.is_replaced());
            let gw = &eps[at].gateway;
            match end {
                // Said below, with the pause.
                Ok(_) if replaced => {}
                Ok(ChannelEnd::Bye(reason)) => log::warn!("gateway {gw} closed the channel: {reason}"),
                Ok(ChannelEnd::Closed) => log::warn!("gateway {gw} closed the channel"),
                Ok(ChannelEnd::Left(reason)) => log::info!("left gateway {gw} ({reason})"),
                Err(e) => log::warn!("channel to {gw} lost: {e}"),
            }
            // The next round tries the others first; a pause of the quick
            // ladder (0.5-1 s after a channel that worked) spreads agents
            // that lost their gateway together. A replaced channel says
            // nothing against its gateway (another machine has the name),
            // so the next round starts with the primary as usual.
            avoid = (!replaced).then_some(at);
            let pause = backoff.after_channel(replaced, since.elapsed(), random_fraction());
            say_pause(&name, pause);
            compio::time::sleep(pause.duration()).await;
        }
    })
}

/// Says why the agent pauses and for how long; plainly when the name is
/// another machine's.
fn say_pause(name: &str, pause: Pause) {
    match pause {
        Pause::Retry(d) => log::info!("reconnecting in {:.1} s", d.as_secs_f64()),
        Pause::NameInUse(d) => log::warn!(
            "the name {name:?} is in use by another machine: the gateway gave it to a newer registration. \
             Trying again in {:.0} s; give each machine its own name with --name",
            d.as_secs_f64()
        ),
        Pause::NameTaken(d) => log::warn!(
            "the name {name:?} is taken by another machine: the gateway has it pinned to that machine's key. \
             Trying again in {:.0} s; give this machine its own name with --name, or have the \
             administrator release the name with `ringway agents forget`",
            d.as_secs_f64()
        ),
    }
}

/// Serves the channel with gateway `at`, and, while that is not the
/// first in the list, probes the ones before it and moves back to one
/// that has stayed up for the hold-down: register there, then `BYE
/// failback` to the old one. Returns when a channel ends otherwise: the
/// gateway it was with, and how it ended. `last` follows the gateway held.
#[allow(clippy::too_many_arguments)]
async fn hold(
    eps: &[Endpoint],
    info: &AgentInfo,
    moves: &Moves,
    expose: &Rc<String>,
    sessions: &Rc<Cell<usize>>,
    mut at: usize,
    mut channel: AgentChannel,
    last: &mut Option<usize>,
) -> (usize, Result<ChannelEnd, ClientError>) {
    loop {
        *last = Some(at);
        // A cluster gateway may have redirected the registration: the
        // channel, and the sessions it opens, are with that one.
        let ep = &channel.redirected().cloned().unwrap_or_else(|| eps[at].clone());
        channel.set_dead_after(moves.dead_after);
        log::info!(
            "registered with {} as {:?} (poll every {} s)",
            ep.gateway,
            ep.identity,
            channel.cmpi().as_secs()
        );
        let homing = Homing::for_cmpi(channel.cmpi(), moves.probe, moves.hold_down);
        // Sessions carry the endpoint of the gateway that opened them, so
        // a move of the channel leaves them where they are.
        let handler = Sessions {
            ep: ep.clone(),
            expose: expose.clone(),
            outgoing: channel.outgoing(),
            running: sessions.clone(),
        };
        let outgoing = channel.outgoing();
        let run = channel.run(&handler);
        if at == 0 {
            return (at, run.await);
        }
        let home = Home {
            better: &eps[..at],
            info,
            from: &ep.gateway,
            homing,
        };
        let failed = |i: usize, e: ClientError| log::warn!("cannot move back to {}: {e}", eps[i].gateway);
        match roam::run_or_go_home(run, &outgoing, home, random_fraction, failed).await {
            Moved::Ended(end) => return (at, end),
            Moved::Home(home, new_channel) => {
                // Its sessions go on, on their own connections.
                log::info!(
                    "moved back to {} (failback from {}); sessions through {} go on",
                    eps[home].gateway,
                    ep.gateway,
                    ep.gateway
                );
                (at, channel) = (home, new_channel);
            }
        }
    }
}

/// A random fraction between 0 and 1 to place a pause in its jitter range.
fn random_fraction() -> f64 {
    let mut b = [0u8; 2];
    match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX),
        // No randomness: the whole step, the safe end for a gateway.
        Err(_) => 1.0,
    }
}

/// Opens each session the gateway asks for: dial the local service, then
/// the gateway, and relay.
struct Sessions {
    ep: Endpoint,
    expose: Rc<String>,
    outgoing: Outgoing,
    /// Sessions running, across channels (a session outlives the channel
    /// that opened it), bounded by [`MAX_SESSIONS`].
    running: Rc<Cell<usize>>,
}

/// Counts one running session for as long as it lives.
struct SessionSlot(Rc<Cell<usize>>);

impl SessionSlot {
    fn take(running: &Rc<Cell<usize>>) -> Option<SessionSlot> {
        (running.get() < MAX_SESSIONS).then(|| {
            running.set(running.get() + 1);
            SessionSlot(running.clone())
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl AgentHandler for Sessions {
    fn cmpi_changed(&self, interval: Duration) {
        log::info!("the gateway set the poll interval to {} s", interval.as_secs());
    }

    fn open(&self, sid: SessionId) {
        let Some(slot) = SessionSlot::take(&self.running) else {
            log::warn!("session {sid}: refused, {MAX_SESSIONS} sessions are already running");
            // Answered without a task, so a flood of OPENs holds nothing;
            // if even the queue is full, the control gets a 504 instead.
            self.outgoing.try_send(FromAgent::Fail(sid));
            return;
        };
        let (ep, expose, outgoing) = (self.ep.clone(), self.expose.clone(), self.outgoing.clone());
        compio::runtime::spawn(async move {
            let _slot = slot;
            let dial = compio::time::timeout(LOCAL_DIAL_TIMEOUT, TcpStream::connect(expose.as_str()));
            let local = match dial.await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("session {sid}: cannot reach {expose}: {e}");
                    outgoing.send(FromAgent::Fail(sid)).await;
                    return;
                }
            };
            let _ = local.set_nodelay(true);
            let session = match client::join(&ep, sid).await {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("session {sid}: cannot join: {e}");
                    return;
                }
            };
            log::info!("session {sid} open to {expose}");
            let counters = Counters::default();
            let res = relay(
                &session.stream,
                session.early,
                &local,
                Vec::new(),
                RELAY_BUFFER,
                &counters,
            )
            .await;
            log::info!(
                "session {sid} closed ({} bytes in, {} out){}",
                counters.a_to_b.get(),
                counters.b_to_a.get(),
                res.err().map(|e| format!(": {e}")).unwrap_or_default()
            );
        })
        .detach();
    }
}
