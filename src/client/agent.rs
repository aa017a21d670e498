//! The agent's held channel: register, poll every CMPI, and hear pushes.

use std::cell::Cell;
use std::pin::pin;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::relay::Duplex;
use compio::BufResult;
use futures_util::future::{Either, select};

use super::{ClientError, Endpoint, dial, exchange, refused, request_head};
use crate::config::HEARTBEAT_GRACE;
use crate::http::pct_encode;
use crate::proto::{self, FromAgent, SessionId, ToAgent};

/// Frames an agent may queue for its channel before the sender waits.
const OUTGOING_CAPACITY: usize = 64;

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
}

/// How a channel ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEnd {
    /// The gateway said goodbye, with its reason (`replaced`, `shutdown`...).
    Bye(String),
    /// The gateway closed the connection.
    Closed,
}

/// Sends frames up an agent's channel from outside it (e.g. `FAIL <sid>`).
#[derive(Clone)]
pub struct Outgoing(async_channel::Sender<FromAgent>);

impl Outgoing {
    /// Queues a frame; false if the channel has ended.
    pub async fn send(&self, frame: FromAgent) -> bool {
        self.0.send(frame).await.is_ok()
    }
}

/// A registered agent's channel.
pub struct AgentChannel {
    stream: Conn,
    buf: Vec<u8>,
    cmpi: Cell<Duration>,
    outgoing_tx: async_channel::Sender<FromAgent>,
    outgoing_rx: async_channel::Receiver<FromAgent>,
}

impl AgentChannel {
    /// Registers as `ep.identity` and returns the open channel.
    pub async fn register(ep: &Endpoint, info: &AgentInfo) -> Result<AgentChannel, ClientError> {
        let stream = dial(ep).await?;
        // The address this machine used to reach the gateway is its local
        // IP as far as the console cares, unless the caller knows better.
        let local_ip = match (&info.local_ip, stream.tcp().local_addr()) {
            (ip, _) if !ip.is_empty() => ip.clone(),
            (_, Ok(addr)) => addr.ip().to_string(),
            (_, Err(_)) => String::new(),
        };
        let extra = [
            ("Upgrade", proto::UPGRADE_AGENT.to_string()),
            ("Connection", "Upgrade".to_string()),
            ("Ringway-Agent-Mac", pct_encode(&info.mac)),
            ("Ringway-Agent-Ip", pct_encode(&local_ip)),
            ("Ringway-Agent-Os", pct_encode(&info.os)),
        ];
        let (head, early) = exchange(&stream, request_head(ep, "GET", proto::PATH_REGISTER, &extra)).await?;
        if head.status != 101 {
            return Err(refused(&stream, &head, early).await);
        }
        let cmpi = head
            .header(proto::H_CMPI)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .ok_or_else(|| ClientError::Protocol("registration answer without a valid Ringway-Cmpi".into()))?;
        let (outgoing_tx, outgoing_rx) = async_channel::bounded(OUTGOING_CAPACITY);
        Ok(AgentChannel {
            stream,
            buf: early,
            cmpi: Cell::new(Duration::from_secs(cmpi)),
            outgoing_tx,
            outgoing_rx,
        })
    }

    /// The poll interval the gateway asked for.
    pub fn cmpi(&self) -> Duration {
        self.cmpi.get()
    }

    /// A handle for sending frames while [`run`](Self::run) runs.
    pub fn outgoing(&self) -> Outgoing {
        Outgoing(self.outgoing_tx.clone())
    }

    /// Polls and serves pushes until the gateway ends the channel. A gateway
    /// silent for 2 x CMPI + 10 s counts as gone (an error), as the gateway
    /// itself treats a silent agent.
    pub async fn run<H: AgentHandler>(self, handler: &H) -> Result<ChannelEnd, ClientError> {
        let AgentChannel {
            stream,
            buf,
            cmpi,
            outgoing_tx,
            outgoing_rx,
        } = self;
        drop(outgoing_tx);
        let last_ping = Cell::new((0u64, Instant::now()));
        let reader = pin!(read_pushes(&stream, buf, &cmpi, &last_ping, handler));
        let writer = pin!(write_polls(&stream, &cmpi, &last_ping, outgoing_rx));
        match select(reader, writer).await {
            Either::Left((end, _)) => end,
            Either::Right((err, _)) => Err(err),
        }
    }
}

async fn read_pushes<H: AgentHandler>(
    stream: &Conn,
    mut buf: Vec<u8>,
    cmpi: &Cell<Duration>,
    last_ping: &Cell<(u64, Instant)>,
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
                            let (sent_seq, at) = last_ping.get();
                            if seq == sent_seq {
                                handler.pong(at.elapsed());
                            }
                        }
                        Some(ToAgent::Cmpi(secs)) if secs > 0 => cmpi.set(Duration::from_secs(secs)),
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
        let deadline = cmpi.get() * 2 + HEARTBEAT_GRACE;
        match compio::time::timeout(deadline, stream.read_into(buf)).await {
            Err(_) => return Err(ClientError::Timeout("the gateway stopped answering polls")),
            Ok(BufResult(Ok(0), _)) => return Ok(ChannelEnd::Closed),
            Ok(BufResult(Err(e), _)) => return Err(ClientError::Io(e)),
            Ok(BufResult(Ok(_), b)) => buf = b,
        }
    }
}

/// Sends `PING` every CMPI and any queued frame as it comes.
async fn write_polls(
    stream: &Conn,
    cmpi: &Cell<Duration>,
    last_ping: &Cell<(u64, Instant)>,
    outgoing: async_channel::Receiver<FromAgent>,
) -> ClientError {
    let mut seq = 0u64;
    let mut next_ping = Instant::now() + cmpi.get();
    loop {
        // Both futures here are cancel-safe (a timer, a channel receive),
        // unlike a socket read, so select may drop the loser.
        let frame = {
            let tick = pin!(compio::time::sleep_until(next_ping));
            let queued = pin!(outgoing.recv());
            match select(tick, queued).await {
                Either::Left(((), _)) => {
                    seq += 1;
                    last_ping.set((seq, Instant::now()));
                    next_ping = Instant::now() + cmpi.get();
                    FromAgent::Ping(seq)
                }
                Either::Right((Ok(frame), _)) => frame,
                Either::Right((Err(_), _)) => {
                    // No one can queue frames any more; only polls remain.
                    compio::time::sleep_until(next_ping).await;
                    continue;
                }
            }
        };
        let BufResult(res, _) = stream.write_all_from(frame.to_string().into_bytes()).await;
        if let Err(e) = res {
            return ClientError::Io(e);
        }
    }
}
