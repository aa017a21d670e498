//! Simulated controls: browse the agents, open sessions to them one after
//! another, and drive traffic through each: ping-pong round trips, or a
//! one-way stream whose echo is counted. Every session ends with a clean
//! half-close, so the agents' echoes see no reset and count no error.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::BufResult;
use futures_util::future::try_join;
use ringway::client::{self, ClientError, Endpoint, Session};
use ringway::relay::Duplex;

use crate::args::Pattern;
use crate::stats::{ErrorKind, Metric, Op, Recorder};

/// How long one read or write of a session may take before it counts as a
/// timeout: well past any healthy round trip, short enough that a stuck
/// session is noticed within a run.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failure before the next attempt, so that a failing
/// gateway sees at most ten attempts a second from each control.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Pause before browsing again when no agent matches the prefix (agents
/// may still be ramping up).
const EMPTY_LIST_PAUSE: Duration = Duration::from_millis(250);
/// Browse again after this long, so that agents that came up after the
/// first browse get sessions too. A list of 50,000 agents is a few MB of
/// JSON, so not much more often.
const BROWSE_EVERY: Duration = Duration::from_secs(10);
/// Read buffer of a bulk session's echo: the gateway's default relay
/// buffer.
const BULK_READ_BUFFER: usize = 64 * 1024;

/// What every control of a run shares.
#[derive(Debug)]
pub struct ControlSpec {
    /// The gateway, its key and TLS settings; each control's endpoint is
    /// this with its own name and source address.
    pub template: Endpoint,
    /// Controls are named `control_prefix` + index.
    pub control_prefix: String,
    /// Sessions go only to agents whose names start with this.
    pub agents_prefix: String,
    /// How many controls in all (over every thread).
    pub count: u64,
    /// What to send.
    pub pattern: Pattern,
    /// Bytes per message or write.
    pub size: usize,
    /// Messages or writes per second per control; 0 = unpaced.
    pub rate: f64,
    /// Messages or writes per session; 0 = one session for the whole run.
    pub per_session: u64,
    /// Source addresses, dealt round-robin; empty lets the OS choose.
    pub sources: Vec<IpAddr>,
}

impl ControlSpec {
    fn endpoint(&self, i: u64) -> Endpoint {
        Endpoint {
            identity: format!("{}{i}", self.control_prefix),
            bind: (!self.sources.is_empty()).then(|| self.sources[i as usize % self.sources.len()]),
            ..self.template.clone()
        }
    }

    fn interval(&self) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate))
    }
}

/// Why a session's traffic failed.
#[derive(Debug)]
struct TrafficError {
    kind: ErrorKind,
    what: String,
}

impl TrafficError {
    fn new(kind: ErrorKind, what: impl Into<String>) -> Self {
        Self {
            kind,
            what: what.into(),
        }
    }
}

impl From<io::Error> for TrafficError {
    fn from(e: io::Error) -> Self {
        Self::new(ErrorKind::of_io(&e), e.to_string())
    }
}

/// Runs `f` within `limit`, a timeout becoming a [`TrafficError`].
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> Result<T, TrafficError> {
    compio::time::timeout(limit, f)
        .await
        .map_err(|_| TrafficError::new(ErrorKind::Timeout, format!("{what}: nothing for {limit:?}")))
}

/// Control `index`: opens sessions and drives them until the run drops it.
pub async fn control(spec: Arc<ControlSpec>, index: u64, rec: Recorder) {
    let ep = spec.endpoint(index);
    let mut agents: Vec<String> = Vec::new();
    let mut browsed = Instant::now();
    // Control i takes agents i, i + M, i + 2M... so that M controls spread
    // their sessions over the agents instead of all picking the first.
    let mut next = index as usize;
    loop {
        if agents.is_empty() || browsed.elapsed() >= BROWSE_EVERY {
            let asked = Instant::now();
            match client::list_agents(&ep).await {
                Ok(list) => {
                    rec.with(|s| s.record(Metric::Browse, asked.elapsed()));
                    browsed = Instant::now();
                    agents = list
                        .into_iter()
                        .map(|a| a.name)
                        .filter(|n| n.starts_with(&spec.agents_prefix))
                        .collect();
                }
                Err(e) => {
                    rec.client_error(Op::Browse, &e);
                    compio::time::sleep(ERROR_PAUSE).await;
                    if agents.is_empty() {
                        continue;
                    }
                    // A refresh failed: keep the list we have until the
                    // next one is due.
                    browsed = Instant::now();
                }
            }
            if agents.is_empty() {
                compio::time::sleep(EMPTY_LIST_PAUSE).await;
                continue;
            }
        }
        let agent = &agents[next % agents.len()];
        next = next.wrapping_add(spec.count.max(1) as usize);

        let asked = Instant::now();
        let session = match client::connect(&ep, agent).await {
            Ok(s) => s,
            Err(e) => {
                rec.client_error(Op::Connect, &e);
                if matches!(e, ClientError::Refused { status: 404, .. }) {
                    // That agent left: the list is stale.
                    agents.clear();
                }
                compio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        rec.with(|s| {
            s.record(Metric::SessionSetup, asked.elapsed());
            s.counters.sessions_opened += 1;
        });
        let res = match spec.pattern {
            Pattern::Pingpong => pingpong(session, &spec, &rec).await,
            Pattern::Bulk => bulk(session, &spec, &rec).await,
        };
        match res {
            Ok(()) => rec.with(|s| s.counters.sessions_completed += 1),
            Err(e) => {
                rec.error(Op::Traffic, e.kind, &format!("session to {agent}: {}", e.what));
                compio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

/// Keeps a steady pace of operations. A pacer that fell behind starts
/// again from now instead of bursting to catch up.
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        let Some(interval) = self.interval else { return };
        let now = Instant::now();
        if self.next > now {
            compio::time::sleep_until(self.next).await;
        } else if now - self.next > interval {
            self.next = now;
        }
        self.next += interval;
    }
}

/// Sequential round trips: send `size` bytes, read exactly them back.
///
/// Each read goes into the cleared buffer (`read_into` appends) and is
/// checked against the part of the message it should echo.
async fn pingpong(session: Session, spec: &ControlSpec, rec: &Recorder) -> Result<(), TrafficError> {
    let stream = &session.stream;
    if !session.early.is_empty() {
        return Err(TrafficError::new(
            ErrorKind::Protocol,
            "bytes came before any were sent",
        ));
    }
    let mut out = vec![0u8; spec.size];
    let mut back = Vec::with_capacity(spec.size);
    let mut pacer = Pacer::new(spec.interval());
    let mut round = 0u64;
    while spec.per_session == 0 || round < spec.per_session {
        pacer.wait().await;
        // Different bytes each round and along the message: an echo of an
        // earlier message, or one cut, spliced or reordered, cannot pass
        // for this one.
        fill_round(&mut out, round);
        let sent = Instant::now();
        let BufResult(res, o) = within(OP_TIMEOUT, "write", stream.write_all_from(out)).await?;
        out = o;
        res?;
        let mut got = 0;
        while got < spec.size {
            back.clear();
            let BufResult(res, b) = within(OP_TIMEOUT, "echo", stream.read_into(back)).await?;
            back = b;
            let n = res?;
            if n == 0 {
                return Err(TrafficError::new(ErrorKind::Protocol, "session closed before the echo"));
            }
            if got + n > spec.size {
                return Err(mismatch(rec, "more bytes came back than were sent"));
            }
            if back[..n] != out[got..got + n] {
                return Err(mismatch(rec, "the echo differs from the message"));
            }
            got += n;
        }
        let rtt = sent.elapsed();
        round += 1;
        rec.with(|st| {
            st.record(Metric::RoundTrip, rtt);
            st.counters.round_trips += 1;
            st.counters.bytes_sent += spec.size as u64;
            st.counters.bytes_received += spec.size as u64;
        });
    }
    close(stream, back).await
}

/// Ends our side and waits for the agent's end to come back, which proves
/// the echo delivered everything and leaves no reset behind.
async fn close(stream: &impl Duplex, mut buf: Vec<u8>) -> Result<(), TrafficError> {
    stream.shutdown_write().await?;
    buf.clear();
    buf.reserve(1);
    let BufResult(res, _) = within(OP_TIMEOUT, "end of session", stream.read_into(buf)).await?;
    match res? {
        0 => Ok(()),
        _ => Err(TrafficError::new(ErrorKind::Protocol, "bytes after the last echo")),
    }
}

/// Streams `per_session` writes of `size` bytes while reading the echo
/// back; the session's echo must return every byte.
async fn bulk(session: Session, spec: &ControlSpec, rec: &Recorder) -> Result<(), TrafficError> {
    let stream = &session.stream;
    let interval = spec.interval();
    let writer = async {
        let mut buf = vec![0x5au8; spec.size];
        let mut pacer = Pacer::new(interval);
        let mut sent = 0u64;
        let mut writes = 0u64;
        while spec.per_session == 0 || writes < spec.per_session {
            pacer.wait().await;
            let BufResult(res, b) = within(OP_TIMEOUT, "write", stream.write_all_from(buf)).await?;
            buf = b;
            res?;
            writes += 1;
            sent += spec.size as u64;
            rec.with(|st| st.counters.bytes_sent += spec.size as u64);
        }
        stream.shutdown_write().await?;
        Ok::<u64, TrafficError>(sent)
    };
    if !session.early.is_empty() {
        return Err(TrafficError::new(
            ErrorKind::Protocol,
            "bytes came before any were sent",
        ));
    }
    let reader = async {
        let mut buf = Vec::with_capacity(BULK_READ_BUFFER);
        let mut got = 0u64;
        // Paced writes leave the echo idle between them.
        let limit = OP_TIMEOUT + interval.unwrap_or_default();
        loop {
            // Only counted, never kept: `read_into` appends, so start empty.
            buf.clear();
            let BufResult(res, b) = within(limit, "echo", stream.read_into(buf)).await?;
            buf = b;
            let n = res? as u64;
            if n == 0 {
                return Ok::<u64, TrafficError>(got);
            }
            got += n;
            rec.with(|st| st.counters.bytes_received += n);
        }
    };
    let (sent, got) = try_join(writer, reader).await?;
    if sent != got {
        return Err(mismatch(rec, format!("sent {sent} bytes, {got} came back")));
    }
    Ok(())
}

/// Message `round` of a ping-pong session: a byte sequence that differs
/// from round to round and along the message (period 251, a prime, so no
/// power-of-two chunk lines up with it).
fn fill_round(out: &mut [u8], round: u64) {
    let offset = (round % 251) as usize;
    for (j, b) in out.iter_mut().enumerate() {
        *b = ((offset * 7 + j) % 251) as u8;
    }
}

/// Counts an echo that differs from what was sent, and says how.
fn mismatch(rec: &Recorder, what: impl Into<String>) -> TrafficError {
    rec.with(|st| st.counters.mismatches += 1);
    TrafficError::new(ErrorKind::Protocol, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_messages_differ_between_rounds_and_along_themselves() {
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        fill_round(&mut a, 0);
        fill_round(&mut b, 1);
        assert_ne!(a, b, "consecutive rounds");
        assert_ne!(a[..1024], a[1024..2048], "chunks of one message");
        fill_round(&mut b, 251);
        assert_eq!(a, b, "the pattern repeats only every 251 rounds");
    }

    #[test]
    fn pacer_keeps_the_rate() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let mut p = Pacer::new(Some(Duration::from_millis(20)));
            let t = Instant::now();
            for _ in 0..6 {
                p.wait().await;
            }
            // Five full intervals after the first, immediate, wait.
            let took = t.elapsed();
            assert!(
                took >= Duration::from_millis(100) && took < Duration::from_millis(200),
                "{took:?}"
            );
            let mut unpaced = Pacer::new(None);
            let t = Instant::now();
            unpaced.wait().await;
            assert!(t.elapsed() < Duration::from_millis(5));
        });
    }
}
