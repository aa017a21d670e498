//! From a parsed request head to the bytes of its answer: the checks in
//! [`guard`] first, then the endpoint. No socket I/O; the gateway is
//! reached only through [`AdminOps`].

use std::net::SocketAddr;

use super::AdminOps;
use super::guard::{self, Refusal};
use super::render;
use crate::gateway::Snapshot;
use crate::http::{self, RequestHead};

/// Sent with every answer. The policy allows the console's own
/// stylesheet and nothing else (no script, no inline style, no frames,
/// no forms), so even a string that escaped escaping could not run;
/// `no-referrer` keeps a `?token=` in the address bar from leaking; and
/// `no-store` keeps agent names and addresses out of caches.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
];

/// The header on every answer built from worker snapshots: `N of M`
/// workers answered in time. Fewer than all means the lists are short.
pub const WORKERS_ANSWERED: &str = "Ringway-Workers-Answered";

/// What the checks need besides the head.
pub struct Context<'a> {
    /// The admin token, if one is configured.
    pub token: Option<&'a str>,
    /// `[admin] hosts`: names served besides the listener's own.
    pub hosts: &'a [String],
    /// The address this connection reached (the listener may be on a
    /// wildcard address; this is the concrete one).
    pub local: SocketAddr,
}

/// `GET /api/gateway`: what `ringway status` shows above its tables.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GatewayInfo<'a> {
    /// `[gateway] role`: `primary` or `secondary`.
    #[serde(borrow)]
    pub role: &'a str,
    /// A secondary with no agents.
    pub standby: bool,
    /// Agents connected now.
    pub agents_connected: usize,
}

/// An answer before it becomes bytes.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// `N of M`, for answers built from a snapshot.
    answered: Option<String>,
    /// Sent on a 401 only.
    challenge: bool,
}

impl Answer {
    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            content_type,
            body: body.into(),
            answered: None,
            challenge: false,
        }
    }

    fn error(status: u16, reason: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{reason}\n").into_bytes(),
            answered: None,
            challenge: false,
        }
    }

    fn from_snapshot(snapshot: &Snapshot, content_type: &'static str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            answered: Some(render::answered(snapshot)),
            ..Answer::ok(content_type, body)
        }
    }

    /// The bytes: status line, headers, and the body unless `head_only`
    /// (a `HEAD` request gets the headers a `GET` would).
    fn into_bytes(self, head_only: bool) -> Vec<u8> {
        let mut headers: Vec<(&str, &str)> = SECURITY_HEADERS.to_vec();
        if let Some(answered) = &self.answered {
            headers.push((WORKERS_ANSWERED, answered));
        }
        if self.challenge {
            headers.push(("WWW-Authenticate", "Bearer"));
        }
        let mut bytes = http::response(self.status, &headers, self.content_type, &self.body);
        if head_only {
            bytes.truncate(bytes.len() - self.body.len());
        }
        bytes
    }
}

impl From<Refusal> for Answer {
    fn from(r: Refusal) -> Answer {
        Answer::error(r.status(), r.reason())
    }
}

/// A complete error answer with the security headers, for refusals made
/// before a head is parsed (busy, timeout, malformed).
pub fn error(status: u16, reason: &str) -> Vec<u8> {
    Answer::error(status, reason).into_bytes(false)
}

/// The answer to `head`, as bytes to write.
pub fn answer(head: &RequestHead, cx: &Context<'_>, ops: &dyn AdminOps) -> Vec<u8> {
    let head_only = head.method == "HEAD";
    route(head, cx, ops).into_bytes(head_only)
}

fn route(head: &RequestHead, cx: &Context<'_>, ops: &dyn AdminOps) -> Answer {
    // Host first: a page that rebound its name to this address learns
    // nothing, not even whether a token is needed.
    let host = match guard::check_host(head, cx.local, cx.hosts) {
        Ok(host) => host,
        Err(refusal) => return refusal.into(),
    };
    let safe = matches!(head.method.as_str(), "GET" | "HEAD");
    if !safe && let Err(refusal) = guard::check_origin(head, host) {
        return refusal.into();
    }
    let path = head.path();
    // The stylesheet is the same for everyone and holds no data; a
    // browser fetching it does not carry the page's `?token=`.
    if safe && path == "/console.css" {
        return Answer::ok("text/css; charset=utf-8", render::CONSOLE_CSS);
    }
    if let Some(token) = cx.token
        && !guard::given_token(head).is_some_and(|given| guard::token_matches(given, token))
    {
        return Answer {
            challenge: true,
            ..Answer::error(401, "admin token required")
        };
    }
    match (safe, head.method.as_str(), path) {
        (true, _, "/") => {
            let snapshot = ops.snapshot();
            let mut html = render::console(&snapshot, &ops.totals(), head.target.split_once('?').map(|(_, q)| q));
            if let Some(status) = ops.cluster() {
                let section = super::cluster::console_section(&status);
                if let Some(at) = html.rfind("</body>") {
                    html.insert_str(at, &section);
                }
            }
            Answer::from_snapshot(&snapshot, "text/html; charset=utf-8", html)
        }
        (true, _, "/api/clients") => {
            let snapshot = ops.snapshot();
            json(&snapshot, &render::agents(&snapshot.workers))
        }
        (true, _, "/api/gateway") => {
            let totals = ops.totals();
            let info = GatewayInfo {
                role: totals.role.as_str(),
                standby: totals.standby(),
                agents_connected: totals.agents_connected,
            };
            match serde_json::to_vec(&info) {
                Ok(body) => Answer::ok("application/json", body),
                Err(e) => Answer::error(500, &format!("cannot encode: {e}")),
            }
        }
        (true, _, "/api/cluster") => match ops.cluster() {
            None => Answer::error(404, "this gateway is not in a cluster ([cluster] is not configured)"),
            Some(status) => match serde_json::to_vec(&status) {
                Ok(body) => Answer::ok("application/json", body),
                Err(e) => Answer::error(500, &format!("cannot encode: {e}")),
            },
        },
        (true, _, "/api/signins") => match serde_json::to_vec(&ops.signins()) {
            Ok(body) => Answer::ok("application/json", body),
            Err(e) => Answer::error(500, &format!("cannot encode: {e}")),
        },
        (true, _, "/signins") => Answer::ok(
            "text/html; charset=utf-8",
            render::signins_page(&ops.signins(), head.target.split_once('?').map(|(_, q)| q)),
        ),
        (true, _, "/api/sessions") => {
            let snapshot = ops.snapshot();
            json(&snapshot, &render::sessions(&snapshot.workers))
        }
        (true, _, "/metrics") => {
            let snapshot = ops.snapshot();
            let mut text = render::metrics(&snapshot, &ops.totals());
            if let Some(status) = ops.cluster() {
                text.push_str(&super::cluster::metrics(&status));
            }
            Answer::from_snapshot(&snapshot, "text/plain; version=0.0.4", text)
        }
        (false, "POST", "/api/reload") => match ops.reload() {
            Ok(summary) => Answer::ok("text/plain; charset=utf-8", format!("{summary}\n")),
            Err(why) => Answer::error(400, &why),
        },
        (false, "POST", DRAIN_PATH) => {
            let on = match head.target.split_once('?').map(|(_, q)| q) {
                None | Some("") => true,
                Some("stop") => false,
                Some(_) => return Answer::error(400, "POST /api/drain starts a drain, POST /api/drain?stop ends it"),
            };
            match ops.drain(on) {
                Ok(summary) => Answer::ok("text/plain; charset=utf-8", format!("{summary}\n")),
                Err(why) => Answer::error(409, &why),
            }
        }
        (false, "POST", FORGET_PATH) => match forget_params(&head.target) {
            Ok((name, key)) => match ops.forget(&name, key.as_deref()) {
                Ok(summary) => Answer::ok("text/plain; charset=utf-8", format!("{summary}\n")),
                Err(why) => Answer::error(404, &why),
            },
            Err(why) => Answer::error(400, why),
        },
        (
            _,
            _,
            "/" | "/api/clients" | "/api/gateway" | "/api/cluster" | "/api/sessions" | "/api/signins" | "/signins"
            | "/metrics" | "/api/reload" | FORGET_PATH | DRAIN_PATH | "/console.css",
        ) => Answer::error(405, "method not allowed here"),
        _ => Answer::error(404, "no such endpoint"),
    }
}

/// Starts a cluster gateway's drain (`POST /api/drain`) or ends it
/// (`POST /api/drain?stop`); `ringway drain` posts here.
pub const DRAIN_PATH: &str = "/api/drain";

/// Releases an agent name pin: `POST /api/agents/forget?name=NAME[&key=KEY]`,
/// both percent-encoded; the same Host, Origin and token checks as every
/// other admin request.
pub const FORGET_PATH: &str = "/api/agents/forget";

/// The `name` and optional `key` of a forget request. Each at most once
/// (which one counts must not depend on who reads the query); other
/// parameters (`token`) are left to their readers.
fn forget_params(target: &str) -> Result<(String, Option<String>), &'static str> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let (mut name, mut key) = (None, None);
    for kv in query.split('&') {
        let (slot, value, what) = match kv.split_once('=') {
            Some(("name", v)) => (&mut name, v, "name"),
            Some(("key", v)) => (&mut key, v, "key"),
            _ => continue,
        };
        if slot.is_some() {
            return Err(if what == "name" {
                "name given twice"
            } else {
                "key given twice"
            });
        }
        *slot = Some(http::pct_decode(value).ok_or("name and key must be percent-encoded UTF-8")?);
    }
    let name = name
        .filter(|n| crate::proto::valid_name(n))
        .ok_or("give the agent's name: ?name=NAME (1 to 64 characters)")?;
    if key.as_deref().is_some_and(str::is_empty) {
        return Err("key must not be empty");
    }
    Ok((name, key))
}

fn json<T: serde::Serialize>(snapshot: &Snapshot, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => Answer::from_snapshot(snapshot, "application/json", body),
        Err(e) => Answer::error(500, &format!("cannot encode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::WorkerSnapshot;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A gateway of two workers of which only worker 1 answers, with one
    /// agent; it counts reloads.
    #[derive(Default)]
    struct HalfAnswered {
        reloads: AtomicUsize,
    }

    impl AdminOps for HalfAnswered {
        fn snapshot(&self) -> Snapshot {
            let agent = render::tests::agent("pc1");
            Snapshot {
                workers: vec![WorkerSnapshot {
                    worker: 1,
                    agents: vec![agent],
                    ..Default::default()
                }],
                asked: 2,
            }
        }
        fn totals(&self) -> render::Totals {
            render::Totals::default()
        }
        fn reload(&self) -> Result<String, String> {
            self.reloads.fetch_add(1, Ordering::Relaxed);
            Ok("configuration reloaded".into())
        }

        fn forget(&self, name: &str, key: Option<&str>) -> Result<String, String> {
            self.reloads.fetch_add(1, Ordering::Relaxed);
            match name {
                "pc1" => Ok(format!("released pc1 {key:?}")),
                _ => Err(format!("no pin for client {name}")),
            }
        }
    }

    const LOCAL: &str = "127.0.0.1:9090";

    fn ask(ops: &HalfAnswered, token: Option<&str>, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let mut all = vec![("host".to_string(), LOCAL.to_string())];
        all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let head = RequestHead {
            method: method.into(),
            target: target.into(),
            headers: all,
        };
        let cx = Context {
            token,
            hosts: &[],
            local: LOCAL.parse().expect("a socket address"),
        };
        String::from_utf8(answer(&head, &cx, ops)).expect("answers are UTF-8")
    }

    const SECURITY: &str = "Content-Security-Policy: default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-store\r\n";

    #[test]
    fn an_answer_from_a_partial_snapshot_says_so() {
        let ops = HalfAnswered::default();
        let clients = ask(&ops, None, "GET", "/api/clients", &[]);
        assert!(
            clients.starts_with(&format!(
                "HTTP/1.1 200 OK\r\n{SECURITY}Ringway-Workers-Answered: 1 of 2\r\n"
            )),
            "{clients}"
        );
        assert!(clients.ends_with("\r\n\r\n[{\"name\":\"pc1\",\"local_ip\":\"10.0.0.7\",\"mac\":\"02:00:00:00:00:01\",\"external_addr\":\"127.0.0.1:5000\",\"key\":\"k\",\"worker\":1,\"connected_since\":\"2026-11-22T03:00:00Z\",\"last_poll\":\"2026-11-22T03:01:00Z\",\"os\":\"linux\",\"sessions\":0}]"), "{clients}");
        for path in ["/", "/api/sessions", "/metrics"] {
            let text = ask(&ops, None, "GET", path, &[]);
            assert!(
                text.contains("\r\nRingway-Workers-Answered: 1 of 2\r\n"),
                "{path}: {text}"
            );
        }
    }

    #[test]
    fn head_gets_the_headers_of_get_without_the_body() {
        let ops = HalfAnswered::default();
        let get = ask(&ops, None, "GET", "/metrics", &[]);
        let head = ask(&ops, None, "HEAD", "/metrics", &[]);
        let (get_head, body) = get.split_once("\r\n\r\n").expect("a head");
        assert!(!body.is_empty());
        assert_eq!(head, format!("{get_head}\r\n\r\n"));
    }

    #[test]
    fn forget_takes_a_percent_encoded_name_and_key_once_each() {
        let ops = HalfAnswered::default();
        let ok = ask(&ops, None, "POST", "/api/agents/forget?name=pc1&key=ac%20me", &[]);
        assert!(ok.ends_with("\r\n\r\nreleased pc1 Some(\"ac me\")\n"), "{ok}");
        let missing = ask(&ops, None, "POST", "/api/agents/forget?name=pc9", &[]);
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        assert!(missing.ends_with("\r\n\r\nno pin for client pc9\n"), "{missing}");
        for (target, why) in [
            (
                "/api/agents/forget",
                "give the agent's name: ?name=NAME (1 to 64 characters)",
            ),
            ("/api/agents/forget?name=pc1&name=pc2", "name given twice"),
            ("/api/agents/forget?name=pc1&key=a&key=b", "key given twice"),
            (
                "/api/agents/forget?name=%ff",
                "name and key must be percent-encoded UTF-8",
            ),
            ("/api/agents/forget?name=pc1&key=", "key must not be empty"),
        ] {
            let refused = ask(&ops, None, "POST", target, &[]);
            assert!(refused.starts_with("HTTP/1.1 400 "), "{target}: {refused}");
            assert!(refused.ends_with(&format!("\r\n\r\n{why}\n")), "{target}: {refused}");
        }
        let cross = ask(
            &ops,
            None,
            "POST",
            "/api/agents/forget?name=pc1",
            &[("origin", "http://evil.example")],
        );
        assert!(cross.starts_with("HTTP/1.1 403 "), "{cross}");
        assert!(ask(&ops, None, "GET", "/api/agents/forget?name=pc1", &[]).starts_with("HTTP/1.1 405 "));
        // Only the two that reached it: the found and the missing name.
        assert_eq!(ops.reloads.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_cross_origin_post_is_refused_before_the_reload_runs() {
        let ops = HalfAnswered::default();
        let refused = ask(&ops, None, "POST", "/api/reload", &[("origin", "http://evil.example")]);
        let body = "cross-origin request refused: Origin is not this console's own\n";
        assert_eq!(
            refused,
            format!(
                "HTTP/1.1 403 Forbidden\r\n{SECURITY}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        );
        assert_eq!(ops.reloads.load(Ordering::Relaxed), 0);
        let done = ask(
            &ops,
            None,
            "POST",
            "/api/reload",
            &[("origin", "http://127.0.0.1:9090")],
        );
        assert!(
            done.starts_with("HTTP/1.1 200 OK\r\n") && done.ends_with("\r\n\r\nconfiguration reloaded\n"),
            "{done}"
        );
        assert_eq!(ops.reloads.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_token_guards_everything_but_the_stylesheet() {
        let ops = HalfAnswered::default();
        let token = Some("s3cret-admin-token");
        for (target, headers) in [
            ("/api/clients", vec![]),
            ("/api/clients?token=wrong", vec![]),
            ("/", vec![("authorization", "Bearer wrong")]),
        ] {
            let text = ask(&ops, token, "GET", target, &headers);
            assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{target}: {text}");
            assert!(
                text.contains("\r\nWWW-Authenticate: Bearer\r\n") && text.ends_with("\r\n\r\nadmin token required\n"),
                "{text}"
            );
        }
        let bearer = ask(
            &ops,
            token,
            "GET",
            "/api/clients",
            &[("authorization", "Bearer s3cret-admin-token")],
        );
        assert!(bearer.starts_with("HTTP/1.1 200 OK\r\n"), "{bearer}");
        let query = ask(&ops, token, "GET", "/?token=s3cret-admin-token", &[]);
        assert!(query.starts_with("HTTP/1.1 200 OK\r\n"), "{query}");
        let css = ask(&ops, token, "GET", "/console.css", &[]);
        assert!(
            css.starts_with("HTTP/1.1 200 OK\r\n") && css.contains("\r\nContent-Type: text/css; charset=utf-8\r\n"),
            "{css}"
        );
        assert!(css.ends_with(render::CONSOLE_CSS));
    }

    #[test]
    fn methods_and_paths_outside_the_table_are_refused() {
        let ops = HalfAnswered::default();
        assert!(ask(&ops, None, "GET", "/api/reload", &[]).starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(ask(&ops, None, "DELETE", "/metrics", &[]).starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(ask(&ops, None, "GET", "/etc/passwd", &[]).starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert_eq!(ops.reloads.load(Ordering::Relaxed), 0);
    }
}
