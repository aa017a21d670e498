//! `ringway control`: list agents, and open sessions to them from local
//! TCP connections or from stdin/stdout (ssh's ProxyCommand).

use std::io::{Read, Write};
use std::rc::Rc;

use clap::{Args, Subcommand};
use compio::net::TcpListener;

use super::ClientArgs;
use crate::client::{self, Endpoint, sysinfo};
use crate::eventlog::sanitize;
use crate::relay::{Counters, relay};

/// Relay buffer per direction on the control's side.
const RELAY_BUFFER: usize = 64 * 1024;

/// `ringway control` subcommands.
#[derive(Subcommand, Debug)]
pub enum ControlCommand {
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
    fn endpoint(self) -> Result<Endpoint, String> {
        let identity = self.name.unwrap_or_else(sysinfo::hostname);
        if !crate::proto::valid_name(&identity) {
            return Err(format!("invalid control name {identity:?}"));
        }
        self.client.endpoint(&identity)
    }
}

/// Runs a control subcommand.
pub fn run(cmd: ControlCommand) -> Result<(), String> {
    match cmd {
        ControlCommand::Ls { common, json } => {
            let ep = common.endpoint()?;
            let agents = super::client_runtime()?
                .block_on(client::list_agents(&ep))
                .map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents).map_err(|e| e.to_string())?);
            } else {
                // Agents choose their names and details, and the gateway
                // the rest: control characters become `?` in every field,
                // so none can add rows or drive the terminal.
                println!(
                    "{:<24} {:<22} {:<21} {:<17} {:<15} OS",
                    "NAME", "EXTERNAL", "CONNECTED SINCE", "MAC", "LOCAL IP"
                );
                for a in agents {
                    println!(
                        "{:<24} {:<22} {:<21} {:<17} {:<15} {}",
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
            let ep = common.endpoint()?;
            if stdio {
                return connect_stdio(&ep, &agent);
            }
            let listen = listen.ok_or("give --listen ADDR or --stdio")?;
            connect_listen(ep, agent, listen)
        }
    }
}

fn connect_listen(ep: Endpoint, agent: String, listen: String) -> Result<(), String> {
    super::client_runtime()?.block_on(async move {
        let listener = TcpListener::bind(listen.as_str())
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        log::info!("listening on {local}; each connection becomes a session to {agent}");
        let (ep, agent) = (Rc::new(ep), Rc::new(agent));
        loop {
            let (conn, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    continue;
                }
            };
            let _ = conn.set_nodelay(true);
            let (ep, agent) = (ep.clone(), agent.clone());
            compio::runtime::spawn(async move {
                match client::connect(&ep, &agent).await {
                    Ok(session) => {
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
fn connect_stdio(ep: &Endpoint, agent: &str) -> Result<(), String> {
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
        let session = client::connect(ep, agent).await.map_err(|e| e.to_string())?;
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
