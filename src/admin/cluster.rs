//! The cluster as the admin listener shows it: `/metrics` families, the
//! console's table and `/api/cluster`, from the view a clustered
//! gateway keeps (`gateway::ClusterStatus`).

use std::fmt::Write;

use super::render::{escape, write_family};
use crate::gateway::ClusterStatus;

/// The cluster's `/metrics` families (only a clustered gateway has them).
pub fn metrics(status: &ClusterStatus) -> String {
    let mut out = String::with_capacity(1024);
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        write_family(&mut out, name, kind, help, samples)
    };
    let one = |v: f64| vec![(String::new(), v)];
    let per_gateway = |f: &dyn Fn(&crate::gateway::ClusterRow) -> u64| -> Vec<(String, f64)> {
        status
            .gateways
            .iter()
            .map(|g| (format!("gateway=\"{}\"", g.id), f(g) as f64))
            .collect()
    };
    family(
        "ringway_cluster_redis_up",
        "gauge",
        "1 while the cluster directory (Redis) answers.",
        one(if status.redis_up { 1.0 } else { 0.0 }),
    );
    family(
        "ringway_cluster_gateways_live",
        "gauge",
        "Gateways of the cluster whose lease is live, this one included.",
        one(status.gateways.len() as f64),
    );
    family(
        "ringway_cluster_agents",
        "gauge",
        "Agents each live gateway holds, from its lease.",
        per_gateway(&|g| g.agents),
    );
    family(
        "ringway_cluster_sessions",
        "gauge",
        "Sessions each live gateway relays, from its lease.",
        per_gateway(&|g| g.sessions),
    );
    family(
        "ringway_cluster_lease_age_seconds",
        "gauge",
        "Seconds since each live gateway renewed its lease, when this one read them.",
        status
            .gateways
            .iter()
            .map(|g| (format!("gateway=\"{}\"", g.id), g.lease_age_secs))
            .collect(),
    );
    family(
        "ringway_cluster_view_age_seconds",
        "gauge",
        "Seconds since the leases were last read (-1: never).",
        one(status.view_age_secs.map_or(-1.0, |s| (s * 1000.0).round() / 1000.0)),
    );
    family(
        "ringway_cluster_redis_ops_total",
        "counter",
        "Redis commands and scripts this gateway sent.",
        one(status.redis_ops as f64),
    );
    family(
        "ringway_cluster_redirects_total",
        "counter",
        "Agents sent to a less-loaded gateway, and controls sent to the gateway holding their agent.",
        vec![
            ("kind=\"agent\"".into(), status.agent_redirects as f64),
            ("kind=\"control\"".into(), status.control_redirects as f64),
        ],
    );
    family(
        "ringway_cluster_relays_total",
        "counter",
        "Controls' connects this gateway relayed to the gateway holding their agent (cross = \"relay\").",
        one(status.control_relays as f64),
    );
    family(
        "ringway_cluster_replaced_elsewhere_total",
        "counter",
        "Agents dropped here because a newer registration of their name is on another gateway.",
        one(status.replaced_elsewhere as f64),
    );
    family(
        "ringway_cluster_draining",
        "gauge",
        "1 while this gateway drains (ringway drain): new agents go elsewhere, its own are moved away.",
        one(if status.draining { 1.0 } else { 0.0 }),
    );
    family(
        "ringway_cluster_drained_total",
        "counter",
        "Agents a drain told to move to another gateway.",
        one(status.drained as f64),
    );
    family(
        "ringway_cluster_redis_failures_total",
        "counter",
        "Times the cluster directory (Redis) was lost.",
        one(status.redis_failures as f64),
    );
    out
}

/// The console's cluster section: Redis's state and one row per gateway.
pub fn console_section(status: &ClusterStatus) -> String {
    let mut rows = String::new();
    for g in &status.gateways {
        let _ = write!(
            rows,
            "<tr class=\"gateway\"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>",
            escape(&g.id),
            if g.this { " (this one)" } else { "" },
            escape(&g.advertise),
            g.agents,
            g.sessions,
            if g.draining { "draining" } else { "serving" },
            g.lease_age_secs
        );
    }
    let redis = if status.redis_up {
        "up".to_string()
    } else {
        format!("down: {}", status.down_reason)
    };
    let age = status
        .view_age_secs
        .map_or("never".to_string(), |s| format!("{s:.1} s ago"));
    format!(
        "<h2>Cluster</h2>\n<p class=\"counts\"><span>This gateway: <b id=\"cluster-id\">{}</b></span><span>Directory: <b id=\"cluster-redis\">{}</b></span><span>Leases read: <b id=\"cluster-age\">{age}</b></span></p>\n<table id=\"cluster\"><thead><tr><th>Gateway</th><th>Address</th><th>Clients</th><th>Sessions</th><th>State</th><th>Lease renewed</th></tr></thead><tbody>{rows}</tbody></table>\n",
        escape(&status.id),
        escape(&redis),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ClusterRow;

    fn status() -> ClusterStatus {
        ClusterStatus {
            id: "gw1".into(),
            redis_up: true,
            view_age_secs: Some(1.5),
            gateways: vec![
                ClusterRow {
                    id: "gw1".into(),
                    advertise: "http://127.0.0.1:1".into(),
                    agents: 3,
                    sessions: 1,
                    draining: false,
                    lease_age_secs: 0.5,
                    this: true,
                },
                ClusterRow {
                    id: "gw2".into(),
                    advertise: "http://<b>:2".into(),
                    agents: 4,
                    sessions: 0,
                    draining: true,
                    lease_age_secs: 2.0,
                    this: false,
                },
            ],
            agent_redirects: 5,
            ..ClusterStatus::default()
        }
    }

    #[test]
    fn cluster_metrics_carry_every_gateway() {
        let text = metrics(&status());
        for line in [
            "ringway_cluster_redis_up 1\n",
            "ringway_cluster_gateways_live 2\n",
            "ringway_cluster_agents{gateway=\"gw1\"} 3\n",
            "ringway_cluster_agents{gateway=\"gw2\"} 4\n",
            "ringway_cluster_view_age_seconds 1.5\n",
            "ringway_cluster_lease_age_seconds{gateway=\"gw2\"} 2\n",
            "ringway_cluster_redirects_total{kind=\"agent\"} 5\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn the_cluster_section_escapes_what_redis_holds() {
        let html = console_section(&status());
        assert!(html.contains("<td>gw1 (this one)</td>"), "{html}");
        assert!(
            html.contains("<td>0</td><td>draining</td><td>2.0 s</td></tr>"),
            "{html}"
        );
        assert!(html.contains("http://&lt;b&gt;:2"), "{html}");
        assert!(html.contains("<b id=\"cluster-redis\">up</b>"), "{html}");
    }
}
