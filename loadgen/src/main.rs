//! `ringway-loadgen`: load for a ringway gateway, built on the same client
//! library as the real agent and control.
//!
//! # Layout
//! - [`args`]: the command line.
//! - [`sources`], [`limits`]: will the planned connections fit (source
//!   addresses and their ports, open files)?
//! - [`agents`], [`controls`]: the simulated peers, one task each;
//!   [`churn`]: when agents hang up and register again.
//! - [`stats`]: histograms, counters, errors; [`progress`] prints them
//!   every second, [`summary`] at the end (human and JSON).
//! - [`procstat`]: the gateway's RSS and CPU time from /proc.
//! - [`mod@run`]: threads, runtimes, the deadline.

mod agents;
mod args;
mod churn;
mod controls;
mod limits;
mod procstat;
mod progress;
mod run;
mod sources;
mod stats;
mod summary;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ringway::client::Endpoint;

use crate::agents::AgentSpec;
use crate::args::{AgentOpts, Cli, Command, CommonArgs, ControlOpts};
use crate::controls::ControlSpec;
use crate::run::Plan;
use crate::summary::RunInfo;

/// Most runtime threads: one per core is the point of a thread-per-core
/// runtime, and no machine we test on has more than this.
const MAX_THREADS: usize = 256;

/// Largest message or write: 16 MiB, far past any relay buffer, so that a
/// typo does not allocate gigabytes per session.
const MAX_SIZE: usize = 16 << 20;

/// Longest run: a day. Runs are meant to end by themselves; a typo of
/// extra zeros should not keep a gateway under load for months.
const MAX_DURATION_SECS: u64 = 86_400;

/// The name on the endpoint every agent's and control's is cloned from;
/// never sent (each clone gets its own name).
const TEMPLATE_IDENTITY: &str = "ringway-loadgen";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings only by default: the progress line is the normal output, and
    // the first error of each kind is logged at warn.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ringway-loadgen: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<(), String> {
    let plan = plan(cmd)?;
    let nofile = limits::raise_nofile()?;
    let sources = plan.info.sources;
    limits::check(
        plan.agents.as_ref().map_or(0, |a| a.count),
        plan.controls.as_ref().map_or(0, |c| c.count),
        nofile,
        sources.max(1),
        sources::ports_per_address(),
    )?;
    let outcome = run::run(&plan)?;
    let summary = summary::build(&plan, &outcome);
    print!("{}", summary::human(&summary));
    if let Some(path) = &plan.json {
        summary::write_json(&summary, path)?;
    }
    Ok(())
}

/// Checks the arguments and turns them into a plan.
fn plan(cmd: Command) -> Result<Plan, String> {
    let (mode, common, agents, controls) = match cmd {
        Command::Agents { common, count, agent } => ("agents", common, Some((count, agent)), None),
        Command::Controls { common, count, control } => ("controls", common, None, Some((count, control))),
        Command::Mixed {
            common,
            agents,
            controls,
            agent,
            control,
        } => ("mixed", common, Some((agents, agent)), Some((controls, control))),
    };
    let CommonArgs {
        client,
        duration,
        json,
        gateway_pid,
        threads,
        source,
        live_json,
    } = common;
    // One endpoint built once (key read, TLS trust loaded) and cloned for
    // every agent and control with its own name and source address.
    let mut gateways = client.endpoints(TEMPLATE_IDENTITY)?;
    // A host name is resolved once, here: every connection of the run then
    // goes to that one address (no lookup per agent, no spreading over a
    // name's addresses), while TLS still verifies the certificate against
    // the name given.
    // One agent key for the whole run, held in memory: the run's agents
    // are one "machine" to a gateway that pins names, so a churned agent
    // that registers its name again replaces itself rather than being
    // refused (an Ed25519 signature per registration is microseconds).
    let agent_key = std::sync::Arc::new(ringway::client::identity::AgentIdentity::generate());
    let mut addrs = Vec::new();
    for (ep, given) in gateways
        .iter_mut()
        .zip(std::iter::once(&client.gateway).chain(&client.secondary))
    {
        let addr = resolve_once(&ep.gateway).map_err(|why| format!("gateway {given:?}: {why}"))?;
        ep.gateway = addr.to_string();
        ep.agent_key = Some(agent_key.clone());
        addrs.push(addr);
    }
    // Controls talk to the primary only; agents move between all.
    let template = gateways[0].clone();
    if duration == 0 || duration > MAX_DURATION_SECS {
        return Err(format!("--duration must be 1 to {MAX_DURATION_SECS} seconds"));
    }
    if threads == 0 || threads > MAX_THREADS {
        return Err(format!("--threads must be 1 to {MAX_THREADS}"));
    }
    let sources = match source {
        Some(spec) => sources::parse(&spec)?,
        None => Vec::new(),
    };
    if let Some(ip) = sources
        .iter()
        .find(|ip| addrs.iter().any(|a| ip.is_ipv4() != a.is_ipv4()))
    {
        return Err(format!("source address {ip} is not of every gateway's family"));
    }

    let agent_prefix = agents.as_ref().map(|(_, a)| a.prefix.clone());
    let cmpi_expected = agents.as_ref().and_then(|(_, a)| a.cmpi);
    let agents = agents
        .map(|(count, opts)| agent_spec(count, opts, &gateways, &sources))
        .transpose()?;
    let controls = controls
        .map(|(count, opts)| control_spec(count, opts, agent_prefix, &template, &sources))
        .transpose()?;
    Ok(Plan {
        info: RunInfo {
            mode,
            gateway: client.gateway.clone(),
            secondaries: client.secondary.clone(),
            threads,
            sources: sources.len(),
            duration_secs_planned: duration,
        },
        duration: Duration::from_secs(duration),
        threads,
        agents,
        cmpi_expected,
        controls,
        gateway_pid,
        json,
        live_json,
    })
}

/// The first address `host_port` resolves to: an IP:PORT as it is, a
/// name through the system's resolver.
fn resolve_once(host_port: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = host_port.parse() {
        return Ok(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "the name resolves to no address".to_string())
}

fn agent_spec(
    count: u64,
    opts: AgentOpts,
    gateways: &[Endpoint],
    sources: &[IpAddr],
) -> Result<Arc<AgentSpec>, String> {
    if count == 0 {
        return Err("give at least one agent".into());
    }
    if opts.cmpi == Some(0) {
        return Err("--cmpi must be at least 1 second".into());
    }
    let churn = churn::Churn::per_minute(opts.churn)?;
    let spec = AgentSpec {
        gateways: gateways.to_vec(),
        prefix: opts.prefix,
        first_index: opts.first_index,
        count,
        ramp: opts.ramp,
        sources: sources.to_vec(),
        churn,
    };
    let last = spec.name(count - 1);
    if !ringway::proto::valid_name(&last) {
        return Err(format!(
            "agent name {last:?} is invalid: 1 to {} characters, no control characters",
            ringway::proto::MAX_NAME_CHARS
        ));
    }
    Ok(Arc::new(spec))
}

fn control_spec(
    count: u64,
    opts: ControlOpts,
    agent_prefix: Option<String>,
    template: &Endpoint,
    sources: &[IpAddr],
) -> Result<Arc<ControlSpec>, String> {
    if count == 0 {
        return Err("give at least one control".into());
    }
    if opts.size == 0 || opts.size > MAX_SIZE {
        return Err(format!("--size must be 1 to {MAX_SIZE} bytes"));
    }
    if !(opts.rate >= 0.0 && opts.rate.is_finite()) {
        return Err("--rate must be 0 or a positive number".into());
    }
    let last = format!("{}{}", opts.control_prefix, count - 1);
    if !ringway::proto::valid_name(&last) {
        return Err(format!("control name {last:?} is invalid"));
    }
    Ok(Arc::new(ControlSpec {
        template: template.clone(),
        control_prefix: opts.control_prefix,
        agents_prefix: opts.agents_prefix.or(agent_prefix).unwrap_or_else(|| "lg-".to_string()),
        count,
        pattern: opts.pattern,
        size: opts.size,
        rate: opts.rate,
        per_session: opts.per_session,
        sources: sources.to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::resolve_once;

    #[test]
    fn gateway_names_resolve_once_and_addresses_stay_as_given() {
        assert_eq!(
            resolve_once("127.0.0.5:8443"),
            Ok("127.0.0.5:8443".parse().expect("an address"))
        );
        assert_eq!(
            resolve_once("[::1]:8443"),
            Ok("[::1]:8443".parse().expect("an address"))
        );
        let local = resolve_once("localhost:8443").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 8443, "{local}");
        assert!(resolve_once("no-such-host.invalid:8443").is_err());
    }
}
