//! The command line: three subcommands sharing the gateway, key, duration
//! and report options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringway::cli::ClientArgs;

/// Load generator for a ringway gateway: simulated agents that register
/// and poll, controls that open sessions to them and drive traffic.
#[derive(Parser, Debug)]
#[command(name = "ringway-loadgen", version, about)]
pub struct Cli {
    /// What to simulate.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// N simulated agents: register, poll at the gateway's CMPI, echo the
    /// sessions opened to them.
    Agents {
        /// Options every subcommand takes.
        #[command(flatten)]
        common: CommonArgs,
        /// How many agents.
        #[arg(long)]
        count: u64,
        /// How the agents behave.
        #[command(flatten)]
        agent: AgentOpts,
    },
    /// M controls: browse, open sessions to agents (real or simulated) and
    /// drive traffic through them.
    Controls {
        /// Options every subcommand takes.
        #[command(flatten)]
        common: CommonArgs,
        /// How many controls.
        #[arg(long)]
        count: u64,
        /// How the controls behave.
        #[command(flatten)]
        control: ControlOpts,
    },
    /// Agents and controls at once in one process: many idle polling
    /// agents, a few busy sessions to them.
    Mixed {
        /// Options every subcommand takes.
        #[command(flatten)]
        common: CommonArgs,
        /// How many agents.
        #[arg(long)]
        agents: u64,
        /// How many controls.
        #[arg(long, default_value_t = 4)]
        controls: u64,
        /// How the agents behave.
        #[command(flatten)]
        agent: AgentOpts,
        /// How the controls behave.
        #[command(flatten)]
        control: ControlOpts,
    },
}

/// Options every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The gateway (`--gateway HOST:PORT` or `https://HOST:PORT`; a name
    /// is resolved once at the start and TLS verifies it) and its key
    /// (`--key-file FILE` or the RINGWAY_KEY environment variable).
    #[command(flatten)]
    pub client: ClientArgs,
    /// How long to run, seconds; the run then stops by itself.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Write a machine-readable summary here (JSON).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The gateway's process id, to report its RSS and CPU time at the
    /// start and the end (it must run on this machine).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Runtime threads; agents and controls are dealt round-robin to them.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Source addresses to dial from, dealt round-robin: `A-B` (IPv4,
    /// inclusive), `A`, or a comma-separated list. One address carries
    /// ~28,000 connections (its ephemeral ports).
    #[arg(long)]
    pub source: Option<String>,
    /// Rewrite this file with the summary so far (the --json document)
    /// every second, so that a long run can be sampled while it runs.
    #[arg(long)]
    pub live_json: Option<PathBuf>,
}

/// How simulated agents behave.
#[derive(Args, Debug, Clone)]
pub struct AgentOpts {
    /// Agents are named PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "lg-")]
    pub prefix: String,
    /// Index of the first agent, so that several load generators can share
    /// one gateway without replacing each other's agents.
    #[arg(long, default_value_t = 0)]
    pub first_index: u64,
    /// The poll interval expected, seconds. The gateway decides it (it is
    /// in the registration answer) and agents poll at the gateway's value;
    /// a different one is reported, since the run then measures something
    /// else than was planned.
    #[arg(long)]
    pub cmpi: Option<u64>,
    /// New agents per second while ramping up; 0 starts them all at once.
    #[arg(long, default_value_t = 1000)]
    pub ramp: u64,
    /// Agents that hang up and register again, percent of all per minute
    /// (each at its own time); 0 keeps every channel up.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
}

/// What controls send through their sessions.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Sequential round trips of --size bytes; measures round-trip latency.
    Pingpong,
    /// Writes of --size bytes streamed one way while the echo is read back;
    /// measures throughput.
    Bulk,
}

impl Pattern {
    /// The pattern's name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Pingpong => "pingpong",
            Pattern::Bulk => "bulk",
        }
    }
}

/// How controls behave.
#[derive(Args, Debug, Clone)]
pub struct ControlOpts {
    /// Open sessions only to agents whose names start with this (default:
    /// `lg-`, or in `mixed` the agents' --prefix).
    #[arg(long)]
    pub agents_prefix: Option<String>,
    /// Controls are named PREFIX0, PREFIX1, ... in the gateway's log.
    #[arg(long, default_value = "lgc-")]
    pub control_prefix: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Pattern::Pingpong)]
    pub pattern: Pattern,
    /// Bytes per message (pingpong) or per write (bulk).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages or writes per second per control; 0 = as fast as the echo
    /// comes back (pingpong) or the socket takes them (bulk).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages or writes per session; the control then closes it and
    /// opens the next (to another agent). 0 keeps one session per control
    /// for the whole run.
    #[arg(long, default_value_t = 100)]
    pub per_session: u64,
}
