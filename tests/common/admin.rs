//! The gateway's admin listener over plain HTTP: pages, the JSON API,
//! /metrics, and /metrics as a barrier through every worker; requests as
//! raw bytes (hostile heads) and through curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use serde_json::Value;

use super::{
    COMMAND_TIMEOUT, EVENT_TIMEOUT, Exposition, Gateway, IO_TIMEOUT, parse_exposition, poll_until, run_bounded,
};

/// An HTTP answer from the admin listener.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, which Content-Length was checked against.
    pub body: String,
}

impl Reply {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection; the listener closes after answering.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    http_exchange(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` (a whole request, as bytes on the wire) on a fresh
/// connection and reads the answer to the listener's close.
pub fn http_exchange(addr: SocketAddr, request: &str) -> Reply {
    parse_reply(&raw_exchange(addr, request))
}

/// As [`http_exchange`], the answer as text, unparsed (a `HEAD` answer's
/// Content-Length is not its body's).
pub fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to the admin listener {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(request.as_bytes()).expect("send the admin request");
    read_text(&mut s)
}

/// Reads an answer to the listener's close and parses it; checks that
/// Content-Length matches the body.
pub fn read_reply(s: &mut TcpStream) -> Reply {
    parse_reply(&read_text(s))
}

fn read_text(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the admin answer");
    String::from_utf8(raw).expect("admin answers are UTF-8")
}

/// `curl -i` against the admin listener with `args`: a real client's
/// view of the answer. `-q` keeps any .curlrc out; `--noproxy` keeps a CI
/// proxy setting from routing loopback traffic.
pub fn curl_reply(args: &[&str], url: &str) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "-i", "--noproxy", "*", "--max-time", "20"])
        .args(args)
        .arg(url);
    let done = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    assert!(done.success(), "curl {url} failed ({:?}): {}", done.code, done.stderr);
    parse_reply(&done.stdout)
}

/// Status line, headers and body of an HTTP/1.1 answer, whose
/// Content-Length must match the body.
fn parse_reply(text: &str) -> Reply {
    let reply = parse_head(text);
    let length = reply.header("content-length").and_then(|v| v.parse::<usize>().ok());
    assert_eq!(length, Some(reply.body.len()), "Content-Length of {text:?}");
    reply
}

/// Status line, headers and whatever follows the head of an HTTP/1.1
/// answer.
pub fn parse_head(text: &str) -> Reply {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header {l:?}"));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

impl Gateway {
    /// `GET path` on the admin listener.
    pub fn get(&self, path: &str) -> Reply {
        http_request(self.admin(), "GET", path)
    }

    /// `GET path` on the admin listener, as JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let reply = self.get(path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"), "{path}");
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {}", reply.body))
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Exposition {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "/metrics: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4"));
        parse_exposition(&reply.body).unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", reply.body))
    }

    /// The sum over all series of the counter `name` in /metrics (0 when
    /// no series exists yet).
    pub fn metric(&self, name: &str) -> u64 {
        let sum = self.metrics().sum(name, &[]);
        assert!(sum >= 0.0 && sum.fract() == 0.0, "{name} sums to {sum}, not a count");
        // Invariant: a whole, non-negative number (checked just above).
        sum as u64
    }

    /// Waits until the counter `name` reads `want`: the gateway bumps its
    /// handshake counters just after the peer has seen the outcome, and
    /// has no event for it.
    pub fn wait_metric(&self, name: &str, want: u64) {
        let seen = poll_until(EVENT_TIMEOUT, || {
            let v = self.metric(name);
            (v == want).then_some(v)
        });
        assert_eq!(seen, Some(want), "{name} never read {want} (now {})", self.metric(name));
    }

    /// Returns once every worker has handled what was queued to it before
    /// the call: /metrics is a snapshot taken through each worker's message
    /// queue, in order, and lists a series for each worker that answered.
    pub fn sync_workers(&self) {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "/metrics answered {:?}", reply.body);
        let answered = reply
            .body
            .lines()
            .filter(|l| l.starts_with("ringway_tls_handshakes_total{worker="))
            .count();
        assert_eq!(answered, self.workers(), "workers that answered the snapshot");
    }
}
