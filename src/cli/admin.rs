//! `ringway status` and `ringway reload`: clients of the admin listener.

use std::path::PathBuf;

use clap::Args;

use crate::admin::routes::{FORGET_PATH, GatewayInfo, WORKERS_ANSWERED};
use crate::eventlog::sanitize;
use crate::gateway::{AgentRow, SessionRow};
use crate::http::pct_encode;

/// Where the admin listener is.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The admin listener, ip:port.
    #[arg(long, default_value = crate::config::DEFAULT_ADMIN_LISTEN)]
    admin: String,
    /// File holding the admin token, if the gateway requires one.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// `ringway status`'s options.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Where the admin listener is.
    #[command(flatten)]
    admin: AdminArgs,
    /// Show the cluster instead: every live gateway, its clients and
    /// sessions, and whether the shared directory (Redis) answers.
    #[arg(long)]
    cluster: bool,
}

impl AdminArgs {
    fn token(&self) -> Result<Option<String>, String> {
        self.token_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))
            })
            .transpose()
    }

    fn get(&self, method: &str, path: &str) -> Result<String, String> {
        let (head, body) = crate::admin::request(&self.admin, method, path, self.token()?.as_deref())?;
        if head.status != 200 {
            return Err(format!("{path}: {} {}", head.status, body.trim()));
        }
        // A worker that missed the snapshot deadline is left out of the
        // lists: say so rather than show fewer agents as if that were all.
        if let Some(answered) = head.header(&WORKERS_ANSWERED.to_ascii_lowercase())
            && let Some((got, of)) = answered.split_once(" of ")
            && got != of
        {
            eprintln!("warning: {path}: only {answered} workers answered in time; the list is incomplete");
        }
        Ok(body)
    }
}

/// Prints the clients and sessions tables, or with `--cluster` the
/// cluster's gateways.
pub fn status(args: StatusArgs) -> Result<(), String> {
    if args.cluster {
        return cluster_status(&args.admin);
    }
    let args = args.admin;
    let info = args.get("GET", "/api/gateway")?;
    let info: GatewayInfo<'_> = serde_json::from_str(&info).map_err(|e| format!("bad gateway answer: {e}"))?;
    println!(
        "Role: {}{}",
        sanitize(info.role),
        if info.standby { " (standby)" } else { "" }
    );
    println!();
    let agents: Vec<AgentRow> =
        serde_json::from_str(&args.get("GET", "/api/clients")?).map_err(|e| format!("bad client list: {e}"))?;
    let sessions: Vec<SessionRow> =
        serde_json::from_str(&args.get("GET", "/api/sessions")?).map_err(|e| format!("bad session list: {e}"))?;
    // Peer-chosen strings are sanitised (control characters become `?`)
    // so a hostile name can neither add rows nor drive the terminal.
    println!("Clients ({})", agents.len());
    println!(
        "{:<24} {:<15} {:<17} {:<22} {:<16} {:>2} {:<20} {:<20} {:>4}",
        "NAME", "LOCAL IP", "MAC", "EXTERNAL", "KEY", "W", "CONNECTED SINCE", "LAST POLL", "SESS"
    );
    for a in &agents {
        println!(
            "{:<24} {:<15} {:<17} {:<22} {:<16} {:>2} {:<20} {:<20} {:>4}",
            sanitize(&a.name),
            sanitize(&a.local_ip),
            sanitize(&a.mac),
            a.external_addr,
            a.key,
            a.worker,
            a.connected_since,
            a.last_poll,
            a.sessions
        );
    }
    println!();
    println!("Active sessions ({})", sessions.len());
    println!(
        "{:<20} {:<12} {:<24} {:<20} {:>14} {:>14} {:>2}",
        "CONTROL", "OPERATOR", "CLIENT", "STARTED", "TO CLIENT", "TO CONTROL", "W"
    );
    for s in &sessions {
        println!(
            "{:<20} {:<12} {:<24} {:<20} {:>14} {:>14} {:>2}",
            sanitize(&s.control),
            sanitize(s.operator.as_deref().unwrap_or("-")),
            sanitize(&s.agent),
            s.started,
            s.bytes_to_agent,
            s.bytes_to_control,
            s.worker
        );
    }
    Ok(())
}

/// Prints the cluster as the gateway sees it.
fn cluster_status(args: &AdminArgs) -> Result<(), String> {
    let body = args.get("GET", "/api/cluster")?;
    let status: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("bad cluster answer: {e}"))?;
    let text = |v: &serde_json::Value| sanitize(v.as_str().unwrap_or(""));
    let redis = if status["redis_up"].as_bool() == Some(true) {
        "up".to_string()
    } else {
        format!("DOWN: {}", text(&status["down_reason"]))
    };
    let age = status["view_age_secs"]
        .as_f64()
        .map_or("never".to_string(), |s| format!("{s:.1} s ago"));
    println!("This gateway: {}", text(&status["id"]));
    println!("Directory (Redis): {redis}; leases read {age}");
    println!();
    let gateways = status["gateways"].as_array().cloned().unwrap_or_default();
    println!("Gateways ({})", gateways.len());
    println!(
        "{:<20} {:<40} {:>8} {:>8} STATE",
        "ID", "ADDRESS", "CLIENTS", "SESSIONS"
    );
    for g in &gateways {
        let mark = if g["this"].as_bool() == Some(true) { " *" } else { "" };
        let state = if g["draining"].as_bool() == Some(true) {
            "draining"
        } else {
            "serving"
        };
        println!(
            "{:<20} {:<40} {:>8} {:>8} {state:<9} {:.1} s ago",
            format!("{}{mark}", text(&g["id"])),
            text(&g["advertise"]),
            g["agents"].as_u64().unwrap_or(0),
            g["sessions"].as_u64().unwrap_or(0),
            g["lease_age_secs"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// `ringway agents ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AgentsCommand {
    /// Release an agent name pinned to a machine's agent key, so that
    /// another machine may register the name (the next to register pins it).
    Forget(ForgetArgs),
}

/// Arguments of `ringway agents forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The agent's name.
    name: String,
    /// Only the pin under this gateway key (by its configured name);
    /// default: under every key.
    #[arg(long)]
    key: Option<String>,
}

/// Runs `ringway agents ...`.
pub fn agents(cmd: AgentsCommand) -> Result<(), String> {
    match cmd {
        AgentsCommand::Forget(args) => {
            let mut path = format!("{}?name={}", FORGET_PATH, pct_encode(&args.name));
            if let Some(key) = &args.key {
                path.push_str(&format!("&key={}", pct_encode(key)));
            }
            let summary = args.admin.get("POST", &path)?;
            println!("{}", summary.trim());
            Ok(())
        }
    }
}

/// `ringway drain`'s options.
#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Where the admin listener is.
    #[command(flatten)]
    admin: AdminArgs,
    /// End the drain: the gateway takes new clients again.
    #[arg(long)]
    stop: bool,
}

/// Starts or ends a cluster gateway's drain.
pub fn drain(args: DrainArgs) -> Result<(), String> {
    let path = if args.stop {
        format!("{}?stop", crate::admin::routes::DRAIN_PATH)
    } else {
        crate::admin::routes::DRAIN_PATH.to_string()
    };
    let summary = args.admin.get("POST", &path)?;
    println!("{}", summary.trim());
    Ok(())
}

/// Asks the gateway to re-read its config file.
pub fn reload(args: AdminArgs) -> Result<(), String> {
    let summary = args.get("POST", "/api/reload")?;
    println!("{}", summary.trim());
    Ok(())
}
