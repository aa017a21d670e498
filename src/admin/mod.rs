//! The admin listener: the console, a JSON API and Prometheus metrics, on
//! its own thread so that nothing it does can stall an event loop.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the HTML console |
//! | `GET /api/clients` | JSON array of agents |
//! | `GET /api/sessions` | JSON array of relay sessions |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/reload` | re-reads the config file and applies it |
//!
//! With a token configured every request needs `Authorization: Bearer
//! <token>` (or `?token=<token>` for a browser). Admin traffic is a few
//! requests a second at most, so one blocking thread serves it in turn.

pub mod render;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::constant_time_eq;
use crate::gateway::Snapshot;
use crate::http::{self, HeadError};

/// How long one admin client may take to send its request or read the
/// answer: requests are served one at a time, so a slow one must not hold
/// the others for long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin listener needs from the running gateway.
pub trait AdminOps: Send + Sync {
    /// Every worker's agents, sessions and counters, and how many workers
    /// were asked (some may not answer in time).
    fn snapshot(&self) -> Snapshot;
    /// Gateway-wide figures that no single worker holds.
    fn totals(&self) -> render::Totals;
    /// The licensed maximum; 0 = unlimited.
    fn max_clients(&self) -> usize;
    /// Re-reads and applies the configuration: a summary, or why it was refused.
    fn reload(&self) -> Result<String, String>;
}

/// Starts serving `listener` on a thread of its own.
pub fn spawn(listener: TcpListener, token: Option<String>, ops: Arc<dyn AdminOps>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = serve_one(stream, token.as_deref(), ops.as_ref()) {
                            log::debug!("admin request failed: {e}");
                        }
                    }
                    Err(e) => {
                        log::warn!("admin accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(())
}

fn serve_one(mut stream: TcpStream, token: Option<&str>, ops: &dyn AdminOps) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; http::MAX_HEAD_BYTES];
    let mut len = 0;
    let head = loop {
        match http::parse_request(&buf[..len]) {
            Ok((head, _)) => break head,
            Err(HeadError::Incomplete) if len < buf.len() => {}
            Err(e) => return stream.write_all(&http::error_response(e.status(), e.reason())),
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return stream.write_all(&http::error_response(408, "request head not received in time"));
            }
            Err(e) => return Err(e),
        }
    };

    if let Some(token) = token {
        let bearer = head.header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        let query = head
            .target
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        let given = bearer.or(query).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return stream.write_all(&http::response(
                401,
                &[("WWW-Authenticate", "Bearer")],
                "text/plain; charset=utf-8",
                b"admin token required\n",
            ));
        }
    }

    let answer = match (head.method.as_str(), head.path()) {
        ("GET", "/") => {
            let snaps = ops.snapshot().workers;
            let html = render::console(&render::agents(&snaps), &render::sessions(&snaps), ops.max_clients());
            http::response(200, &[], "text/html; charset=utf-8", html.as_bytes())
        }
        ("GET", "/api/clients") => json(&render::agents(&ops.snapshot().workers)),
        ("GET", "/api/sessions") => json(&render::sessions(&ops.snapshot().workers)),
        ("GET", "/metrics") => {
            let text = render::metrics(&ops.snapshot().workers, &ops.totals());
            http::response(200, &[], "text/plain; version=0.0.4", text.as_bytes())
        }
        ("POST", "/api/reload") => match ops.reload() {
            Ok(summary) => http::response(200, &[], "text/plain; charset=utf-8", format!("{summary}\n").as_bytes()),
            Err(why) => http::error_response(400, &why),
        },
        (_, "/" | "/api/clients" | "/api/sessions" | "/metrics" | "/api/reload") => {
            http::error_response(405, "method not allowed here")
        }
        _ => http::error_response(404, "no such endpoint"),
    };
    stream.write_all(&answer)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    match serde_json::to_vec(value) {
        Ok(body) => http::response(200, &[], "application/json", &body),
        Err(e) => http::error_response(500, &format!("cannot encode: {e}")),
    }
}

/// A blocking admin request from the `status` and `reload` commands:
/// the status code and body.
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let (head, len) = http::parse_response(&raw).map_err(|e| format!("bad answer from {addr}: {}", e.reason()))?;
    Ok((head.status, String::from_utf8_lossy(&raw[len..]).into_owned()))
}
