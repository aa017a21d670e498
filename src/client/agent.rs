//! The agent's held channel: register, poll every CMPI, and hear pushes.

use std::cell::Cell;
use std::pin::pin;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::relay::Duplex;
use compio::BufResult;
use futures_util::future::{Either, select};

use super::ranges::{clamp_cmpi, parse_cmpi, poll_interval, silence_deadline};
use super::{ClientError, Endpoint, dial, refused, request};
use crate::http::pct_encode;
use crate::proto::{self, FromAgent, Move, SessionId, ToAgent};

/// Frames an agent may queue for its channel before the sender waits.
const OUTGOING_CAPACITY: usize = 64;

/// The gateway's word in `BYE replaced`: the same name and key registered
/// again, so this channel is no longer the agent's (docs/PROTOCOL.md).
const BYE_REPLACED: &str = "replaced";

/// What an agent tells the gateway about itself.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    /// MAC address, for the console.
    pub mac: String,
    /// Its own IP address, for the console and log.
    pub local_ip: String,
    /// Operating system, for the console.
    pub os: String,
}

/// What the channel does with the gateway's pushes.
pub trait AgentHandler {
    /// The gateway asks for a data connection for session `sid`.
    fn open(&self, sid: SessionId);
    /// A poll was answered after `rtt`.
    fn pong(&self, _rtt: Duration) {}
    /// The gateway changed the poll interval; `interval` is its new value
    /// clamped to the protocol's range (see [`clamp_cmpi`]).
    fn cmpi_changed(&self, _interval: Duration) {}
}

/// How a channel ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEnd {
    /// The gateway said goodbye, with its reason (`replaced`, `shutdown`...).
    Bye(String),
    /// The gateway closed the connection.
    Closed,
    /// This agent left: it sent `BYE <reason>` (queued with
    /// [`Outgoing::send`]), after registering with another gateway.
    Left(String),
}

impl ChannelEnd {
    /// Whether the gateway gave this agent's name to another registration
    /// (`BYE replaced`): another machine may be using the same name.
    pub fn is_replaced(&self) -> bool {
        matches!(self, ChannelEnd::Bye(reason) if reason == BYE_REPLACED)
    }
}

/// Sends frames up an agent's channel from outside it (e.g. `FAIL <sid>`).
#[derive(Clone)]
pub struct Outgoing(async_channel::Sender<FromAgent>);

impl Outgoing {
    /// Queues a frame; false if the channel has ended.
    pub async fn send(&self, frame: FromAgent) -> bool {
        self.0.send(frame).await.is_ok()
    }

    /// Queues a frame if there is room now; false if the queue is full or
    /// the channel has ended. For answers that must not pile up tasks.
    pub fn try_send(&self, frame: FromAgent) -> bool {
        self.0.try_send(frame).is_ok()
    }
}

/// A registered agent's channel.
pub struct AgentChannel {
    stream: Conn,
    buf: Vec<u8>,
    cmpi: Cell<Duration>,
    /// `--dead-after`: how long a silent gateway is given, instead of
    /// CMPI + 10 s (see [`silence_deadline`]).
    dead_after: Option<Duration>,
    outgoing_tx: async_channel::Sender<FromAgent>,
    outgoing_rx: async_channel::Receiver<FromAgent>,
    /// Where a cluster gateway's redirect took the registration.
    redirected: Option<Box<Endpoint>>,
}

impl AgentChannel {
    /// Registers as `ep.identity` and returns the open channel.
    pub async fn register(ep: &Endpoint, info: &AgentInfo) -> Result<AgentChannel, ClientError> {
        AgentChannel::register_moved(ep, info, None).await
    }

    /// As [`register`](Self::register), for an agent that held its
    /// channel with gateway `from` before and is moving here
    /// (`Ringway-Previous: <move> <from>`, so the gateway's arrival line
    /// says where it came from).
    pub async fn register_moved(
        ep: &Endpoint,
        info: &AgentInfo,
        previous: Option<(Move, &str)>,
    ) -> Result<AgentChannel, ClientError> {
        let mut at = ep.clone();
        let mut redirected_from: Option<String> = None;
        loop {
            let stream = dial(&at).await?;
            // The address this machine used to reach the gateway is its local
            // IP as far as the console cares, unless the caller knows better.
            let local_ip = match (&info.local_ip, stream.tcp().local_addr()) {
                (ip, _) if !ip.is_empty() => ip.clone(),
                (_, Ok(addr)) => addr.ip().to_string(),
                (_, Err(_)) => String::new(),
            };
            let mut extra = vec![
                ("Upgrade", proto::UPGRADE_AGENT.to_string()),
                ("Connection", "Upgrade".to_string()),
                ("Ringway-Agent-Mac", pct_encode(&info.mac)),
                ("Ringway-Agent-Ip", pct_encode(&local_ip)),
                ("Ringway-Agent-Os", pct_encode(&info.os)),
            ];
            if let Some((kind, from)) = previous {
                extra.push((proto::H_PREVIOUS_WRITTEN, format!("{} {from}", kind.as_str())));
            }
            if let Some(from) = &redirected_from {
                extra.push((proto::H_REDIRECTED_WRITTEN, from.clone()));
            }
            let (head, early) = request(&at, &stream, "GET", proto::PATH_REGISTER, &extra).await?;
            if head.status == 307 {
                // A cluster gateway holding more than its share sends new
                // agents to a less-loaded one, once: a registration that
                // says it was redirected is never redirected again.
                if redirected_from.is_some() {
                    return Err(ClientError::Protocol("redirected twice while registering".into()));
                }
                let (to, path) = super::redirected(&at, &head)?;
                if path != proto::PATH_REGISTER {
                    return Err(ClientError::Protocol(format!(
                        "the gateway redirected the registration to an unexpected path {path:?}"
                    )));
                }
                log::info!("gateway {} sent this agent to {}", at.gateway, to.gateway);
                redirected_from = Some(pct_encode(&at.gateway));
                at = to;
                continue;
            }
            if head.status != 101 {
                return Err(refused(&stream, &head, early).await);
            }
            let cmpi = head
                .header(proto::H_CMPI)
                .and_then(parse_cmpi)
                .ok_or_else(|| ClientError::Protocol("registration answer without a valid Ringway-Cmpi".into()))?;
            let (outgoing_tx, outgoing_rx) = async_channel::bounded(OUTGOING_CAPACITY);
            return Ok(AgentChannel {
                stream,
                buf: early,
                cmpi: Cell::new(cmpi),
                dead_after: None,
                outgoing_tx,
                outgoing_rx,
                redirected: redirected_from.map(|_| Box::new(at)),
            });
        }
    }

    /// The gateway this channel is with when a cluster gateway redirected
    /// the registration there; `None` when it is the one asked. Sessions
    /// opened on this channel must join there.
    pub fn redirected(&self) -> Option<&Endpoint> {
        self.redirected.as_deref()
    }

    /// Treats the gateway as gone after `dead_after` without a word from
    /// it, instead of CMPI + 10 s; the agent then polls at least every
    /// half of it (see [`poll_interval`]).
    pub fn set_dead_after(&mut self, dead_after: Option<Duration>) {
        self.dead_after = dead_after;
    }

    /// The poll interval the gateway asked for, clamped to the protocol's
    /// range (see [`clamp_cmpi`]).
    pub fn cmpi(&self) -> Duration {
        self.cmpi.get()
    }

    /// A handle for sending frames while [`run`](Self::run) runs.
    pub fn outgoing(&self) -> Outgoing {
        Outgoing(self.outgoing_tx.clone())
    }

    /// Polls and serves pushes until the gateway ends the channel, or this
    /// agent leaves it (a `BYE` queued with [`Outgoing::send`], once
    /// written, ends it as [`ChannelEnd::Left`]). A gateway silent for
    /// CMPI + 10 s (or the `dead_after` set) counts as gone (an error).
    pub async fn run<H: AgentHandler>(self, handler: &H) -> Result<ChannelEnd, ClientError> {
        let AgentChannel {
            stream,
            buf,
            cmpi,
            dead_after,
            outgoing_tx,
            outgoing_rx,
            redirected: _,
        } = self;
        drop(outgoing_tx);
        let last_ping = Cell::new((0u64, Instant::now()));
        // One pending wake-up is enough: the writer reads the interval
        // itself when it wakes.
        let (changed_tx, changed_rx) = async_channel::bounded(1);
        let polls = Polls {
            cmpi: &cmpi,
            dead_after,
            last_ping: &last_ping,
        };
        let reader = pin!(read_pushes(&stream, buf, polls, changed_tx, handler));
        let writer = pin!(write_polls(&stream, polls, changed_rx, outgoing_rx));
        match select(reader, writer).await {
            Either::Left((end, _)) | Either::Right((end, _)) => end,
        }
    }
}

/// What the reader and the writer of a channel share about its polls.
#[derive(Clone, Copy)]
struct Polls<'a> {
    /// The poll interval, clamped; the reader sets it from `CMPI` frames.
    cmpi: &'a Cell<Duration>,
    /// How long a silent gateway is given, if not CMPI + 10 s.
    dead_after: Option<Duration>,
    /// The last `PING` sent and when, to time its `PONG`.
    last_ping: &'a Cell<(u64, Instant)>,
}

async fn read_pushes<H: AgentHandler>(
    stream: &Conn,
    mut buf: Vec<u8>,
    polls: Polls<'_>,
    cmpi_changed: async_channel::Sender<()>,
    handler: &H,
) -> Result<ChannelEnd, ClientError> {
    buf.reserve(proto::MAX_FRAME_LINE);
    loop {
        loop {
            match proto::parse_to_agent(&buf) {
                Ok((frame, used)) => {
                    buf.drain(..used);
                    match frame {
                        Some(ToAgent::Open(sid)) => handler.open(sid),
                        Some(ToAgent::Pong(seq)) => {
                            let (sent_seq, at) = polls.last_ping.get();
                            if seq == sent_seq {
                                handler.pong(at.elapsed());
                            }
                        }
                        // A repeat of the current interval changes nothing
                        // and is not reported, so repeats cannot spam a log.
                        Some(ToAgent::Cmpi(secs)) if clamp_cmpi(secs) != polls.cmpi.get() => {
                            let interval = clamp_cmpi(secs);
                            polls.cmpi.set(interval);
                            // Full means a wake-up is already pending.
                            let _ = cmpi_changed.try_send(());
                            handler.cmpi_changed(interval);
                        }
                        Some(ToAgent::Bye(reason)) => return Ok(ChannelEnd::Bye(reason)),
                        Some(ToAgent::Cmpi(_)) | None => {}
                    }
                }
                Err(proto::FrameError::Incomplete) => break,
                Err(proto::FrameError::Invalid) => {
                    return Err(ClientError::Protocol("invalid frame from the gateway".into()));
                }
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(proto::MAX_FRAME_LINE);
        }
        let deadline = silence_deadline(polls.cmpi.get(), polls.dead_after);
        match compio::time::timeout(deadline, stream.read_into(buf)).await {
            Err(_) => return Err(ClientError::Timeout("the gateway stopped answering polls")),
            Ok(BufResult(Ok(0), _)) => return Ok(ChannelEnd::Closed),
            Ok(BufResult(Err(e), _)) => return Err(ClientError::Io(e)),
            Ok(BufResult(Ok(_), b)) => buf = b,
        }
    }
}

/// What woke the writer.
enum Wake {
    /// The next poll is due.
    Tick,
    /// A frame was queued (`None`: no one can queue frames any more).
    Queued(Option<FromAgent>),
    /// The gateway changed the poll interval.
    CmpiChanged,
}

/// Sends `PING` every CMPI (see [`poll_interval`]) and any queued frame
/// as it comes; a queued `BYE` is the last frame, and ends the channel
/// once written. A new CMPI applies at once: a shorter one brings the next
/// poll forward, so an agent never polls later than the gateway now
/// expects.
async fn write_polls(
    stream: &Conn,
    polls: Polls<'_>,
    cmpi_changed: async_channel::Receiver<()>,
    outgoing: async_channel::Receiver<FromAgent>,
) -> Result<ChannelEnd, ClientError> {
    let mut seq = 0u64;
    let interval = || poll_interval(polls.cmpi.get(), polls.dead_after);
    // The interval is clamped to at most a day (`clamp_cmpi`), so adding
    // it to a clock reading cannot overflow.
    let mut next_ping = Instant::now() + interval();
    let mut queue_open = true;
    loop {
        // Every future here is cancel-safe (a timer, channel receives),
        // unlike a socket read, so select may drop the losers.
        let wake = {
            let tick = pin!(compio::time::sleep_until(next_ping));
            let changed = pin!(cmpi_changed.recv());
            let queued = pin!(async {
                if queue_open {
                    Wake::Queued(outgoing.recv().await.ok())
                } else {
                    std::future::pending().await
                }
            });
            match select(tick, select(changed, queued)).await {
                Either::Left(((), _)) => Wake::Tick,
                Either::Right((Either::Left((Ok(()), _)), _)) => Wake::CmpiChanged,
                // The reader is gone, so the channel is ending.
                Either::Right((Either::Left((Err(_), _)), _)) => std::future::pending().await,
                Either::Right((Either::Right((queued, _)), _)) => queued,
            }
        };
        let frame = match wake {
            Wake::Tick => {
                seq += 1;
                polls.last_ping.set((seq, Instant::now()));
                next_ping = Instant::now() + interval();
                FromAgent::Ping(seq)
            }
            Wake::CmpiChanged => {
                let (_, last_sent) = polls.last_ping.get();
                next_ping = next_ping.min(last_sent + interval());
                continue;
            }
            Wake::Queued(Some(frame)) => frame,
            Wake::Queued(None) => {
                // No one can queue frames any more; only polls remain.
                queue_open = false;
                continue;
            }
        };
        let BufResult(res, _) = stream.write_all_from(frame.to_string().into_bytes()).await;
        if let Err(e) = res {
            return Err(ClientError::Io(e));
        }
        if let FromAgent::Bye(reason) = frame {
            return Ok(ChannelEnd::Left(reason));
        }
    }
}
