//! The admin listener: the console, a JSON API and Prometheus metrics, on
//! std threads of its own so that nothing it does can stall an event loop.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the HTML console |
//! | `GET /console.css` | its stylesheet (no token needed: it holds no data) |
//! | `GET /api/clients` | JSON array of agents |
//! | `GET /api/gateway` | JSON object: role, standby, agents connected |
//! | `GET /api/sessions` | JSON array of relay sessions |
//! | `GET /signins` | the sign-in history page (the latest 200) |
//! | `GET /api/signins` | the same as a JSON array, newest first |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/reload` | re-reads the config file and applies it |
//!
//! `HEAD` is answered as `GET` without the body.
//!
//! Layout: [`listener`] accepts connections and serves each on a thread
//! of its own within the bounds of [`slots`]; [`routes`] turns a parsed
//! head into an answer after the checks of [`guard`] (Host, Origin,
//! token); [`render`] formats what workers reported. All but the
//! listener are pure.
//!
//! Who is answered: a `Host` naming this listener (its address,
//! `localhost`, `127.0.0.1`, `[::1]`, with its port) or a name in
//! `[admin] hosts`, else `403` (DNS rebinding); a state-changing request
//! only from the console's own origin, else `403` (CSRF); with a token
//! configured, every request but the stylesheet needs `Authorization:
//! Bearer <token>` (or `?token=<token>` for a browser), else `401`.

pub mod cluster;
pub mod guard;
pub mod listener;
pub mod render;
pub mod routes;
pub mod slots;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub use listener::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE, spawn};

use crate::gateway::Snapshot;
use crate::http::{self, ResponseHead};

/// What the admin listener needs from the running gateway.
pub trait AdminOps: Send + Sync {
    /// Every worker's agents, sessions and counters, and how many workers
    /// were asked (some may not answer in time).
    fn snapshot(&self) -> Snapshot;
    /// Gateway-wide figures that no single worker holds.
    fn totals(&self) -> render::Totals;
    /// Re-reads and applies the configuration: a summary, or why it was refused.
    fn reload(&self) -> Result<String, String>;
    /// Releases the pin of agent `name` under the gateway key named `key`
    /// (every key if `None`): a summary, or why not.
    fn forget(&self, name: &str, key: Option<&str>) -> Result<String, String>;
    /// The latest operator sign-ins, newest first.
    fn signins(&self) -> Vec<crate::gateway::SignInEntry> {
        Vec::new()
    }
    /// The cluster as this gateway sees it, if it is in one.
    fn cluster(&self) -> Option<crate::gateway::ClusterStatus> {
        None
    }
    /// Starts (`on`) or stops draining this cluster gateway: what it did,
    /// or why not.
    fn drain(&self, _on: bool) -> Result<String, String> {
        Err("this gateway is not in a cluster".into())
    }
}

/// How long the `status` and `reload` commands wait for an answer: a
/// reload applies a whole configuration and waits for every worker.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest answer body the `status` and `reload` commands read. A status
/// of the largest fleet a gateway holds (tens of thousands of agents at a
/// few hundred bytes each) is well under it; an answer past it is not
/// ours, and reading it all would hold as much memory as the peer chose.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A blocking admin request from the `status` and `reload` commands:
/// the response head and the body. The head is read as the gateway reads
/// one (at most [`http::MAX_HEAD_BYTES`]), the body up to
/// [`MAX_ANSWER_BYTES`].
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>) -> Result<(ResponseHead, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, len) = loop {
        match http::parse_response(&raw) {
            Ok(parsed) => break parsed,
            Err(http::HeadError::Incomplete) => {}
            Err(e) => return Err(format!("bad answer from {addr}: {}", e.response_reason())),
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "bad answer from {addr}: {}",
                http::HeadError::Incomplete.response_reason()
            ));
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let mut body = raw.split_off(len);
    let limit = (MAX_ANSWER_BYTES + 1).saturating_sub(body.len()) as u64;
    (&mut s).take(limit).read_to_end(&mut body).map_err(|e| e.to_string())?;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(format!("bad answer from {addr}: over {MAX_ANSWER_BYTES} bytes"));
    }
    Ok((head, String::from_utf8_lossy(&body).into_owned()))
}
