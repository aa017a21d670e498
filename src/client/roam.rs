//! The I/O half of moving between gateways, shared by `ringway agent` and
//! the load generator's agents: one round of registrations over the list,
//! the probes that bring an agent home, and leaving the old channel. The
//! rules themselves (order, hold-down, spread) are in [`super::failover`],
//! without I/O.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use super::failover::{
    HoldDown, PROBE_TIMEOUT, REGISTER_TIMEOUT, attempt_order, default_hold_down, default_probe_interval,
    homecoming_spread, move_kind, probe_pause,
};
use super::{AgentChannel, AgentInfo, ClientError, Endpoint, Outgoing, health};
use crate::proto::{FromAgent, Move};

/// How long an agent gives its old channel to write `BYE failback` after
/// registering elsewhere; the old gateway drops it anyway once the socket
/// closes.
pub const BYE_WAIT: Duration = Duration::from_secs(2);

/// When an agent on a secondary goes home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Homing {
    /// The probe interval (each pause jittered between half and all).
    pub probe: Duration,
    /// How long the gateway must answer every probe.
    pub hold_down: Duration,
    /// How far past the hold-down the move is spread.
    pub spread: Duration,
}

impl Homing {
    /// The settings for a channel polling every `cmpi`: the given probe
    /// interval and hold-down, else the defaults of [`super::failover`].
    pub fn for_cmpi(cmpi: Duration, probe: Option<Duration>, hold_down: Option<Duration>) -> Homing {
        let probe = probe.unwrap_or_else(|| default_probe_interval(cmpi));
        let hold_down = hold_down.unwrap_or_else(|| default_hold_down(probe));
        Homing {
            probe,
            hold_down,
            spread: homecoming_spread(cmpi, probe, hold_down),
        }
    }
}

/// One round of registrations: each gateway in [`attempt_order`] (the
/// one in `avoid` last) until one takes the agent, naming `last`, the
/// gateway whose channel it held before, as where it comes from. A
/// gateway that does not answer gets [`REGISTER_TIMEOUT`] when there is
/// another to try. Each failure is told to `failed` with the gateway's
/// index; `None` when every gateway failed.
pub async fn register_round(
    eps: &[Endpoint],
    info: &AgentInfo,
    last: Option<usize>,
    avoid: Option<usize>,
    mut failed: impl FnMut(usize, ClientError),
) -> Option<(usize, AgentChannel)> {
    for i in attempt_order(eps.len(), avoid) {
        let previous = move_kind(last, i)
            .zip(last)
            .map(|(kind, from)| (kind, eps[from].gateway.as_str()));
        let attempt = AgentChannel::register_moved(&eps[i], info, previous);
        let res = if eps.len() > 1 {
            compio::time::timeout(REGISTER_TIMEOUT, attempt)
                .await
                .unwrap_or(Err(ClientError::Timeout("the gateway did not answer the registration")))
        } else {
            attempt.await
        };
        match res {
            Ok(channel) => return Some((i, channel)),
            Err(e) => failed(i, e),
        }
    }
    None
}

/// Probes `better` (the gateways before the current one, best first)
/// with `GET /v1/health`, each pause placed by `random` (0.0 to 1.0),
/// until one has answered every probe for the hold-down; then, after a
/// random part of the spread, registers there (`Ringway-Previous:
/// failback <from>`) and returns its index and channel. A gateway that
/// answers is the one watched: those after it are not probed meanwhile.
/// A registration that fails there is told to `failed` and starts its
/// hold-down over. Runs until it succeeds: the caller drops it when the
/// current channel ends first.
pub async fn go_home(
    better: &[Endpoint],
    info: &AgentInfo,
    from: &str,
    homing: Homing,
    random: impl Fn() -> f64,
    mut failed: impl FnMut(usize, ClientError),
) -> (usize, AgentChannel) {
    let mut holds: Vec<HoldDown> = better.iter().map(|_| HoldDown::new(homing.hold_down)).collect();
    loop {
        compio::time::sleep(probe_pause(homing.probe, random())).await;
        for (i, ep) in better.iter().enumerate() {
            let answer = compio::time::timeout(PROBE_TIMEOUT, health(ep))
                .await
                .ok()
                .and_then(Result::ok);
            let boot = answer.as_ref().map(|a| a.boot.as_str());
            if holds[i].probed(boot, Instant::now()) {
                compio::time::sleep(homing.spread.mul_f64(random().clamp(0.0, 1.0))).await;
                let attempt = AgentChannel::register_moved(ep, info, Some((Move::Failback, from)));
                match compio::time::timeout(REGISTER_TIMEOUT, attempt).await {
                    Ok(Ok(channel)) => return (i, channel),
                    Ok(Err(e)) => failed(i, e),
                    Err(_) => failed(i, ClientError::Timeout("the gateway did not answer the registration")),
                }
                holds[i] = HoldDown::new(homing.hold_down);
            }
            if answer.is_some() {
                break;
            }
        }
    }
}

/// Where an agent on a secondary would go home to, and when.
#[derive(Clone, Copy)]
pub struct Home<'a> {
    /// The gateways before the current one, best first.
    pub better: &'a [Endpoint],
    /// What the agent registers with.
    pub info: &'a AgentInfo,
    /// The gateway it is on, as `Ringway-Previous` names it.
    pub from: &'a str,
    /// Probe interval, hold-down and spread.
    pub homing: Homing,
}

/// How [`run_or_go_home`] ended.
pub enum Moved<T> {
    /// The channel ended first, as this says.
    Ended(T),
    /// The agent registered with `home.better[.0]` and left the old
    /// channel (`BYE failback`); the new channel.
    Home(usize, AgentChannel),
}

/// Runs `run` (the current channel's [`AgentChannel::run`], `outgoing`
/// its frame queue) while [`go_home`] probes the gateways before it; if
/// one takes the agent first, leaves the old channel ([`leave`]) and
/// returns the new one.
pub async fn run_or_go_home<T>(
    run: impl Future<Output = T>,
    outgoing: &Outgoing,
    home: Home<'_>,
    random: impl Fn() -> f64,
    failed: impl FnMut(usize, ClientError),
) -> Moved<T> {
    let mut run = pin!(run);
    let going = pin!(go_home(home.better, home.info, home.from, home.homing, random, failed));
    match select(run.as_mut(), going).await {
        Either::Left((end, _)) => Moved::Ended(end),
        Either::Right(((at, channel), _)) => {
            leave(outgoing, run).await;
            Moved::Home(at, channel)
        }
    }
}

/// Leaves a channel the agent no longer needs (it is registered
/// elsewhere): queues `BYE failback` on `outgoing` and lets `run`, the
/// channel's [`AgentChannel::run`], write it, for at most [`BYE_WAIT`].
/// The channel's sessions are connections of their own and go on.
pub async fn leave<F: Future>(outgoing: &Outgoing, run: F) {
    outgoing.send(FromAgent::Bye(Move::Failback.as_str().into())).await;
    let _ = compio::time::timeout(BYE_WAIT, run).await;
}
