//! `GET /v1/health`: the cheap probe an agent on a secondary gateway sends
//! its primary to learn whether it can go home, without registering.
//!
//! Unauthenticated (it proves nothing and reveals only what the answer's
//! `Ringway-Boot` header says to anyone anyway, plus the role), answered at
//! once with a tiny JSON body, counted in `ringway_health_probes_total` and
//! never logged: agents probe every few seconds, and a line each would
//! bury the real events.

use crate::conn::Conn;
use crate::gateway::core::stats::Stats;
use crate::gateway::shard::Shard;
use crate::http;
use crate::proto;
use crate::relay::Duplex;

/// Answers a health probe: `200` with `{"role":...,"boot":...}`, then a
/// close. The connection counts as unauthenticated for its source while
/// it is answered (so one source can hold at most its share of slots with
/// probes), but once answered it gives its new-connection token back, as
/// a proven connection does: thousands of agents behind one NAT address
/// that wait on a secondary probe their primary every few seconds, and
/// their probes must not use up the rate their registrations need when
/// they come home.
pub(crate) async fn health(shard: &Shard, conn: &Conn) {
    Stats::inc(&shard.stats.health_probes);
    let boot = shard.shared.boot.to_string();
    let body = proto::HealthAnswer {
        role: shard.config().role.as_str().to_string(),
        boot: boot.clone(),
    };
    // Serialising two strings cannot fail; an empty body would only make
    // the probe look unhealthy, never crash the worker.
    let mut body = serde_json::to_vec(&body).unwrap_or_default();
    body.push(b'\n');
    let answer = http::response(200, &[(proto::H_BOOT_WRITTEN, &boot)], "application/json", &body);
    if super::answer::send(shard, conn, answer).await.is_ok() {
        shard.proven(conn);
        let _ = conn.shutdown_write().await;
    }
}
