//! Turning worker snapshots into what the admin listener serves: JSON rows,
//! Prometheus text and the HTML console. Pure functions, no I/O.

use std::fmt::Write as _;

use crate::config::Role;
use crate::gateway::{AgentRow, SessionRow, Snapshot, WorkerSnapshot};

/// All agents, sorted by name, each with its count of open sessions.
pub fn agents(snaps: &[WorkerSnapshot]) -> Vec<AgentRow> {
    let mut rows: Vec<AgentRow> = snaps.iter().flat_map(|s| s.agents.iter().cloned()).collect();
    for row in &mut rows {
        row.sessions = snaps
            .iter()
            .flat_map(|s| &s.sessions)
            .filter(|s| s.agent == row.name && s.key == row.key)
            .count();
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    rows
}

/// All sessions, oldest first.
pub fn sessions(snaps: &[WorkerSnapshot]) -> Vec<SessionRow> {
    let mut rows: Vec<SessionRow> = snaps.iter().flat_map(|s| s.sessions.iter().cloned()).collect();
    rows.sort_by(|a, b| a.started.cmp(&b.started));
    rows
}

/// Gateway-wide figures that no single worker holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Licence slots in use.
    pub agents_connected: usize,
    /// The licensed maximum; 0 = unlimited.
    pub max_clients: usize,
    /// Connections open now (all kinds).
    pub connections_open: usize,
    /// The connection cap.
    pub max_connections: usize,
    /// `[gateway] role`.
    pub role: Role,
    /// Times freed heap went back to the kernel.
    pub heap_trims: u64,
    /// Microseconds those trims took.
    pub heap_trim_micros: u64,
}

impl Totals {
    /// Whether this is a secondary with no agents: the seed's "standby".
    pub fn standby(&self) -> bool {
        self.role == Role::Secondary && self.agents_connected == 0
    }
}

/// Prometheus text exposition format (version 0.0.4). Per-worker series
/// exist only for the workers that answered; `ringway_workers_answered`
/// below `ringway_workers` says some are missing.
pub fn metrics(snapshot: &Snapshot, totals: &Totals) -> String {
    let snaps = &snapshot.workers[..];
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        write_family(&mut out, name, kind, help, samples)
    };
    let per_worker = |f: &dyn Fn(&WorkerSnapshot) -> u64| -> Vec<(String, u64)> {
        snaps
            .iter()
            .map(|s| (format!("worker=\"{}\"", s.worker), f(s)))
            .collect()
    };
    family(
        "ringway_role",
        "gauge",
        "The gateway's [gateway] role: 1 for the one it has.",
        vec![(format!("role=\"{}\"", totals.role.as_str()), 1)],
    );
    family(
        "ringway_standby",
        "gauge",
        "1 while this is a secondary with no agents (standby), else 0.",
        vec![(String::new(), u64::from(totals.standby()))],
    );
    family(
        "ringway_workers",
        "gauge",
        "Worker threads running.",
        vec![(String::new(), snapshot.asked as u64)],
    );
    family(
        "ringway_workers_answered",
        "gauge",
        "Workers whose snapshot came back in time for this scrape; the per-worker series cover only these.",
        vec![(String::new(), snaps.len() as u64)],
    );
    family(
        "ringway_agents_connected",
        "gauge",
        "Agents connected now, by owning worker.",
        per_worker(&|s| s.agents.len() as u64),
    );
    family(
        "ringway_agents_licensed_in_use",
        "gauge",
        "Licence slots in use (all workers).",
        vec![(String::new(), totals.agents_connected as u64)],
    );
    // Key names are checked in the config (letters, digits, . _ -), so
    // they go into label values unescaped.
    let by_key = |keys: Vec<&str>| -> Vec<(String, u64)> {
        let mut counts = std::collections::BTreeMap::<&str, u64>::new();
        for k in keys {
            *counts.entry(k).or_default() += 1;
        }
        counts.into_iter().map(|(k, n)| (format!("key=\"{k}\""), n)).collect()
    };
    family(
        "ringway_agents_by_key",
        "gauge",
        "Agents connected now, by gateway key name (keys with none are not listed).",
        by_key(
            snaps
                .iter()
                .flat_map(|s| s.agents.iter().map(|a| a.key.as_str()))
                .collect(),
        ),
    );
    family(
        "ringway_sessions_by_key",
        "gauge",
        "Relay sessions running now, by gateway key name.",
        by_key(
            snaps
                .iter()
                .flat_map(|s| s.sessions.iter().map(|x| x.key.as_str()))
                .collect(),
        ),
    );
    family(
        "ringway_max_clients",
        "gauge",
        "Licensed maximum of agents; 0 = unlimited.",
        vec![(String::new(), totals.max_clients as u64)],
    );
    family(
        "ringway_connections_open",
        "gauge",
        "Connections open now: agents, controls, data connections, requests.",
        vec![(String::new(), totals.connections_open as u64)],
    );
    family(
        "ringway_connections_max",
        "gauge",
        "The connection cap; past it new connections get 503.",
        vec![(String::new(), totals.max_connections as u64)],
    );
    family(
        "ringway_sessions_active",
        "gauge",
        "Relay sessions running now.",
        per_worker(&|s| s.sessions.len() as u64),
    );
    family(
        "ringway_sessions_pending",
        "gauge",
        "Sessions waiting for their agent to join.",
        per_worker(&|s| s.stats.pending as u64),
    );
    family(
        "ringway_sessions_total",
        "counter",
        "Relay sessions started.",
        per_worker(&|s| s.stats.sessions_total),
    );
    let mut bytes = Vec::new();
    for s in snaps {
        bytes.push((
            format!("worker=\"{}\",direction=\"to_agent\"", s.worker),
            s.stats.bytes_to_agent,
        ));
        bytes.push((
            format!("worker=\"{}\",direction=\"to_control\"", s.worker),
            s.stats.bytes_to_control,
        ));
    }
    family("ringway_relay_bytes_total", "counter", "Bytes relayed.", bytes);
    family(
        "ringway_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        per_worker(&|s| s.stats.accepted),
    );
    family(
        "ringway_registrations_total",
        "counter",
        "Agent registrations accepted.",
        per_worker(&|s| s.stats.registrations),
    );
    family(
        "ringway_heartbeat_expired_total",
        "counter",
        "Agents dropped for missing their poll deadline.",
        per_worker(&|s| s.stats.heartbeat_expired),
    );
    family(
        "ringway_tls_handshakes_total",
        "counter",
        "TLS handshakes completed.",
        per_worker(&|s| s.stats.handshakes),
    );
    family(
        "ringway_tls_agent_channels_compact_total",
        "counter",
        "TLS agent channels handed from rustls to the gateway's own record layer after the handshake.",
        per_worker(&|s| s.stats.tls_channels_compact),
    );
    family(
        "ringway_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
        summed(snaps, "reason", |s| &s.stats.handshake_failures),
    );
    family(
        "ringway_auth_failures_total",
        "counter",
        "Key proofs refused, by reason.",
        summed(snaps, "reason", |s| &s.stats.auth_failures),
    );
    family(
        "ringway_rejected_total",
        "counter",
        "Requests answered with an error status, by status.",
        summed(snaps, "status", |s| &s.stats.rejected),
    );
    family(
        "ringway_source_refusals_total",
        "counter",
        "Connections refused for their source: too many unauthenticated, too fast, or too many sources.",
        summed(snaps, "reason", |s| &s.stats.source_refusals),
    );
    type Labelled = fn(&WorkerSnapshot) -> &std::collections::BTreeMap<String, u64>;
    let operators: [(&str, &str, &str, Labelled); 3] = [
        (
            "ringway_sign_ins_total",
            "Operator sign-ins, by outcome: ok, or why not.",
            "outcome",
            |s| &s.stats.sign_ins,
        ),
        (
            "ringway_ticket_refusals_total",
            "Browses and connects refused for their operator ticket or TOTP code, by reason.",
            "reason",
            |s| &s.stats.ticket_refusals,
        ),
        (
            "ringway_approvals_total",
            "Connects put to the approval hook, by outcome: yes, no, or busy (refused unasked).",
            "outcome",
            |s| &s.stats.approvals,
        ),
    ];
    for (name, help, label, counter) in operators {
        family(name, "counter", help, summed(snaps, label, counter));
    }
    family(
        "ringway_key_quota_refusals_total",
        "counter",
        "Agent registrations refused by max_agents_per_key.",
        per_worker(&|s| s.stats.key_quota_refusals),
    );
    family(
        "ringway_pin_refusals_total",
        "counter",
        "Agent registrations refused because the name is pinned to another machine's agent key.",
        per_worker(&|s| s.stats.pin_refusals),
    );
    family(
        "ringway_health_probes_total",
        "counter",
        "GET /v1/health probes answered (agents on a secondary checking this gateway).",
        per_worker(&|s| s.stats.health_probes),
    );
    family(
        "ringway_heap_trims_total",
        "counter",
        "Times free heap pages went back to the kernel after connections came and went.",
        vec![(String::new(), totals.heap_trims)],
    );
    family(
        "ringway_heap_trim_microseconds_total",
        "counter",
        "Microseconds those trims took (on a side thread, not a worker).",
        vec![(String::new(), totals.heap_trim_micros)],
    );
    out
}

/// One metric family in the text format: its HELP and TYPE lines, then a
/// sample per (labels, value), `labels` as written inside `{}` (empty: none).
pub(super) fn write_family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: Vec<(String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The role as the console and `ringway status` show it: `primary`,
/// `secondary`, or `secondary (standby)` for a secondary with no agents.
pub fn role_text(totals: &Totals) -> String {
    if totals.standby() {
        format!("{} (standby)", totals.role.as_str())
    } else {
        totals.role.as_str().to_string()
    }
}

/// A labelled counter summed over workers: one sample per label value.
fn summed<K: Ord + Clone + std::fmt::Display>(
    snaps: &[WorkerSnapshot],
    label: &str,
    counter: impl Fn(&WorkerSnapshot) -> &std::collections::BTreeMap<K, u64>,
) -> Vec<(String, u64)> {
    let mut total = std::collections::BTreeMap::<K, u64>::new();
    for s in snaps {
        for (k, v) in counter(s) {
            *total.entry(k.clone()).or_default() += v;
        }
    }
    total
        .into_iter()
        .map(|(k, v)| (format!("{label}=\"{k}\""), v))
        .collect()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds between the console's reloads of itself.
const CONSOLE_REFRESH_SECS: u32 = 5;

/// The console's stylesheet, served at `/console.css`: a file of its own
/// rather than a `<style>` element, so the Content-Security-Policy can
/// forbid every inline style and script.
pub const CONSOLE_CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.counts span{display:inline-block;margin-right:2em;font-size:1.2em}
.partial{background:#fdd;border:1px solid #c66;padding:.4em .8em}
.tabs input{display:none} .tabs label{padding:.4em 1em;border:1px solid #999;border-bottom:none;cursor:pointer;background:#eee}
.tabs input:checked+label{background:#fff;font-weight:bold}
.panel{display:none;border-top:1px solid #999;padding-top:.5em}
#tab-clients:checked~#clients,#tab-sessions:checked~#sessions{display:block}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em;white-space:nowrap}
";

/// How an answer built from some workers' snapshots says so, e.g.
/// `1 of 2` (the `Ringway-Workers-Answered` header and the console's
/// banner).
pub fn answered(snapshot: &Snapshot) -> String {
    format!("{} of {}", snapshot.workers.len(), snapshot.asked)
}

/// The HTML console: counts on top, a Clients tab and an Active Sessions
/// tab, and a banner when some workers did not answer. Self-contained
/// (no external assets), no script, no inline style; every peer-supplied
/// string is escaped.
pub fn console(snapshot: &Snapshot, totals: &Totals, query: Option<&str>) -> String {
    let agents = agents(&snapshot.workers);
    let sessions = sessions(&snapshot.workers);
    let max = if totals.max_clients == 0 {
        "unlimited".to_string()
    } else {
        totals.max_clients.to_string()
    };
    let role = role_text(totals);
    let partial = if snapshot.complete() {
        String::new()
    } else {
        format!(
            "<p class=\"partial\" id=\"partial\">Workers answered {}: agents and sessions of the others are missing below.</p>\n",
            answered(snapshot)
        )
    };
    let mut clients_rows = String::new();
    for a in &agents {
        let _ = write!(
            clients_rows,
            "<tr class=\"client\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.name),
            escape(&a.local_ip),
            escape(&a.mac),
            escape(&a.external_addr),
            escape(&a.os),
            escape(&a.key),
            a.worker,
            escape(&a.connected_since),
            escape(&a.last_poll),
            a.sessions
        );
    }
    let mut session_rows = String::new();
    for s in &sessions {
        let _ = write!(
            session_rows,
            "<tr class=\"session\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.control),
            escape(s.operator.as_deref().unwrap_or("-")),
            escape(&s.agent),
            escape(&s.started),
            s.bytes_to_agent,
            s.bytes_to_control,
            s.worker
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{CONSOLE_REFRESH_SECS}">
<title>ringway console</title>
<link rel="stylesheet" href="/console.css">
</head><body>
<h1>ringway {version}</h1>
<p class="nav"><a id="signins-link" href="{signins_href}">Sign-in history</a></p>
{partial}<p class="counts"><span>Clients connected: <b id="clients-connected">{n_agents}</b></span><span>Max clients: <b id="max-clients">{max}</b></span><span>Role: <b id="role">{role}</b></span><span>Active sessions: <b id="sessions-active">{n_sessions}</b></span></p>
<div class="tabs">
<input type="radio" name="tab" id="tab-clients" checked><label for="tab-clients">Clients</label>
<input type="radio" name="tab" id="tab-sessions"><label for="tab-sessions">Active Sessions</label>
<div class="panel" id="clients"><table><thead><tr><th>Name</th><th>Local IP</th><th>MAC</th><th>External address</th><th>OS</th><th>Key</th><th>Worker</th><th>Connected since</th><th>Last poll</th><th>Sessions</th></tr></thead><tbody>{clients_rows}</tbody></table></div>
<div class="panel" id="sessions"><table><thead><tr><th>Control</th><th>Operator</th><th>Client</th><th>Started</th><th>Bytes to client</th><th>Bytes to control</th><th>Worker</th></tr></thead><tbody>{session_rows}</tbody></table></div>
</div></body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        signins_href = escape(&with_query("/signins", query)),
        n_agents = agents.len(),
        n_sessions = sessions.len(),
    )
}

/// `path`, with the page's own query (a `?token=` a browser carries) so
/// a link keeps working where a token is needed.
fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

/// The sign-in history page: the latest sign-ins, newest first, every
/// field escaped (names and addresses come from the network).
pub fn signins_page(entries: &[crate::gateway::SignInEntry], query: Option<&str>) -> String {
    let mut rows = String::new();
    for e in entries {
        let class = if e.outcome == "ok" {
            "signin ok"
        } else {
            "signin failed"
        };
        let _ = write!(
            rows,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.at),
            escape(&e.operator),
            escape(&e.control),
            escape(&e.key),
            escape(&e.source),
            escape(&e.outcome)
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{CONSOLE_REFRESH_SECS}">
<title>ringway sign-ins</title>
<link rel="stylesheet" href="/console.css">
</head><body>
<h1>Sign-in history</h1>
<p class="nav"><a href="{back}">Back to the console</a> · the latest {max} sign-ins, newest first; the audit file keeps them all</p>
<table id="signins"><thead><tr><th>When (UTC)</th><th>Operator</th><th>Control</th><th>Key</th><th>From</th><th>Outcome</th></tr></thead><tbody>{rows}</tbody></table>
</body></html>
"#,
        back = escape(&with_query("/", query)),
        max = crate::gateway::SIGNIN_HISTORY,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::StatsSnapshot;

    /// An agent row as a worker would report it, for answers built in tests.
    pub(crate) fn agent(name: &str) -> AgentRow {
        AgentRow {
            name: name.into(),
            local_ip: "10.0.0.7".into(),
            mac: "02:00:00:00:00:01".into(),
            external_addr: "127.0.0.1:5000".into(),
            key: "k".into(),
            worker: 1,
            connected_since: "2026-11-22T03:00:00Z".into(),
            last_poll: "2026-11-22T03:01:00Z".into(),
            os: "linux".into(),
            sessions: 0,
        }
    }

    fn worker(index: usize, agents: Vec<AgentRow>) -> WorkerSnapshot {
        WorkerSnapshot {
            worker: index,
            agents,
            ..Default::default()
        }
    }

    #[test]
    fn console_escapes_peer_strings() {
        let snapshot = Snapshot {
            workers: vec![worker(0, vec![agent("<script>alert(1)</script>")])],
            asked: 1,
        };
        let totals = Totals {
            max_clients: 5,
            ..Totals::default()
        };
        let html = console(&snapshot, &totals, None);
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains(r#"<b id="max-clients">5</b>"#));
        assert!(html.contains(r#"<b id="clients-connected">1</b>"#));
        assert!(!html.contains("id=\"partial\""), "every worker answered");
    }

    #[test]
    fn a_secondary_without_agents_is_in_standby() {
        let secondary = Totals {
            role: Role::Secondary,
            ..Totals::default()
        };
        let html = console(&Snapshot::default(), &secondary, None);
        assert!(html.contains(r#"<b id="role">secondary (standby)</b>"#), "{html}");
        let text = metrics(&Snapshot::default(), &secondary);
        assert!(text.contains("\nringway_role{role=\"secondary\"} 1\n"), "{text}");
        assert!(text.contains("\nringway_standby 1\n"), "{text}");
        let serving = Totals {
            agents_connected: 1,
            ..secondary
        };
        assert_eq!(role_text(&serving), "secondary");
        assert!(metrics(&Snapshot::default(), &serving).contains("\nringway_standby 0\n"));
        assert_eq!(role_text(&Totals::default()), "primary");
    }

    #[test]
    fn the_console_has_no_inline_script_or_style() {
        let html = console(&Snapshot::default(), &Totals::default(), None);
        for inline in ["<script", "<style", " style=", "javascript:"] {
            assert!(!html.contains(inline), "{inline} in:\n{html}");
        }
        assert!(html.contains(r#"<link rel="stylesheet" href="/console.css">"#));
    }

    #[test]
    fn a_partial_snapshot_says_which_share_of_workers_answered() {
        let snapshot = Snapshot {
            workers: vec![worker(1, vec![agent("pc1")])],
            asked: 2,
        };
        assert_eq!(answered(&snapshot), "1 of 2");
        let html = console(&snapshot, &Totals::default(), None);
        assert!(
            html.contains("<p class=\"partial\" id=\"partial\">Workers answered 1 of 2: agents and sessions of the others are missing below.</p>"),
            "{html}"
        );
        let text = metrics(&snapshot, &Totals::default());
        assert!(text.contains("\nringway_workers 2\n"), "{text}");
        assert!(text.contains("\nringway_workers_answered 1\n"), "{text}");
        assert!(text.contains("ringway_agents_connected{worker=\"1\"} 1\n"), "{text}");
        assert!(!text.contains("worker=\"0\""), "{text}");
    }

    #[test]
    fn metrics_are_well_formed() {
        let snap = WorkerSnapshot {
            worker: 0,
            agents: vec![agent("pc1")],
            sessions: vec![],
            stats: StatsSnapshot {
                sessions_total: 3,
                source_refusals: [("unauthenticated".to_string(), 7)].into(),
                sign_ins: [("ok".to_string(), 2), ("locked".to_string(), 1)].into(),
                key_quota_refusals: 2,
                pin_refusals: 4,
                ..Default::default()
            },
        };
        let totals = Totals {
            agents_connected: 1,
            max_clients: 0,
            connections_open: 3,
            max_connections: 100,
            role: Role::Primary,
            heap_trims: 2,
            heap_trim_micros: 9_500,
        };
        let text = metrics(
            &Snapshot {
                workers: vec![snap],
                asked: 1,
            },
            &totals,
        );
        assert!(text.contains("ringway_connections_open 3\n"));
        assert!(text.contains("\nringway_role{role=\"primary\"} 1\n"), "{text}");
        assert!(text.contains("\nringway_standby 0\n"), "{text}");
        assert!(text.contains("ringway_connections_max 100\n"));
        assert!(text.contains("ringway_agents_connected{worker=\"0\"} 1\n"));
        assert!(text.contains("ringway_agents_by_key{key=\"k\"} 1\n"), "{text}");
        assert!(text.contains("ringway_sessions_total{worker=\"0\"} 3\n"));
        assert!(text.contains("ringway_source_refusals_total{reason=\"unauthenticated\"} 7\n"));
        assert!(text.contains("ringway_sign_ins_total{outcome=\"ok\"} 2\n"));
        assert!(text.contains("ringway_sign_ins_total{outcome=\"locked\"} 1\n"));
        assert!(text.contains("ringway_key_quota_refusals_total{worker=\"0\"} 2\n"));
        assert!(text.contains("ringway_pin_refusals_total{worker=\"0\"} 4\n"));
        assert!(text.contains("\nringway_heap_trims_total 2\n"), "{text}");
        assert!(text.contains("\nringway_heap_trim_microseconds_total 9500\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("sample has a value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn the_sign_in_page_escapes_every_field_and_keeps_the_token_in_its_link() {
        let e = crate::gateway::SignInEntry {
            at: "2026-12-02T15:00:00Z".into(),
            operator: "<script>x</script>".into(),
            control: "ops".into(),
            key: "acme".into(),
            source: "127.0.0.1".into(),
            outcome: "wrong_password".into(),
        };
        let page = signins_page(&[e], Some("token=a&b"));
        assert!(page.contains("<td>&lt;script&gt;x&lt;/script&gt;</td>"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains(r#"<tr class="signin failed">"#), "{page}");
        assert!(page.contains(r#"href="/?token=a&amp;b""#), "{page}");
        let html = console(&Snapshot::default(), &Totals::default(), Some("token=t"));
        assert!(
            html.contains(r#"<a id="signins-link" href="/signins?token=t">"#),
            "{html}"
        );
    }
}
