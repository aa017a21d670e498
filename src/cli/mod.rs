//! The `ringway` command: parse arguments, then hand over to one file per
//! subcommand. Errors are one line on stderr and a non-zero exit.

#[cfg(target_os = "linux")]
mod admin;
mod agent;
mod agent_file;
mod boots;
mod control;
mod gencert;
mod genkey;
mod operator;
#[cfg(target_os = "linux")]
mod serve;
mod tickets;

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
    Status(admin::StatusArgs),
    /// Make the gateway re-read its config file (admin listener).
    #[cfg(target_os = "linux")]
    Reload(admin::AdminArgs),
    /// Move this cluster gateway's clients to the others, spread over
    /// `[cluster] drain_secs`, and send new ones there (admin listener).
    #[cfg(target_os = "linux")]
    Drain(admin::DrainArgs),
    /// Manage agents through the admin listener (release a pinned name).
    #[cfg(target_os = "linux")]
    #[command(subcommand)]
    Agents(admin::AgentsCommand),
    /// Make a private CA and a gateway certificate (ca.pem, cert.pem, key.pem).
    GenCert(gencert::GenCertArgs),
    /// Print a new random gateway key (128 bits, 32 hex digits) on stdout.
    GenKey,
    /// Make operators, the people who sign in to browse and connect.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Publish a local TCP service through a gateway.
    Agent(agent::AgentArgs),
    /// Browse agents and open sessions to them.
    #[command(subcommand)]
    Control(control::ControlCommand),
}

/// Options every client command shares.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The gateway: HOST:PORT (plain HTTP) or https://HOST:PORT (TLS). With
    /// --secondary, the primary: the one agents prefer.
    #[arg(long, short)]
    pub gateway: String,
    /// A secondary gateway, used while the ones before it cannot be
    /// reached; repeat for more, in order of preference (at most 7). Same
    /// forms as --gateway; the key and TLS options apply to all.
    #[arg(long = "secondary", value_name = "GATEWAY")]
    pub secondary: Vec<String>,
    /// With https: trust the CA certificates in this PEM file instead of
    /// the system's roots (e.g. the ca.pem from `ringway gen-cert`).
    #[arg(long, conflicts_with_all = ["pin_sha256", "insecure"])]
    pub ca_file: Option<PathBuf>,
    /// With https: accept only the gateway certificate whose SHA-256 (of
    /// its DER form) is this hex string.
    #[arg(long, conflicts_with = "insecure")]
    pub pin_sha256: Option<String>,
    /// With https: accept any certificate. For testing only: anyone in the
    /// path can then read and change the traffic.
    #[arg(long)]
    pub insecure: bool,
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

    /// How to check the gateway's certificate.
    pub fn trust(&self) -> Result<crate::tls::Trust, String> {
        use crate::tls::Trust;
        if self.insecure {
            log::warn!(
                "--insecure: the gateway's certificate is NOT checked; anyone in the path can read this traffic"
            );
            return Ok(Trust::Insecure);
        }
        if let Some(pin) = &self.pin_sha256 {
            let clean: String = pin.chars().filter(|c| *c != ':').collect();
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&clean, &mut bytes)
                .map_err(|_| "--pin-sha256 must be 64 hex digits (SHA-256 of the certificate's DER form)")?;
            return Ok(Trust::Pin(bytes));
        }
        Ok(match &self.ca_file {
            Some(path) => Trust::CaFile(path.clone()),
            None => Trust::SystemRoots,
        })
    }

    /// The endpoint for talking to the gateway as `identity`.
    pub fn endpoint(&self, identity: &str) -> Result<crate::client::Endpoint, String> {
        let (key, trust) = (self.key()?, self.trust()?);
        if !self.gateway.starts_with("https://") && (self.ca_file.is_some() || self.pin_sha256.is_some()) {
            return Err("--ca-file and --pin-sha256 need an https:// gateway".into());
        }
        crate::client::Endpoint::new(&self.gateway, key, identity, &trust)
    }

    /// The endpoints of the primary (first) and each secondary, in order:
    /// the same key and TLS settings, a boot id cache each.
    pub fn endpoints(&self, identity: &str) -> Result<Vec<crate::client::Endpoint>, String> {
        use crate::client::failover::MAX_GATEWAYS;
        if 1 + self.secondary.len() > MAX_GATEWAYS {
            return Err(format!("at most {} --secondary gateways", MAX_GATEWAYS - 1));
        }
        let primary = self.endpoint(identity)?;
        // Trust read once more only if there are secondaries: an
        // --insecure warning is said once per list.
        let trust = match self.secondary.is_empty() {
            true => crate::tls::Trust::SystemRoots,
            false => self.trust()?,
        };
        let mut all = vec![primary.clone()];
        for gw in &self.secondary {
            let ep = crate::client::Endpoint::new(gw, primary.key.clone(), identity, &trust)?;
            if all.iter().any(|e| e.gateway == ep.gateway) {
                return Err(format!("gateway {gw} is given twice"));
            }
            all.push(ep);
        }
        Ok(all)
    }
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let args = match agent_file::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ringway: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        #[cfg(target_os = "linux")]
        Command::Serve { config } => serve::serve(&config),
        #[cfg(not(target_os = "linux"))]
        Command::Serve { .. } => Err("the gateway runs on Linux only (it needs io_uring)".to_string()),
        Command::CheckConfig { file } => crate::config::load(&file)
            .map(|c| {
                // Warnings (weak keys, keys named by position) go to stderr
                // and do not fail the check: the file is valid as it is.
                for w in &c.warnings {
                    eprintln!("{w}");
                }
                let names: Vec<&str> = c.keys.iter().map(|k| k.name()).collect();
                println!(
                    "{}: ok ({} listen address(es), {} key(s): {})",
                    file.display(),
                    c.listen.len(),
                    c.keys.len(),
                    names.join(", ")
                )
            })
            .map_err(|e| e.to_string()),
        #[cfg(target_os = "linux")]
        Command::Status(args) => admin::status(args),
        #[cfg(target_os = "linux")]
        Command::Reload(args) => admin::reload(args),
        #[cfg(target_os = "linux")]
        Command::Drain(args) => admin::drain(args),
        #[cfg(target_os = "linux")]
        Command::Agents(cmd) => admin::agents(cmd),
        Command::GenCert(args) => gencert::run(args),
        Command::GenKey => genkey::run(),
        Command::Operator(cmd) => operator::run(cmd),
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
