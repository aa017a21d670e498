//! Simulated agents: each registers through the client library, polls at
//! the CMPI the gateway announces, and serves the sessions opened to it by
//! echoing their bytes, so that controls have something to talk to without
//! a local service behind every agent. Like a real agent, one whose channel
//! ends registers again after a jittered, growing pause, on the real
//! agent's ladders ([`ringway::client::backoff`]): two runs that share
//! names do not storm the gateway either.
//!
//! An idle agent is one task holding its channel (socket, read buffer,
//! outgoing queue), its name and a clone of the endpoint: about 8 KiB of
//! RSS each (5,000 agents: 44 MiB), so 20,000 fit a process easily.

use std::cell::Cell;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::BufResult;
use ringway::client::backoff::Backoff;
use ringway::client::failover::move_kind;
use ringway::client::roam::{self, Home, Homing, Moved};
use ringway::client::{self, AgentChannel, AgentHandler, AgentInfo, ChannelEnd, ClientError, Endpoint};
use ringway::proto::{Move, SessionId};
use ringway::relay::Duplex;

use crate::churn::Churn;
use crate::stats::{ErrorKind, Metric, Op, Recorder};

/// Echo buffer of a session's data connection: the gateway's default relay
/// buffer, so that bulk runs are not limited by the echo's reads.
const ECHO_BUFFER: usize = 64 * 1024;
/// What simulated agents report as their operating system, so that they
/// stand out in the console and the gateway's log.
const AGENT_OS: &str = "ringway-loadgen";

/// What every simulated agent of a run shares.
#[derive(Debug)]
pub struct AgentSpec {
    /// The gateway, its key and TLS settings, then each `--secondary`;
    /// each agent's endpoints are these with its own name and source
    /// address.
    pub gateways: Vec<Endpoint>,
    /// Names are `prefix` + index.
    pub prefix: String,
    /// Index of agent 0, so that load generators can share a gateway.
    pub first_index: u64,
    /// How many agents in all (over every thread).
    pub count: u64,
    /// Agents started per second; 0 = all at once.
    pub ramp: u64,
    /// Source addresses, dealt round-robin; empty lets the OS choose.
    pub sources: Vec<IpAddr>,
    /// When agents hang up and register again (`--churn`); `None` keeps
    /// every channel for the whole run.
    pub churn: Option<Churn>,
}

impl AgentSpec {
    /// The name of agent `i` (0-based within this run).
    pub fn name(&self, i: u64) -> String {
        format!("{}{}", self.prefix, self.first_index + i)
    }

    /// Agent `i`'s endpoints, the primary first. Each shares the boot id
    /// cache of its gateway's template with every agent's (the gateways'
    /// boot ids differ, so each has its own).
    fn endpoints(&self, i: u64) -> Vec<Endpoint> {
        let bind = (!self.sources.is_empty()).then(|| self.sources[i as usize % self.sources.len()]);
        self.gateways
            .iter()
            .map(|template| Endpoint {
                identity: self.name(i),
                bind,
                ..template.clone()
            })
            .collect()
    }
}

/// Starts this thread's share of the agents (`thread`, `thread + threads`,
/// ...), each at its place in the ramp that began at `start`.
pub async fn start_share(spec: Arc<AgentSpec>, thread: u64, threads: u64, start: Instant, rec: Recorder) {
    for i in (thread..spec.count).step_by(threads.max(1) as usize) {
        if spec.ramp > 0 {
            compio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / spec.ramp as f64)).await;
        }
        let churn = spec.churn.map(|c| (c, start));
        compio::runtime::spawn(agent(spec.endpoints(i), i, churn, rec.clone())).detach();
    }
}

/// One agent, registered again whenever its channel ends, until the run
/// drops it; with `churn` (and the run's start) it also hangs up on its
/// schedule and registers again at once. With secondaries (`eps` holds
/// more than the primary) it moves between them as `ringway agent` does
/// ([`ringway::client::roam`]): on to the next gateway when its channel
/// ends, home once the primary has stayed up for the hold-down.
async fn agent(eps: Vec<Endpoint>, index: u64, churn: Option<(Churn, Instant)>, rec: Recorder) {
    // An empty local IP is filled in by the library from the socket.
    let info = AgentInfo {
        mac: String::new(),
        local_ip: String::new(),
        os: AGENT_OS.to_string(),
    };
    let mut backoff = Backoff::new();
    let mut attempts = 0u64;
    let mut registered_before = false;
    // The gateway whose channel this agent held last, and the one the
    // next round tries last.
    let (mut last, mut avoid) = (None, None);
    loop {
        let asked = Instant::now();
        attempts += 1;
        let frac = spread(index, attempts);
        let failed = |_, e: ClientError| rec.client_error(Op::Register, &e);
        let pause = match roam::register_round(&eps, &info, last, avoid, failed).await {
            Some((at, channel)) => {
                let cmpi = channel.cmpi().as_secs();
                let failover = move_kind(last, at) == Some(Move::Failover);
                rec.with(|s| {
                    s.record(Metric::Register, asked.elapsed());
                    s.counters.registered += 1;
                    s.counters.agents_up += 1;
                    s.counters.reconnects += u64::from(registered_before);
                    s.counters.failovers += u64::from(failover);
                    s.cmpi_secs = Some(cmpi);
                });
                registered_before = true;
                backoff.registered();
                let since = Instant::now();
                let hang_up = churn.map(|(c, start)| c.next(index, start, Instant::now()));
                let held = Held {
                    eps: &eps,
                    info: &info,
                    index,
                    rec: &rec,
                };
                let (at, end) = held.hold(at, channel, hang_up, &mut last).await;
                rec.with(|s| s.counters.agents_up -= 1);
                let Some(end) = end else {
                    // Hung up on schedule, as a rebooted machine would:
                    // not an error, and back at once (to the same list).
                    rec.with(|s| s.counters.churned += 1);
                    avoid = None;
                    continue;
                };
                let replaced = matches!(&end, Ok(end) if end.is_replaced());
                let gw = &eps[at].gateway;
                match end {
                    Ok(ChannelEnd::Bye(reason)) => rec.error(
                        Op::Channel,
                        ErrorKind::Closed,
                        &format!("{}: {gw} said BYE {reason}", eps[at].identity),
                    ),
                    Ok(ChannelEnd::Closed) => rec.error(
                        Op::Channel,
                        ErrorKind::Closed,
                        &format!("{}: {gw} closed the channel", eps[at].identity),
                    ),
                    // Only a move home says BYE, and that channel is not
                    // the one that ended.
                    Ok(ChannelEnd::Left(_)) => {}
                    Err(e) => rec.client_error(Op::Channel, &e),
                }
                avoid = (!replaced).then_some(at);
                backoff.after_channel(replaced, since.elapsed(), frac)
            }
            None => {
                avoid = None;
                backoff.after_failure(frac)
            }
        };
        compio::time::sleep(pause.duration()).await;
    }
}

/// What an agent holding its channel needs besides the channel.
struct Held<'a> {
    eps: &'a [Endpoint],
    info: &'a AgentInfo,
    index: u64,
    rec: &'a Recorder,
}

impl Held<'_> {
    /// Serves the channel with gateway `at` until it ends or `hang_up`
    /// comes (`None` then), moving home whenever it is on a secondary and
    /// the primary has stayed up (counted as a failback). The gateway the
    /// last channel was with, and how that ended.
    async fn hold(
        &self,
        mut at: usize,
        mut channel: AgentChannel,
        hang_up: Option<Instant>,
        last: &mut Option<usize>,
    ) -> (usize, Option<Result<ChannelEnd, ClientError>>) {
        // Draws for probe pauses, apart from those of the reconnect pauses.
        let draws = Cell::new(1u64 << 32);
        let random = || {
            draws.set(draws.get() + 1);
            spread(self.index, draws.get())
        };
        loop {
            *last = Some(at);
            let ep = &self.eps[at];
            // A cluster gateway may have sent the registration to another
            // one: sessions join where the channel is.
            let joined_at = channel.redirected().cloned();
            let homing = Homing::for_cmpi(channel.cmpi(), None, None);
            let outgoing = channel.outgoing();
            let echoer = Echoer {
                ep: joined_at.as_ref().unwrap_or(ep),
                rec: self.rec,
            };
            let run = crate::churn::run_until(channel.run(&echoer), hang_up);
            if at == 0 {
                return (at, run.await);
            }
            let home = Home {
                better: &self.eps[..at],
                info: self.info,
                from: &ep.gateway,
                homing,
            };
            let failed = |_, e: ClientError| self.rec.client_error(Op::Register, &e);
            match roam::run_or_go_home(run, &outgoing, home, random, failed).await {
                Moved::Ended(end) => return (at, end),
                Moved::Home(home, new_channel) => {
                    self.rec.with(|s| {
                        s.counters.registered += 1;
                        s.counters.reconnects += 1;
                        s.counters.failbacks += 1;
                    });
                    (at, channel) = (home, new_channel);
                }
            }
        }
    }
}

/// A fraction between 0 and 1, different for each agent and attempt, to
/// place a pause in its jitter range, so that agents cut off together do
/// not return together.
fn spread(index: u64, attempt: u64) -> f64 {
    // splitmix64: a well-mixed hash of (index, attempt) is all the
    // randomness a spread of reconnects needs.
    let mut z = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ attempt.wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Serves an agent's sessions by echoing.
struct Echoer<'a> {
    ep: &'a Endpoint,
    rec: &'a Recorder,
}

impl AgentHandler for Echoer<'_> {
    fn open(&self, sid: SessionId) {
        let (ep, rec) = (self.ep.clone(), self.rec.clone());
        let heard = Instant::now();
        compio::runtime::spawn(async move {
            let session = match client::join(&ep, sid).await {
                Ok(s) => s,
                Err(e) => return rec.client_error(Op::Join, &e),
            };
            rec.with(|s| {
                s.record(Metric::Join, heard.elapsed());
                s.counters.sessions_served += 1;
            });
            if let Err(e) = echo(&session.stream, session.early).await {
                rec.error(
                    Op::Echo,
                    ErrorKind::of_io(&e),
                    &format!("{}: session {sid}: {e}", ep.identity),
                );
            }
        })
        .detach();
    }

    fn pong(&self, rtt: Duration) {
        self.rec.with(|s| {
            s.record(Metric::PollRtt, rtt);
            s.counters.polls += 1;
        });
    }
}

/// Writes back every byte read until the control's side ends, then ends
/// ours: the half-close travels back through the gateway to the control.
async fn echo(stream: &impl Duplex, early: Vec<u8>) -> io::Result<()> {
    if !early.is_empty() {
        let BufResult(res, _) = stream.write_all_from(early).await;
        res?;
    }
    let mut buf = Vec::with_capacity(ECHO_BUFFER);
    loop {
        let BufResult(res, b) = stream.read_into(buf).await;
        buf = b;
        if res? == 0 {
            return match stream.shutdown_write().await {
                // The control may have closed already; the session is over.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                other => other,
            };
        }
        let BufResult(res, b) = stream.write_all_from(buf).await;
        buf = b;
        res?;
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_in_zero_to_one_and_differs_per_agent() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let f = spread(i, 1);
            assert!((0.0..1.0).contains(&f), "{f}");
            seen.insert(f.to_bits());
        }
        assert!(seen.len() > 990, "the spread should differ per agent: {}", seen.len());
    }
}
