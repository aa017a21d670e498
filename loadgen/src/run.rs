//! One run: runtime threads with their share of agents and controls, a
//! progress line every second on this thread, and a stop at the deadline.
//!
//! The gateway is sampled and the statistics taken at the deadline while
//! every connection is still open; only then are the threads told to stop
//! (their runtimes drop every task, closing its sockets). So the figures
//! describe the gateway under full load, and the teardown counts nothing.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agents::{self, AgentSpec};
use crate::controls::{self, ControlSpec};
use crate::procstat::{self, ProcSample};
use crate::progress;
use crate::stats::{Counters, Recorder, Stats};
use crate::summary::RunInfo;

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Everything a run needs, checked.
#[derive(Debug)]
pub struct Plan {
    /// What the summary records about the run.
    pub info: RunInfo,
    /// How long to run.
    pub duration: Duration,
    /// Runtime threads.
    pub threads: usize,
    /// The simulated agents, if any.
    pub agents: Option<Arc<AgentSpec>>,
    /// The poll interval --cmpi said to expect.
    pub cmpi_expected: Option<u64>,
    /// The simulated controls, if any.
    pub controls: Option<Arc<ControlSpec>>,
    /// The gateway process to sample.
    pub gateway_pid: Option<u32>,
    /// Where to write the JSON summary.
    pub json: Option<std::path::PathBuf>,
    /// Where to rewrite the summary so far every second.
    pub live_json: Option<std::path::PathBuf>,
}

/// What a run measured.
pub struct Outcome {
    /// All threads' statistics, merged at the deadline.
    pub stats: Stats,
    /// From the start to the deadline.
    pub elapsed: Duration,
    /// The gateway's readings at the start and at the deadline.
    pub gateway: Option<(u32, ProcSample, ProcSample)>,
    /// This process's resident memory at the deadline, KiB: what the
    /// simulated peers cost (None where /proc cannot be read).
    pub own_rss_kib: Option<u64>,
}

/// Runs `plan` to its deadline.
pub fn run(plan: &Plan) -> Result<Outcome, String> {
    let gateway_start = plan.gateway_pid.map(procstat::sample).transpose()?;
    let recorders: Vec<Recorder> = (0..plan.threads).map(|_| Recorder::default()).collect();
    // Closing this channel is the stop signal: every thread waits on it.
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let start = Instant::now();
    let deadline = start + plan.duration;

    let mut threads: Vec<JoinHandle<Result<(), String>>> = Vec::with_capacity(plan.threads);
    for (t, rec) in recorders.iter().enumerate() {
        let (rec, stop) = (rec.clone(), stop_rx.clone());
        let (agents, controls) = (plan.agents.clone(), plan.controls.clone());
        let n = plan.threads as u64;
        let t = t as u64;
        let spawned = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                let runtime = compio::runtime::Runtime::new()
                    .map_err(|e| format!("cannot start the async runtime on thread {t}: {e}"))?;
                runtime.block_on(async move {
                    if let Some(spec) = agents {
                        compio::runtime::spawn(agents::start_share(spec, t, n, start, rec.clone())).detach();
                    }
                    if let Some(spec) = controls {
                        for c in (t..spec.count).step_by(n as usize) {
                            compio::runtime::spawn(controls::control(spec.clone(), c, rec.clone())).detach();
                        }
                    }
                    // Err once the sender is dropped: time to stop.
                    let _ = stop.recv().await;
                });
                // Dropping the runtime drops every task and closes its sockets.
                drop(runtime);
                Ok(())
            })
            .map_err(|e| format!("cannot start thread {t}: {e}"));
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                drop(stop_tx);
                // The spawn error is the one worth reporting.
                let _ = join_all(threads);
                return Err(e);
            }
        }
    }

    let agents = plan.agents.as_ref().map_or(0, |a| a.count);
    let controls = plan.controls.as_ref().map_or(0, |c| c.count);
    let mut prev = Counters::default();
    let mut prev_at = start;
    let mut cmpi_warned = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(PROGRESS_EVERY.min(deadline - now));
        if threads.iter().any(|t| t.is_finished()) {
            // A thread that ended early could not start its runtime.
            break;
        }
        let snapshot = merge(&recorders);
        let at = Instant::now();
        eprintln!(
            "{}",
            progress::line(at - start, &snapshot, &prev, at - prev_at, agents, controls)
        );
        if let (Some(want), Some(got), false) = (plan.cmpi_expected, snapshot.cmpi_secs, cmpi_warned)
            && want != got
        {
            log::warn!("--cmpi {want} expected, but the gateway set {got} s: agents poll every {got} s");
            cmpi_warned = true;
        }
        if let Some(path) = &plan.live_json {
            write_live(plan, path, snapshot.clone(), at - start);
        }
        (prev, prev_at) = (snapshot.counters, at);
    }

    let gateway_end = plan.gateway_pid.map(procstat::sample).transpose();
    let own_rss_kib = procstat::sample(std::process::id()).ok().map(|s| s.rss_kib);
    let stats = merge(&recorders);
    let elapsed = start.elapsed();
    drop(stop_tx);
    join_all(threads)?;
    let gateway = match (plan.gateway_pid, gateway_start, gateway_end?) {
        (Some(pid), Some(a), Some(b)) => Some((pid, a, b)),
        _ => None,
    };
    Ok(Outcome {
        stats,
        elapsed,
        gateway,
        own_rss_kib,
    })
}

/// Writes the summary so far to `path`, through a temporary file renamed
/// over it, so that a reader never sees half a document. A failure is
/// logged, not fatal: the run itself is what matters.
fn write_live(plan: &Plan, path: &std::path::Path, stats: Stats, elapsed: Duration) {
    let outcome = Outcome {
        stats,
        elapsed,
        gateway: None,
        own_rss_kib: procstat::sample(std::process::id()).ok().map(|s| s.rss_kib),
    };
    let tmp = path.with_extension("tmp");
    let written = crate::summary::write_json(&crate::summary::build(plan, &outcome), &tmp)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename {}: {e}", tmp.display())));
    if let Err(e) = written {
        log::warn!("--live-json: {e}");
    }
}

fn merge(recorders: &[Recorder]) -> Stats {
    let mut all = Stats::new();
    for r in recorders {
        all.merge(&r.lock());
    }
    all
}

/// Waits for every thread; the first error if one failed.
fn join_all(threads: Vec<JoinHandle<Result<(), String>>>) -> Result<(), String> {
    let mut first = Ok(());
    for t in threads {
        let res = t.join().unwrap_or_else(|_| Err("a load thread panicked".to_string()));
        if first.is_ok() {
            first = res;
        }
    }
    first
}
