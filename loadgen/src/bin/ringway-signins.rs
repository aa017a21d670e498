//! Operator sign-ins at a steady rate, for bench/signins.sh: what a flood
//! of sign-ins costs the gateway (it only HMACs; argon2 is the client's),
//! measured against a busy session's round trips on the same worker.
//!
//! The client's argon2 runs once, from the operator's verifier (its salt
//! and parameters) and password, and every sign-in reuses the salted
//! password, so the load generator itself stays cheap. Sources are dealt
//! round-robin over `--source` addresses, since the gateway allows each
//! address 20 sign-ins and then 10 a minute.
//!
//! Prints one JSON object: attempted, ok, refused, errors, and the
//! latency p50/p99 in µs of the sign-ins that succeeded and of those that
//! were refused (what a timing attack would compare: a wrong password, an
//! unknown name and a locked operator must look alike).

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use ringway::auth::GatewayKey;
use ringway::auth::scram::{Verifier, salted_password};
use ringway::client::{ClientError, Credential, Endpoint, login_with};
use ringway::tls::Trust;

#[derive(Parser)]
#[command(
    name = "ringway-signins",
    about = "Operator sign-ins at a steady rate against a ringway gateway"
)]
struct Args {
    /// The gateway, HOST:PORT.
    #[arg(long)]
    gateway: String,
    /// The gateway key, from a file.
    #[arg(long)]
    key_file: std::path::PathBuf,
    /// The operator.
    #[arg(long)]
    user: String,
    /// The operator's verifier, as in its `[[operators]]` block.
    #[arg(long)]
    verifier: String,
    /// Its password.
    #[arg(long, env = "RINGWAY_PASSWORD")]
    password: String,
    /// Sign-ins per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// First and last source address, 127.0.0.A-127.0.0.B.
    #[arg(long, default_value = "127.0.0.2-127.0.0.101")]
    source: String,
}

fn sources(range: &str) -> Result<Vec<IpAddr>, String> {
    let (a, b) = range.split_once('-').ok_or("--source is A-B")?;
    let a: Ipv4Addr = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let b: Ipv4Addr = b.parse().map_err(|e| format!("{b}: {e}"))?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a > 10_000 {
        return Err("--source must run upwards, at most 10,000 addresses".into());
    }
    Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringway-signins: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<String, String> {
    let key = std::fs::read_to_string(&args.key_file).map_err(|e| format!("{}: {e}", args.key_file.display()))?;
    let key = GatewayKey::new(key.trim());
    let verifier = Verifier::parse(&args.verifier).map_err(|e| format!("--verifier: {e:?}"))?;
    let salted = salted_password(args.password.as_bytes(), verifier.salt(), &verifier.params())
        .map_err(|e| format!("argon2: {e:?}"))?;
    let sources = sources(&args.source)?;
    let base = Endpoint::new(&args.gateway, key, "bench", &Trust::Insecure)?;
    let rate = args.rate.max(1);
    let total = u64::from(rate) * args.duration;
    let runtime = compio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let tally = Rc::new(std::cell::RefCell::new((
            0u64,
            0u64,
            0u64,
            Vec::<u64>::new(),
            Vec::<u64>::new(),
        )));
        let start = Instant::now();
        let gap = Duration::from_secs(1) / rate;
        let mut tasks = Vec::new();
        for i in 0..total {
            // Open loop: the n-th sign-in starts at n × gap whatever the
            // others are doing, so a slow gateway meets the full rate.
            let due = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
            compio::time::sleep_until(due).await;
            let ep = Endpoint {
                bind: Some(sources[(i as usize) % sources.len()]),
                ..base.clone()
            };
            let (user, tally) = (args.user.clone(), tally.clone());
            tasks.push(compio::runtime::spawn(async move {
                let t = Instant::now();
                let mut no_code = || Ok(None);
                let got = login_with(&ep, &user, Credential::Salted(&salted), &mut no_code).await;
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut t = tally.borrow_mut();
                match got {
                    Ok(_) => {
                        t.0 += 1;
                        t.3.push(us);
                    }
                    Err(ClientError::Refused { .. }) => {
                        t.1 += 1;
                        t.4.push(us);
                    }
                    Err(_) => t.2 += 1,
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let (ok, refused, errors, mut lat, mut refused_lat) = tally.borrow().clone();
        lat.sort_unstable();
        refused_lat.sort_unstable();
        let pct = |xs: &[u64], p: f64| {
            xs.get(((xs.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        Ok(serde_json::json!({
            "attempted": total,
            "ok": ok,
            "refused": refused,
            "errors": errors,
            "secs": start.elapsed().as_secs_f64(),
            "latency_us": {"p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99)},
            "refused_latency_us": {"p50": pct(&refused_lat, 0.5), "p99": pct(&refused_lat, 0.99)},
        })
        .to_string())
    })
}
