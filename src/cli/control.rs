//! `ringway control`: sign in as an operator, list agents, and open
//! sessions to them from local TCP connections or from stdin/stdout
//! (ssh's ProxyCommand).
//!
//! With operators on the gateway, `login` keeps a ticket per gateway
//! (`tickets.rs`) that `ls` and `connect` then send; without one the
//! gateway answers `sign in first: ringway control login`.

use std::io::{IsTerminal, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use clap::{Args, Subcommand};
use compio::net::TcpListener;

use super::ClientArgs;
use super::operator::PASSWORD_ENV;
use super::tickets::{self, Stored};
use crate::client::failover::{PROBE_TIMEOUT, merge};
use crate::client::{self, ClientError, Endpoint, Session, sysinfo};
use crate::eventlog::sanitize;
use crate::relay::{Counters, relay};

/// Relay buffer per direction on the control's side.
const RELAY_BUFFER: usize = 64 * 1024;

/// The environment variable a script gives the TOTP code in.
pub const TOTP_ENV: &str = "RINGWAY_TOTP";

/// What the gateway answers a connect that needs a fresh TOTP code.
const FRESH_CODE: &str = "a fresh TOTP code is needed";

/// `ringway control` subcommands.
#[derive(Subcommand, Debug)]
pub enum ControlCommand {
    /// Sign in as an operator (password, then a TOTP code if the gateway
    /// asks) and keep the ticket for this gateway.
    Login {
        #[command(flatten)]
        common: ControlArgs,
        /// The operator's name.
        #[arg(long)]
        user: String,
        /// Read the password from this file (its first line) instead of
        /// RINGWAY_PASSWORD or the terminal: for scripts.
        #[arg(long, value_name = "FILE")]
        password_file: Option<std::path::PathBuf>,
    },
    /// Forget this gateway's ticket.
    Logout {
        /// The gateway, as given to `login`.
        #[arg(long, short)]
        gateway: String,
    },
    /// List the agents this key can see.
    Ls {
        #[command(flatten)]
        common: ControlArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Open relay sessions to an agent.
    Connect {
        /// The agent's name.
        agent: String,
        #[command(flatten)]
        common: ControlArgs,
        /// Accept local TCP connections here; each becomes one session.
        #[arg(long, conflicts_with = "stdio", required_unless_present = "stdio")]
        listen: Option<String>,
        /// Relay stdin/stdout as one session (for ssh -o ProxyCommand).
        #[arg(long)]
        stdio: bool,
    },
}

/// Options of every control subcommand.
#[derive(Args, Debug)]
pub struct ControlArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// This control's name, shown in the gateway's log (default: host name).
    #[arg(long = "as")]
    name: Option<String>,
}

impl ControlArgs {
    /// The primary's endpoint first, then each secondary's.
    fn endpoints(self) -> Result<Vec<Endpoint>, String> {
        let identity = self.name.unwrap_or_else(sysinfo::hostname);
        if !crate::proto::valid_name(&identity) {
            return Err(format!("invalid control name {identity:?}"));
        }
        self.client.endpoints(&identity)
    }

    /// Every gateway's endpoint (the primary, then each `--secondary`),
    /// each with that gateway's stored ticket if there is one (tickets are
    /// per gateway), and a TOTP code from the environment for a connect.
    /// Without `--as` the control takes the name its primary's ticket is
    /// bound to.
    fn signed_endpoints(mut self) -> Result<Vec<Endpoint>, String> {
        let typed: Vec<String> = std::iter::once(self.client.gateway.clone())
            .chain(self.client.secondary.iter().cloned())
            .collect();
        if self.name.is_none() {
            self.name = tickets::load(&typed[0])?.map(|s| s.control);
        }
        let totp = std::env::var(TOTP_ENV).ok().filter(|c| !c.is_empty());
        let mut eps = self.endpoints()?;
        for (ep, gateway) in eps.iter_mut().zip(&typed) {
            if let Some(s) = tickets::load(gateway)? {
                if s.control != ep.identity {
                    log::warn!(
                        "the ticket for {gateway} is bound to control {:?}, not {:?}: sign in again as this one",
                        s.control,
                        ep.identity
                    );
                } else if s.expires_at <= crate::auth::unix_now() {
                    log::warn!("the ticket for {gateway} has expired: sign in again (ringway control login)");
                } else {
                    ep.operator = s.ticket().map(Arc::new);
                }
            }
            ep.totp = totp.clone();
        }
        super::boots::preload(&mut eps);
        Ok(eps)
    }
}

/// How long a listing may take from one gateway of several: one that
/// does not answer (down, stopped) must not hold the others' answer for
/// the full answer deadline. Twice a health probe's: a list is longer.
const LIST_TIMEOUT: std::time::Duration = PROBE_TIMEOUT.saturating_mul(2);

/// An agent as `ls` shows it with several gateways: where it is.
#[derive(serde::Serialize)]
struct Listed {
    #[serde(flatten)]
    agent: crate::proto::AgentSummary,
    /// The gateway its channel is on, as given on the command line.
    gateway: String,
}

/// Every gateway's list, merged: each agent once, with the index of the
/// gateway it is on (see [`merge`]). The secondaries are asked first and
/// the primary last: an agent moving home registers at the primary before
/// it leaves the secondary, so one that moves during the listing is still
/// seen. A gateway that cannot be asked is left out with a warning; if
/// none can, the first error is the answer.
async fn list_all(eps: &[Endpoint]) -> Result<Vec<(usize, crate::proto::AgentSummary)>, ClientError> {
    if eps.len() == 1 {
        return Ok(client::list_agents(&eps[0])
            .await?
            .into_iter()
            .map(|a| (0, a))
            .collect());
    }
    let mut lists = vec![Vec::new(); eps.len()];
    let mut answered = false;
    let mut first_error = None;
    for (i, ep) in eps.iter().enumerate().rev() {
        let res = compio::time::timeout(LIST_TIMEOUT, client::list_agents(ep))
            .await
            .unwrap_or(Err(ClientError::Timeout("the gateway did not list its agents in time")));
        match res {
            Ok(list) => {
                lists[i] = list;
                answered = true;
            }
            Err(e) => {
                log::warn!("cannot list the agents of {}: {e}", ep.gateway);
                first_error.get_or_insert(e);
            }
        }
    }
    match (answered, first_error) {
        (false, Some(e)) => Err(e),
        _ => Ok(merge(lists)),
    }
}

/// Opens a session to `agent` on the gateway it is on: where the merged
/// list shows it, then the others in order (it may have moved since).
/// With one gateway, a plain connect.
async fn connect_any(eps: &[Endpoint], agent: &str) -> Result<Session, ClientError> {
    if eps.len() == 1 {
        return open_session(&eps[0], agent).await;
    }
    let at = list_all(eps)
        .await
        .ok()
        .and_then(|l| l.into_iter().find(|(_, a)| a.name == agent).map(|(i, _)| i));
    let order = at.into_iter().chain((0..eps.len()).filter(|&i| Some(i) != at));
    let mut last = None;
    for i in order {
        match open_session(&eps[i], agent).await {
            Ok(session) => return Ok(session),
            // Not there, or the gateway is not: the agent may be on the next.
            Err(e @ (ClientError::Refused { status: 404, .. } | ClientError::Io(_) | ClientError::Timeout(_))) => {
                log::debug!("{}: cannot open a session to {agent}: {e}", eps[i].gateway);
                last = Some(e);
            }
            // The gateway has the agent and gave its answer (a 502 from the
            // agent's service, a 503, a 504): that is the answer.
            Err(e) => return Err(e),
        }
    }
    // Invariant: the list of gateways is never empty, so one was tried.
    Err(last.unwrap_or(ClientError::Protocol("no gateway to try".into())))
}

/// Runs a control subcommand.
pub fn run(cmd: ControlCommand) -> Result<(), String> {
    match cmd {
        ControlCommand::Login {
            common,
            user,
            password_file,
        } => login(common, &user, password_file.as_deref()),
        ControlCommand::Logout { gateway } => {
            if tickets::remove(&gateway)? {
                eprintln!("Signed out of {gateway}: its ticket is removed");
            } else {
                eprintln!("No ticket for {gateway}");
            }
            Ok(())
        }
        ControlCommand::Ls { common, json } => {
            let eps = common.signed_endpoints()?;
            let agents = super::client_runtime()?.block_on(list_all(&eps));
            super::boots::remember(&eps);
            let agents = agents.map_err(|e| e.to_string())?;
            let several = eps.len() > 1;
            if json && several {
                let listed: Vec<Listed> = agents
                    .into_iter()
                    .map(|(i, agent)| Listed {
                        agent,
                        gateway: eps[i].gateway.clone(),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&listed).map_err(|e| e.to_string())?);
            } else if json {
                let agents: Vec<_> = agents.into_iter().map(|(_, a)| a).collect();
                println!("{}", serde_json::to_string_pretty(&agents).map_err(|e| e.to_string())?);
            } else {
                // Agents choose their names and details, and the gateway
                // the rest: control characters become `?` in every field,
                // so none can add rows or drive the terminal.
                let gw_head = if several {
                    format!("{:<22} ", "GATEWAY")
                } else {
                    String::new()
                };
                println!(
                    "{:<24} {gw_head}{:<22} {:<21} {:<17} {:<15} OS",
                    "NAME", "EXTERNAL", "CONNECTED SINCE", "MAC", "LOCAL IP"
                );
                for (i, a) in agents {
                    let gw = if several {
                        format!("{:<22} ", eps[i].gateway)
                    } else {
                        String::new()
                    };
                    println!(
                        "{:<24} {gw}{:<22} {:<21} {:<17} {:<15} {}",
                        sanitize(&a.name),
                        sanitize(&a.external_addr),
                        sanitize(&a.connected_since),
                        sanitize(&a.mac),
                        sanitize(&a.local_ip),
                        sanitize(&a.os)
                    );
                }
            }
            Ok(())
        }
        ControlCommand::Connect {
            agent,
            common,
            listen,
            stdio,
        } => {
            let eps = common.signed_endpoints()?;
            if stdio {
                return connect_stdio(&eps, &agent);
            }
            let listen = listen.ok_or("give --listen ADDR or --stdio")?;
            connect_listen(eps, agent, listen)
        }
    }
}

/// `ringway control login`: signs in and stores the ticket.
fn login(common: ControlArgs, user: &str, password_file: Option<&std::path::Path>) -> Result<(), String> {
    if !crate::auth::scram::valid_user(user) {
        return Err(format!("invalid operator name {user:?}"));
    }
    let gateway = common.client.gateway.clone();
    // The primary's: a ticket is per gateway, so each is signed into
    // on its own (`--gateway` naming it).
    let ep = common
        .endpoints()?
        .into_iter()
        .next()
        .ok_or("no gateway to sign in to")?;
    let from_file = password_file.map(read_password_file).transpose()?;
    let password = match from_file.map_or_else(|| std::env::var(PASSWORD_ENV), Ok) {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => rpassword::prompt_password(format!("Password for {user}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?,
        Err(_) => {
            return Err(format!(
                "no password: set {PASSWORD_ENV} or run in a terminal to type it"
            ));
        }
    };
    let mut code = || read_code("TOTP code (empty if you have none): ");
    let signed = super::client_runtime()?
        .block_on(client::login(&ep, user, password.as_bytes(), &mut code))
        .map_err(|e| e.to_string())?;
    let path = tickets::save(&Stored::new(&gateway, &ep.identity, &signed))?;
    let until = std::time::UNIX_EPOCH + std::time::Duration::from_secs(signed.expires_at);
    eprintln!(
        "Signed in to {gateway} as {user} (control {}); the ticket is valid until {} and kept in {}",
        ep.identity,
        crate::timefmt::rfc3339(until),
        path.display()
    );
    Ok(())
}

/// Longest password file read: a passphrase, not a document.
const MAX_PASSWORD_FILE: u64 = 4096;

/// The first line of `path`, without its line end; refused if the file
/// is longer than [`MAX_PASSWORD_FILE`] or the line is empty.
fn read_password_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSWORD_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!(
            "the password file {} is longer than {MAX_PASSWORD_FILE} bytes",
            path.display()
        ));
    }
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(format!("the password file {} is empty", path.display()));
    }
    Ok(line)
}

/// A TOTP code from `RINGWAY_TOTP`, or typed at the terminal; none if
/// neither (the gateway then hears `CODE none`).
fn read_code(prompt: &str) -> Result<Option<String>, String> {
    if let Ok(code) = std::env::var(TOTP_ENV) {
        return Ok(Some(code.trim().to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let code = rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the code: {e}"))?;
    Ok(Some(code.trim().to_string()))
}

/// Opens a session; with `[auth] totp_per_session` a refused connect
/// without a code is asked again once, with a code typed at the terminal.
async fn open_session(ep: &Endpoint, agent: &str) -> Result<Session, ClientError> {
    match client::connect(ep, agent).await {
        Err(ClientError::Refused { status: 401, reason }) if reason == FRESH_CODE && std::io::stdin().is_terminal() => {
            let code = read_code("TOTP code for this session: ")
                .map_err(|e| ClientError::Io(std::io::Error::other(e)))?
                .ok_or_else(|| ClientError::Protocol("no TOTP code given".into()))?;
            let ep = Endpoint {
                totp: Some(code),
                ..ep.clone()
            };
            client::connect(&ep, agent).await
        }
        other => other,
    }
}

fn connect_listen(eps: Vec<Endpoint>, agent: String, listen: String) -> Result<(), String> {
    super::client_runtime()?.block_on(async move {
        let listener = TcpListener::bind(listen.as_str())
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        log::info!("listening on {local}; each connection becomes a session to {agent}");
        let (eps, agent) = (Rc::new(eps), Rc::new(agent));
        loop {
            let (conn, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    continue;
                }
            };
            let _ = conn.set_nodelay(true);
            let (eps, agent) = (eps.clone(), agent.clone());
            compio::runtime::spawn(async move {
                match connect_any(&eps, &agent).await {
                    Ok(session) => {
                        super::boots::remember(&eps);
                        log::info!("{peer}: session to {agent} open");
                        let counters = Counters::default();
                        let res = relay(
                            &conn,
                            Vec::new(),
                            &session.stream,
                            session.early,
                            RELAY_BUFFER,
                            &counters,
                        )
                        .await;
                        log::info!(
                            "{peer}: session closed ({} bytes out, {} in){}",
                            counters.a_to_b.get(),
                            counters.b_to_a.get(),
                            res.err().map(|e| format!(": {e}")).unwrap_or_default()
                        );
                    }
                    Err(e) => log::warn!("{peer}: cannot open a session to {agent}: {e}"),
                }
            })
            .detach();
        }
    })
}

/// One session over stdin/stdout. Standard streams cannot be driven
/// portably by a completion runtime, so two plain threads move them
/// to and from one end of a loopback TCP pair, and the runtime relays the
/// other end to the session (plain or TLS) like any other connection.
fn connect_stdio(eps: &[Endpoint], agent: &str) -> Result<(), String> {
    let (bridge, inner) = loopback_pair().map_err(|e| format!("cannot set up the stdio bridge: {e}"))?;
    let mut up = bridge.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut up);
        // EOF on stdin is carried as a half-close, as the gateway does.
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    let mut down = bridge;
    let writer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = vec![0u8; RELAY_BUFFER];
        loop {
            match down.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let runtime = super::client_runtime()?;
    let result = runtime.block_on(async {
        let session = connect_any(eps, agent).await;
        super::boots::remember(eps);
        let session = session.map_err(|e| e.to_string())?;
        let inner = compio::net::TcpStream::from_std(inner).map_err(|e| e.to_string())?;
        let counters = Counters::default();
        relay(
            &session.stream,
            session.early,
            &inner,
            Vec::new(),
            RELAY_BUFFER,
            &counters,
        )
        .await
        .map_err(|e| e.to_string())
    });
    // Everything the agent sent has been handed to the bridge; let the
    // writer thread put it on stdout before the process exits.
    let _ = writer.join();
    result
}

/// A connected pair of loopback TCP sockets, checked to be each other's
/// peer (no other local process can slip in between).
fn loopback_pair() -> std::io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = std::net::TcpStream::connect(listener.local_addr()?)?;
    loop {
        let (b, peer) = listener.accept()?;
        if peer == a.local_addr()? {
            a.set_nodelay(true)?;
            b.set_nodelay(true)?;
            return Ok((a, b));
        }
    }
}
