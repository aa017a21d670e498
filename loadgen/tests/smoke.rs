//! Smoke test: the real gateway binary and the real load generator binary,
//! a three-second `mixed` run, exact outcomes read from the JSON summary.
//! Speed is not checked: CI machines vary, the numbers are for people.
//!
//! # Finding the gateway binary
//! `CARGO_BIN_EXE_*` only names this package's binaries, and the gateway
//! is the root package's. Taking `target/<profile>/ringway` when it exists
//! could test a stale gateway (built before the last change to src/). So
//! the test asks cargo to build it, with this test's own target directory
//! and profile: cargo makes that a no-op when the binary is fresh, and
//! `cargo test` does not hold the target directory's lock while tests run,
//! so the nested build cannot deadlock. The one cost is the first build's
//! time when nothing else built the gateway yet.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The key the test gateway accepts (gateway keys need 8 characters).
const KEY: &str = "Testing1";
/// Agents and controls of the run: enough to exercise the spread over
/// the gateway's two workers, small enough for any CI machine.
const AGENTS: u64 = 50;
const CONTROLS: u64 = 2;
/// The run's length, seconds: with a 1 s CMPI every agent polls at least
/// once, and each control opens many sessions.
const RUN_SECS: u64 = 3;
/// How long the gateway may take to say which port it listens on.
const GATEWAY_START: Duration = Duration::from_secs(30);
/// How long the load generator may take past its own run length.
const LOADGEN_SLACK: Duration = Duration::from_secs(60);
/// Lines of gateway output kept to explain a failure.
const KEPT_LINES: usize = 200;

/// A gateway process, killed and reaped when dropped (so a failed
/// assertion never leaves it running).
struct Gateway {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn start(dir: &Path) -> Gateway {
        Gateway::start_as(dir, "127.0.0.1:0", 1, "primary")
    }

    /// A gateway on `listen` with poll interval `cmpi` and `role`, its
    /// config in `dir`.
    fn start_as(dir: &Path, listen: &str, cmpi: u64, role: &str) -> Gateway {
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nlisten = [\"{listen}\"]\nworkers = 2\ncmpi_secs = {cmpi}\nrole = \"{role}\"\nkeys = [\"{KEY}\"]\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(gateway_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let kept = log.clone();
        // Reads the gateway's stderr to its end: the port comes from it,
        // and a pipe left unread would block the gateway once full.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("Listening on port 127.0.0.1:") {
                    let _ = port_tx.send(line[at + "Listening on port ".len()..].trim().to_string());
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() < KEPT_LINES {
                    kept.push(line);
                }
            }
        });
        let mut gw = Gateway {
            child,
            addr: String::new(),
            log,
        };
        match port_rx.recv_timeout(GATEWAY_START) {
            Ok(addr) => gw.addr = addr,
            Err(_) => panic!("the gateway did not report its port:\n{}", gw.output()),
        }
        gw
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the gateway (see the module comment) and returns its path.
fn gateway_binary() -> PathBuf {
    // This test runs as <target>/<profile>/deps/smoke-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("unexpected target layout: {}", exe.display()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--package",
            "ringway",
            "--bin",
            "ringway",
            "--profile",
            &profile,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .expect("run cargo build for the gateway");
    assert!(status.success(), "building the gateway failed");
    let bin = profile_dir.join(format!("ringway{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "cargo built no gateway at {}", bin.display());
    bin
}

/// Runs the load generator to its end (or kills it past its time) and
/// returns whether it succeeded, with its stdout and stderr.
fn run_loadgen(args: &[String]) -> (bool, String) {
    run_loadgen_for(args, Duration::from_secs(RUN_SECS))
}

/// As [`run_loadgen`], for a run of `run` (its `--duration`).
fn run_loadgen_for(args: &[String], run: Duration) -> (bool, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_ringway-loadgen"))
        .args(args)
        .env_remove("RINGWAY_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load generator");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(run + LOADGEN_SLACK) {
        Ok(Ok(out)) => (
            out.status.success(),
            format!(
                "stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Ok(Err(e)) => panic!("waiting for the load generator failed: {e}"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not
            // been reaped (the waiting thread is still blocked on it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the load generator did not stop by itself");
        }
    }
}

/// One run of the load generator against a gateway of its own: the
/// summary it wrote, and what explains a failure. Its folder goes when it
/// is dropped, after the gateway.
struct Run {
    gateway: Gateway,
    dir: PathBuf,
    /// The `--json` summary, parsed, and as written.
    summary: serde_json::Value,
    text: String,
    /// The load generator's stdout and stderr.
    output: String,
}

impl Run {
    /// Starts a gateway and runs `mode` against it with `args`, the
    /// gateway, key and `--json` options added; `label` names the folder.
    /// `args` may name the folder as `{dir}` and the gateway's pid as
    /// `{pid}`.
    fn new(label: &str, mode: &str, args: &[&str]) -> Run {
        let dir = std::env::temp_dir().join(format!("ringway-loadgen-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("key");
        std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
        let json = dir.join("summary.json");
        let gateway = Gateway::start(&dir);
        let mut all: Vec<String> = [
            mode,
            "--gateway",
            &gateway.addr,
            "--key-file",
            &key_file.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let pid = gateway.pid().to_string();
        all.extend(
            args.iter()
                .map(|a| a.replace("{dir}", &dir.to_string_lossy()).replace("{pid}", &pid)),
        );
        all.extend(["--json".to_string(), json.to_string_lossy().into_owned()]);
        let (ok, output) = run_loadgen(&all);
        assert!(
            ok,
            "the load generator failed:\n{output}\ngateway:\n{}",
            gateway.output()
        );
        let text = std::fs::read_to_string(&json).unwrap();
        let summary = serde_json::from_str(&text).unwrap();
        Run {
            gateway,
            dir,
            summary,
            text,
            output,
        }
    }

    fn explain(&self) -> String {
        format!(
            "summary:\n{}\n{}\ngateway:\n{}",
            self.text,
            self.output,
            self.gateway.output()
        )
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn mixed_run_registers_every_agent_and_relays_sessions() {
    let (agents, controls, secs) = (AGENTS.to_string(), CONTROLS.to_string(), RUN_SECS.to_string());
    let run = Run::new(
        "smoke",
        "mixed",
        &[
            "--agents",
            &agents,
            "--controls",
            &controls,
            "--pattern",
            "pingpong",
            "--size",
            "64",
            "--duration",
            &secs,
            "--gateway-pid",
            "{pid}",
        ],
    );
    let (s, explain) = (&run.summary, || run.explain());
    assert_eq!(s["mode"], "mixed", "{}", explain());
    assert_eq!(s["agents"]["target"], AGENTS, "{}", explain());
    assert_eq!(s["agents"]["registered"], AGENTS, "{}", explain());
    assert_eq!(s["agents"]["up_at_end"], AGENTS, "{}", explain());
    assert_eq!(s["agents"]["cmpi_secs"], 1, "{}", explain());
    assert_eq!(s["latency_us"]["register"]["count"], AGENTS, "{}", explain());
    assert!(s["agents"]["polls"].as_u64().unwrap() > 0, "{}", explain());
    assert!(s["controls"]["sessions"].as_u64().unwrap() > 0, "{}", explain());
    assert!(s["controls"]["round_trips"].as_u64().unwrap() > 0, "{}", explain());
    assert_eq!(s["errors"]["total"], 0, "{}", explain());
    assert_eq!(s["controls"]["mismatches"], 0, "{}", explain());
    assert_eq!(s["agents"]["churned"], 0, "{}", explain());
    assert_eq!(s["gateway_process"]["pid"], run.gateway.pid(), "{}", explain());
    assert!(
        s["gateway_process"]["end"]["rss_kib"].as_u64().unwrap() > 0,
        "{}",
        explain()
    );
}

/// `--churn 50` hangs up each agent once every 2 minutes, at its own phase
/// (index x the golden ratio's fraction, of the period): of agents 0-49
/// only agent 34 (phase 0.013, 1.6 s) falls within a 3 s run, so exactly
/// one hangs up, and registers again at once. `--live-json` leaves the
/// summary of the last second behind.
#[test]
fn churn_hangs_up_agents_on_schedule_and_live_json_follows_the_run() {
    let (agents, secs) = (AGENTS.to_string(), RUN_SECS.to_string());
    let run = Run::new(
        "churn",
        "agents",
        &[
            "--count",
            &agents,
            "--ramp",
            "0",
            "--churn",
            "50",
            "--duration",
            &secs,
            "--live-json",
            "{dir}/live.json",
        ],
    );
    let (s, explain) = (&run.summary, || run.explain());
    assert_eq!(s["agents"]["churned"], 1, "{}", explain());
    assert_eq!(s["agents"]["reconnects"], 1, "{}", explain());
    assert_eq!(s["agents"]["registered"], AGENTS + 1, "{}", explain());
    assert_eq!(s["agents"]["up_at_end"], AGENTS, "{}", explain());
    assert_eq!(
        s["errors"]["total"],
        0,
        "hanging up on schedule is no error: {}",
        explain()
    );

    let live_text = std::fs::read_to_string(run.dir.join("live.json"))
        .unwrap_or_else(|e| panic!("no live summary ({e}): {}", explain()));
    let live: serde_json::Value = serde_json::from_str(&live_text).unwrap();
    assert_eq!(live["mode"], "agents", "{live_text}");
    assert_eq!(
        live["agents"]["registered"], s["agents"]["registered"],
        "the last second's figures: {live_text}"
    );
    assert!(
        !run.dir.join("live.tmp").exists(),
        "the temporary file was renamed over the live one"
    );
}

/// Polls the `--live-json` file at `path` until `done` holds for it, for
/// at most `timeout`; the last summary read.
fn wait_live(
    path: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        if let Some(v) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            if done(&v) {
                return v;
            }
            last = v;
        }
        // The file is rewritten once a second; nothing announces it.
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {timeout:?}; last live summary: {last}");
}

/// `--secondary`: the agents move to the secondary when the primary is
/// killed, and home once it is back on its port, each exactly once.
#[test]
fn agents_fail_over_to_the_secondary_and_back() {
    const MOVERS: u64 = 20;
    const CMPI: u64 = 5;
    let dir = std::env::temp_dir().join(format!("ringway-loadgen-failover-{}", std::process::id()));
    let (p_dir, s_dir) = (dir.join("primary"), dir.join("secondary"));
    std::fs::create_dir_all(&p_dir).unwrap();
    std::fs::create_dir_all(&s_dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut primary = Gateway::start_as(&p_dir, "127.0.0.1:0", CMPI, "primary");
    let secondary = Gateway::start_as(&s_dir, "127.0.0.1:0", CMPI, "secondary");
    let p_addr = primary.addr.clone();
    let (live, json) = (dir.join("live.json"), dir.join("summary.json"));
    let args: Vec<String> = [
        "agents",
        "--gateway",
        &p_addr,
        "--secondary",
        &secondary.addr,
        "--key-file",
        &key_file.to_string_lossy(),
        "--count",
        &MOVERS.to_string(),
        "--ramp",
        "0",
        "--duration",
        "20",
        "--live-json",
        &live.to_string_lossy(),
        "--json",
        &json.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = std::thread::spawn(move || run_loadgen_for(&args, Duration::from_secs(20)));

    wait_live(&live, Duration::from_secs(20), "every agent up", |v| {
        v["agents"]["up_at_end"] == MOVERS
    });
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    wait_live(&live, Duration::from_secs(10), "every agent on the secondary", |v| {
        v["agents"]["failovers"] == MOVERS && v["agents"]["up_at_end"] == MOVERS
    });
    // The killed gateway's listeners go a few milliseconds after it; a
    // start before then fails to bind, so try again until one starts.
    let deadline = std::time::Instant::now() + GATEWAY_START;
    let _primary = loop {
        let started = std::panic::catch_unwind(|| Gateway::start_as(&p_dir, &p_addr, CMPI, "primary"));
        match started {
            Ok(gw) if gw.addr == p_addr => break gw,
            _ if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("the primary did not start again on {p_addr}"),
        }
    };
    wait_live(&live, Duration::from_secs(4 * CMPI), "every agent back home", |v| {
        v["agents"]["failbacks"] == MOVERS
    });

    let (ok, output) = run.join().unwrap();
    assert!(ok, "the load generator failed:\n{output}");
    let text = std::fs::read_to_string(&json).unwrap();
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["secondaries"], serde_json::json!([secondary.addr]), "{text}");
    assert_eq!(s["agents"]["failovers"], MOVERS, "{text}");
    assert_eq!(s["agents"]["failbacks"], MOVERS, "{text}");
    assert_eq!(s["agents"]["up_at_end"], MOVERS, "{text}");
    assert_eq!(s["agents"]["registered"], 3 * MOVERS, "{text}");
    assert!(
        output.contains(&format!("{MOVERS} failovers, {MOVERS} failbacks")),
        "{output}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
