//! The `ringway` command: parse arguments, then hand over to one file per
//! subcommand. Errors are one line on stderr and a non-zero exit.

#[cfg(target_os = "linux")]
mod admin;
mod agent;
mod control;
#[cfg(target_os = "linux")]
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::{GatewayKey, MIN_KEY_LEN};

/// A connectivity gateway: agents dial out, operators reach them through it.
#[derive(Parser, Debug)]
#[command(name = "ringway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file (see config.toml.example).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (non-zero with the reason).
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Show the gateway's clients and active sessions (admin listener).
    #[cfg(target_os = "linux")]
    Status(admin::AdminArgs),
    /// Make the gateway re-read its config file (admin listener).
    #[cfg(target_os = "linux")]
    Reload(admin::AdminArgs),
    /// Publish a local TCP service through a gateway.
    Agent(agent::AgentArgs),
    /// Browse agents and open sessions to them.
    #[command(subcommand)]
    Control(control::ControlCommand),
}

/// Options every client command shares.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The gateway, as HOST:PORT.
    #[arg(long, short)]
    pub gateway: String,
    /// File holding the gateway key (else the RINGWAY_KEY environment
    /// variable). The key is never taken on the command line, where other
    /// users could read it in the process list.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

impl ClientArgs {
    /// Loads the gateway key from the file or the environment.
    pub fn key(&self) -> Result<GatewayKey, String> {
        let secret = match &self.key_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            None => std::env::var("RINGWAY_KEY")
                .map_err(|_| "no gateway key: give --key-file FILE or set RINGWAY_KEY".to_string())?,
        };
        if secret.chars().count() < MIN_KEY_LEN {
            return Err(format!("the gateway key must be at least {MIN_KEY_LEN} characters"));
        }
        Ok(GatewayKey::new(&secret))
    }
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        #[cfg(target_os = "linux")]
        Command::Serve { config } => serve::serve(&config),
        #[cfg(not(target_os = "linux"))]
        Command::Serve { .. } => Err("the gateway runs on Linux only (it needs io_uring)".to_string()),
        Command::CheckConfig { file } => crate::config::load(&file)
            .map(|c| {
                println!(
                    "{}: ok ({} listen address(es), {} key(s))",
                    file.display(),
                    c.listen.len(),
                    c.keys.len()
                )
            })
            .map_err(|e| e.to_string()),
        #[cfg(target_os = "linux")]
        Command::Status(args) => admin::status(args),
        #[cfg(target_os = "linux")]
        Command::Reload(args) => admin::reload(args),
        Command::Agent(args) => agent::run(args),
        Command::Control(cmd) => control::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ringway: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// A single-threaded compio runtime for client commands.
fn client_runtime() -> Result<compio::runtime::Runtime, String> {
    compio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))
}
