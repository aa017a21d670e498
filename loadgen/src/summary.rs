//! The end-of-run summary: a JSON document for scripts and CI, and a short
//! human report on stdout. The JSON shape is documented in README.md; keys
//! are only ever added, so older scripts keep working.

use std::path::Path;

use serde::Serialize;

use crate::procstat::ProcSample;
use crate::progress::ms;
use crate::run::{Outcome, Plan};
use crate::stats::{Errors, Metric, Percentiles};

/// Version of the summary's shape; bumped if a key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// What a run was asked to do, as the summary records it.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `agents`, `controls` or `mixed`.
    pub mode: &'static str,
    /// The gateway address targeted.
    pub gateway: String,
    /// The `--secondary` gateways, in order (agents move between all).
    pub secondaries: Vec<String>,
    /// Runtime threads used.
    pub threads: usize,
    /// Source addresses dialled from (0: the OS chose).
    pub sources: usize,
    /// The run length asked for, seconds.
    pub duration_secs_planned: u64,
}

/// The whole summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Always `ringway-loadgen`.
    pub tool: &'static str,
    /// This load generator's version.
    pub version: &'static str,
    /// Shape version of this document.
    pub schema: u32,
    /// What was asked.
    #[serde(flatten)]
    pub run: RunInfo,
    /// How long the run measured, seconds.
    pub duration_secs: f64,
    /// The simulated agents.
    pub agents: AgentReport,
    /// The simulated controls.
    pub controls: ControlReport,
    /// Latency percentiles by metric, microseconds.
    pub latency_us: Latencies,
    /// Errors by kind and by operation.
    pub errors: Errors,
    /// What the run cost the gateway process (with --gateway-pid).
    pub gateway_process: Option<GatewayCost>,
    /// The load generator's own resident memory at the end, KiB.
    pub loadgen_rss_kib: Option<u64>,
}

/// Agent figures.
#[derive(Debug, Serialize)]
pub struct AgentReport {
    /// Agents planned.
    pub target: u64,
    /// Successful registrations (an agent that reconnected counts again).
    pub registered: u64,
    /// Channels open when the run ended.
    pub up_at_end: u64,
    /// Registrations after an agent's first.
    pub reconnects: u64,
    /// Polls answered.
    pub polls: u64,
    /// Sessions the agents joined and echoed.
    pub sessions_served: u64,
    /// Channels hung up on the `--churn` schedule (each registered again).
    pub churned: u64,
    /// Registrations with a secondary after losing the gateway before it.
    pub failovers: u64,
    /// Channels moved back to a gateway earlier in the list.
    pub failbacks: u64,
    /// The poll interval the gateway announced.
    pub cmpi_secs: Option<u64>,
    /// The poll interval --cmpi said to expect.
    pub cmpi_secs_expected: Option<u64>,
}

/// Control figures.
#[derive(Debug, Serialize)]
pub struct ControlReport {
    /// Controls planned.
    pub target: u64,
    /// `pingpong` or `bulk` (null without controls).
    pub pattern: Option<&'static str>,
    /// Bytes per message or write.
    pub size: usize,
    /// Sessions opened (got `101`).
    pub sessions: u64,
    /// Sessions finished with a clean close.
    pub sessions_completed: u64,
    /// Sessions opened per second of run.
    pub sessions_per_sec: f64,
    /// Ping-pong round trips completed.
    pub round_trips: u64,
    /// Round trips per second of run.
    pub round_trips_per_sec: f64,
    /// Session bytes sent.
    pub bytes_sent: u64,
    /// Session bytes read back.
    pub bytes_received: u64,
    /// `bytes_received` per second of run, MiB/s.
    pub throughput_mib_per_sec: f64,
    /// Echoes that differed from what was sent; each also counts as a
    /// protocol error of its session.
    pub mismatches: u64,
}

/// Percentiles of every latency, microseconds; `count: 0` where nothing
/// was measured.
#[derive(Debug, Serialize)]
pub struct Latencies {
    /// Agent dial until registration answered.
    pub register: Percentiles,
    /// Agent `PING` until `PONG`.
    pub poll_rtt: Percentiles,
    /// Control client list request until read.
    pub browse: Percentiles,
    /// Control connect request until the session is usable.
    pub session_setup: Percentiles,
    /// Agent `OPEN` heard until its data connection is accepted.
    pub join: Percentiles,
    /// Ping-pong message out and back.
    pub round_trip: Percentiles,
}

/// The gateway's RSS and CPU time at the start and the end of the run.
#[derive(Debug, Serialize)]
pub struct GatewayCost {
    /// The gateway's process id.
    pub pid: u32,
    /// Reading before the first connection.
    pub start: ProcSample,
    /// Reading at the end, while every connection was still open.
    pub end: ProcSample,
    /// `end.rss_kib - start.rss_kib`.
    pub rss_delta_kib: i64,
    /// CPU seconds the gateway spent during the run.
    pub cpu_secs_used: f64,
    /// `rss_delta_kib` x 1024 / agents up at the end (null without agents).
    pub rss_bytes_per_agent: Option<f64>,
}

/// Builds the summary of `plan` from what the run measured.
pub fn build(plan: &Plan, outcome: &Outcome) -> Summary {
    let (stats, elapsed) = (&outcome.stats, outcome.elapsed);
    let c = &stats.counters;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let per_sec = |n: u64| round2(n as f64 / secs);
    let p = |m: Metric| Percentiles::of(stats.hist(m));
    Summary {
        tool: "ringway-loadgen",
        version: env!("CARGO_PKG_VERSION"),
        schema: SCHEMA_VERSION,
        run: plan.info.clone(),
        duration_secs: round2(secs),
        agents: AgentReport {
            target: plan.agents.as_ref().map_or(0, |a| a.count),
            registered: c.registered,
            up_at_end: c.agents_up,
            reconnects: c.reconnects,
            polls: c.polls,
            sessions_served: c.sessions_served,
            churned: c.churned,
            failovers: c.failovers,
            failbacks: c.failbacks,
            cmpi_secs: stats.cmpi_secs,
            cmpi_secs_expected: plan.cmpi_expected,
        },
        controls: ControlReport {
            target: plan.controls.as_ref().map_or(0, |c| c.count),
            pattern: plan.controls.as_ref().map(|c| c.pattern.name()),
            size: plan.controls.as_ref().map_or(0, |c| c.size),
            sessions: c.sessions_opened,
            sessions_completed: c.sessions_completed,
            sessions_per_sec: per_sec(c.sessions_opened),
            round_trips: c.round_trips,
            round_trips_per_sec: per_sec(c.round_trips),
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            throughput_mib_per_sec: round2(c.bytes_received as f64 / secs / (1024.0 * 1024.0)),
            mismatches: c.mismatches,
        },
        latency_us: Latencies {
            register: p(Metric::Register),
            poll_rtt: p(Metric::PollRtt),
            browse: p(Metric::Browse),
            session_setup: p(Metric::SessionSetup),
            join: p(Metric::Join),
            round_trip: p(Metric::RoundTrip),
        },
        errors: stats.errors.clone(),
        loadgen_rss_kib: outcome.own_rss_kib,
        gateway_process: outcome.gateway.map(|(pid, start, end)| {
            let rss_delta_kib = end.rss_kib as i64 - start.rss_kib as i64;
            GatewayCost {
                pid,
                start,
                end,
                rss_delta_kib,
                cpu_secs_used: round2(end.cpu_secs - start.cpu_secs),
                rss_bytes_per_agent: (c.agents_up > 0)
                    .then(|| round2(rss_delta_kib as f64 * 1024.0 / c.agents_up as f64)),
            }
        }),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Writes the summary as pretty JSON.
pub fn write_json(summary: &Summary, path: &Path) -> Result<(), String> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| format!("cannot encode the summary: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The human report.
pub fn human(s: &Summary) -> String {
    let mut out = format!(
        "ringway-loadgen {}: {:.1} s against {}\n",
        s.run.mode, s.duration_secs, s.run.gateway
    );
    if s.agents.target > 0 {
        out += &format!(
            "agents: {} planned, {} registered, {} up at end, {} reconnects, {} polls, {} sessions served, cmpi {}\n",
            s.agents.target,
            s.agents.registered,
            s.agents.up_at_end,
            s.agents.reconnects,
            s.agents.polls,
            s.agents.sessions_served,
            s.agents.cmpi_secs.map_or("-".to_string(), |c| format!("{c} s")),
        );
        if s.agents.churned > 0 {
            out += &format!("agents hung up on the churn schedule: {}\n", s.agents.churned);
        }
        if s.agents.failovers + s.agents.failbacks > 0 {
            out += &format!(
                "agents moved between gateways: {} failovers, {} failbacks\n",
                s.agents.failovers, s.agents.failbacks
            );
        }
    }
    if s.controls.target > 0 {
        out += &format!(
            "controls: {} {}, {} sessions ({}/s), {} round trips ({}/s), {} MiB/s echoed\n",
            s.controls.target,
            s.controls.pattern.unwrap_or("-"),
            s.controls.sessions,
            s.controls.sessions_per_sec,
            s.controls.round_trips,
            s.controls.round_trips_per_sec,
            s.controls.throughput_mib_per_sec,
        );
        out += &format!(
            "controls: {} sessions completed, {} echo mismatches\n",
            s.controls.sessions_completed, s.controls.mismatches
        );
    }
    out += &format!(
        "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    let l = &s.latency_us;
    for (name, p) in [
        ("register", &l.register),
        ("poll_rtt", &l.poll_rtt),
        ("browse", &l.browse),
        ("session_setup", &l.session_setup),
        ("join", &l.join),
        ("round_trip", &l.round_trip),
    ] {
        if p.count > 0 {
            out += &format!(
                "{name:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                p.count,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.p999),
                ms(p.max)
            );
        }
    }
    let e = &s.errors;
    out += &format!(
        "errors: {} (io {}, protocol {}, timeout {}, closed {}, refused {:?}; by operation {:?})\n",
        e.total, e.io, e.protocol, e.timeout, e.closed, e.refused, e.by_op
    );
    if let Some(kib) = s.loadgen_rss_kib {
        out += &format!("load generator RSS: {kib} KiB\n");
    }
    if let Some(g) = &s.gateway_process {
        out += &format!(
            "gateway pid {}: RSS {} -> {} KiB ({:+} KiB{}), CPU {:.2} s\n",
            g.pid,
            g.start.rss_kib,
            g.end.rss_kib,
            g.rss_delta_kib,
            g.rss_bytes_per_agent
                .map_or(String::new(), |b| format!(", {b:.0} B per agent")),
            g.cpu_secs_used
        );
    }
    out
}
