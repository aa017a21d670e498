//! The approval hook (`[auth] approve_command` or `approve_url`): an
//! outside yes or no asked before each connect, the seed product's push
//! second factor. It runs off the workers' event loops, one thread per
//! question, within a deadline, and within bounds: [`MAX_WAITING`] at once
//! for the gateway and [`MAX_WAITING_PER_TENANT`] per operator (or control
//! name, without operators), so one tenant cannot keep every other's
//! approvals waiting.
//!
//! A command is split on whitespace and run without a shell; it gets the
//! question in its environment (`RINGWAY_OPERATOR`, `RINGWAY_CONTROL`,
//! `RINGWAY_AGENT`, `RINGWAY_SOURCE`, `RINGWAY_KEY`), never on its command
//! line, and exit status 0 is yes. A URL gets a `POST` with the same five
//! as a JSON object, and a `2xx` status is yes. Anything else, or no answer
//! within the deadline, is no.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::config::Approve;

/// Questions waiting for an answer at once, gateway-wide: each holds a
/// thread (and, for a command, a process).
pub const MAX_WAITING: usize = 64;
/// Questions one tenant (operator) may have waiting at once: a person
/// answers one push at a time; four leave room for a few sessions opened
/// together (scp and ssh, say).
pub const MAX_WAITING_PER_TENANT: usize = 4;
/// Stack of a question's thread: it runs a process or one HTTP exchange.
const THREAD_STACK: usize = 128 * 1024;
/// Longest answer head read from an approval URL.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// One question: who wants to reach what.
#[derive(Debug, Clone)]
pub struct Question {
    /// The operator, or empty without operators.
    pub operator: String,
    /// The control's name.
    pub control: String,
    /// The agent it wants to reach.
    pub agent: String,
    /// The control's address.
    pub source: IpAddr,
    /// The gateway key's name.
    pub key: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Approved.
    Yes,
    /// Not approved; why, for the event log.
    No(String),
}

/// Why a question was not asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// [`MAX_WAITING`] questions are waiting.
    Gateway,
    /// The tenant has [`MAX_WAITING_PER_TENANT`] waiting.
    Tenant,
}

/// Asks approval hooks, within the bounds; shared by every worker.
#[derive(Debug, Default)]
pub struct Approver {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    total: usize,
    by_tenant: HashMap<String, usize>,
}

/// Gives a question's place back when its thread ends.
struct Place {
    approver: Arc<Approver>,
    tenant: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut w = self.approver.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.total -= 1;
        if let Some(n) = w.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                w.by_tenant.remove(&self.tenant);
            }
        }
    }
}

impl Approver {
    /// Asks `how` about `question` on a thread of its own; the answer
    /// comes on the receiver within `timeout` (a question not answered in
    /// time is answered no).
    pub fn ask(
        self: &Arc<Self>,
        how: &Approve,
        timeout: Duration,
        question: Question,
    ) -> Result<oneshot::Receiver<Verdict>, Busy> {
        let tenant = if question.operator.is_empty() {
            question.control.clone()
        } else {
            question.operator.clone()
        };
        {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if w.total >= MAX_WAITING {
                return Err(Busy::Gateway);
            }
            let mine = w.by_tenant.get(&tenant).copied().unwrap_or(0);
            if mine >= MAX_WAITING_PER_TENANT {
                return Err(Busy::Tenant);
            }
            w.total += 1;
            w.by_tenant.insert(tenant.clone(), mine + 1);
        }
        let place = Place {
            approver: self.clone(),
            tenant,
        };
        let (tx, rx) = oneshot::channel();
        let how = how.clone();
        let deadline = Instant::now() + timeout;
        let spawned = std::thread::Builder::new()
            .name("ringway-approve".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let verdict = match &how {
                    Approve::Command(cmd) => run_command(cmd, &question, deadline),
                    Approve::Url(url) => post_url(url, &question, deadline),
                };
                // The place goes back before the answer is seen, so a
                // tenant that was answered may ask again at once.
                drop(place);
                let _ = tx.send(verdict);
            });
        match spawned {
            Ok(_) => Ok(rx),
            // The place went back with the closure.
            Err(_) => Err(Busy::Gateway),
        }
    }
}

/// Runs the command, with the question in its environment, and waits for
/// its exit until `deadline`, then kills it.
fn run_command(cmd: &str, q: &Question, deadline: Instant) -> Verdict {
    let mut words = cmd.split_whitespace();
    let Some(program) = words.next() else {
        return Verdict::No("approve_command is empty".into());
    };
    let child = Command::new(program)
        .args(words)
        .env("RINGWAY_OPERATOR", &q.operator)
        .env("RINGWAY_CONTROL", &q.control)
        .env("RINGWAY_AGENT", &q.agent)
        .env("RINGWAY_SOURCE", q.source.to_string())
        .env("RINGWAY_KEY", &q.key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Verdict::No(format!("approve_command could not start: {e}")),
    };
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::Builder::new()
        .name("ringway-approve-wait".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let _ = done_tx.send(child.wait());
        });
    if waiter.is_err() {
        return Verdict::No("approve_command could not be waited for".into());
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match done_rx.recv_timeout(left) {
        Ok(Ok(status)) if status.success() => Verdict::Yes,
        Ok(Ok(status)) => Verdict::No(format!("approve_command said no ({status})")),
        Ok(Err(e)) => Verdict::No(format!("approve_command could not be waited for: {e}")),
        Err(_) => {
            // Not reaped yet (the waiter holds it until it exits), so the
            // pid is still this child's.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = done_rx.recv();
            Verdict::No("approve_command did not answer in time".into())
        }
    }
}

/// The parts of an approval URL.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    tls: bool,
    host: &'a str,
    port: u16,
    path: &'a str,
}

/// Splits `http[s]://host[:port][/path]`; IPv6 hosts in brackets.
fn parse_url(url: &str) -> Option<Target<'_>> {
    let (tls, rest) = match url.split_once("://")? {
        ("http", rest) => (false, rest),
        ("https", rest) => (true, rest),
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().ok()?),
            None if after.is_empty() => (h, default),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default),
        }
    };
    (!host.is_empty()).then_some(Target { tls, host, port, path })
}

/// POSTs the question as JSON; a 2xx status before `deadline` is yes.
fn post_url(url: &str, q: &Question, deadline: Instant) -> Verdict {
    match ask_url(url, q, deadline) {
        Ok(status) if (200..300).contains(&status) => Verdict::Yes,
        Ok(status) => Verdict::No(format!("approve_url answered {status}")),
        Err(e) => Verdict::No(format!("approve_url: {e}")),
    }
}

fn ask_url(url: &str, q: &Question, deadline: Instant) -> Result<u16, String> {
    let target = parse_url(url).ok_or("not an http:// or https:// URL")?;
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err("no answer in time".to_string())
        } else {
            Ok(d)
        }
    };
    let addr = (target.host, target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", target.host))?;
    let tcp = TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let body = serde_json::json!({
        "operator": q.operator,
        "control": q.control,
        "agent": q.agent,
        "source": q.source.to_string(),
        "key": q.key,
    })
    .to_string();
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.to_string()
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        target.path,
        target.port,
        body.len()
    );
    if target.tls {
        let config = crate::tls::client_config(&crate::tls::Trust::SystemRoots)?;
        let name = rustls::pki_types::ServerName::try_from(target.host.to_string())
            .map_err(|_| format!("{:?} is not a server name", target.host))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        exchange(
            rustls::StreamOwned::new(conn, tcp.try_clone().map_err(|e| e.to_string())?),
            &tcp,
            &request,
            left,
        )
    } else {
        exchange(tcp.try_clone().map_err(|e| e.to_string())?, &tcp, &request, left)
    }
}

/// Sends `request` and reads the status of the answer, each socket wait
/// bounded by what is left before the deadline.
fn exchange(
    mut stream: impl Read + Write,
    tcp: &TcpStream,
    request: &str,
    left: impl Fn() -> Result<Duration, String>,
) -> Result<u16, String> {
    tcp.set_write_timeout(Some(left()?)).map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    stream.flush().map_err(|e| format!("cannot send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tcp.set_read_timeout(Some(left()?)).map_err(|e| e.to_string())?;
        let n = stream.read(&mut buf).map_err(|e| format!("no answer: {e}"))?;
        if n == 0 {
            return Err("closed without an answer".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            return status_of(&head[..end]).ok_or_else(|| "answer is not HTTP".to_string());
        }
        if head.len() > MAX_ANSWER_HEAD {
            return Err("answer's status line is too long".into());
        }
    }
}

/// The status code of an HTTP/1.x status line.
fn status_of(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(operator: &str) -> Question {
        Question {
            operator: operator.into(),
            control: "ops".into(),
            agent: "pc-1".into(),
            source: "127.0.0.1".parse().expect("address"),
            key: "acme".into(),
        }
    }

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let t = |tls, host, port, path| Some(Target { tls, host, port, path });
        assert_eq!(parse_url("http://h/a?b"), t(false, "h", 80, "/a?b"));
        assert_eq!(parse_url("https://h:8443"), t(true, "h", 8443, "/"));
        assert_eq!(parse_url("http://[::1]:9/x"), t(false, "::1", 9, "/x"));
        assert_eq!(parse_url("https://[::1]"), t(true, "::1", 443, "/"));
        assert_eq!(parse_url("ftp://h/"), None);
        assert_eq!(parse_url("http://:80/"), None);
        assert_eq!(parse_url("http://h:99999/"), None);
        assert_eq!(parse_url("http://[::1]x/"), None);
    }

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_of(b"HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(status_of(b"HTTP/1.0 403"), Some(403));
        assert_eq!(status_of(b"HTTP/2 200 OK"), None);
        assert_eq!(status_of(b"HTTP/1.1 20 OK"), None);
        assert_eq!(status_of(b"HTTP/1.1 +20 OK"), None);
    }

    #[test]
    fn a_tenant_gets_its_share_and_gives_it_back() {
        let approver = Arc::new(Approver::default());
        // `sleep 5` outlives the deadline: each question holds its place
        // until it is killed and answered no.
        let slow = Approve::Command("sleep 5".into());
        let ask = |who: &str| approver.ask(&slow, Duration::from_millis(300), question(who));
        let mut asked: Vec<_> = (0..MAX_WAITING_PER_TENANT)
            .map(|_| ask("alice").expect("a place"))
            .collect();
        assert_eq!(ask("alice").err(), Some(Busy::Tenant));
        // Another tenant is not affected.
        asked.push(ask("bob").expect("bob's place"));
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        for rx in asked {
            let verdict = runtime.block_on(rx).expect("answered");
            assert_eq!(verdict, Verdict::No("approve_command did not answer in time".into()));
        }
        let w = approver.waiting.lock().expect("lock");
        assert_eq!((w.total, w.by_tenant.len()), (0, 0), "every place came back");
    }

    #[test]
    fn a_command_gets_the_question_in_its_environment_and_its_status_is_the_answer() {
        let approver = Arc::new(Approver::default());
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        // Split on whitespace, no shell: the script reads its environment.
        let script = std::env::temp_dir().join(format!("ringway-approve-{}.sh", std::process::id()));
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$RINGWAY_OPERATOR/$RINGWAY_CONTROL/$RINGWAY_AGENT/$RINGWAY_SOURCE/$RINGWAY_KEY\" = alice/ops/pc-1/127.0.0.1/acme ]\n",
        )
        .expect("script");
        let yes_for_pc1 = Approve::Command(format!("/bin/sh {}", script.display()));
        let asked = approver
            .ask(&yes_for_pc1, Duration::from_secs(10), question("alice"))
            .expect("a place");
        assert_eq!(runtime.block_on(asked).expect("answered"), Verdict::Yes);
        let asked = approver
            .ask(&yes_for_pc1, Duration::from_secs(10), question("bob"))
            .expect("a place");
        assert_eq!(
            runtime.block_on(asked).expect("answered"),
            Verdict::No("approve_command said no (exit status: 1)".into())
        );
        let _ = std::fs::remove_file(&script);
        let missing = Approve::Command("/nonexistent/approve".into());
        let asked = approver
            .ask(&missing, Duration::from_secs(10), question("alice"))
            .expect("a place");
        let verdict = runtime.block_on(asked).expect("answered");
        assert!(
            matches!(&verdict, Verdict::No(why) if why.starts_with("approve_command could not start: ")),
            "{verdict:?}"
        );
    }
}
