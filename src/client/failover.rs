//! A client that knows more than one gateway: a primary and secondaries,
//! tried in order (`--gateway A --secondary B --secondary C`).
//!
//! - **Failover.** An agent whose channel ends, or whose registration is
//!   refused, tries the next gateway at once ([`attempt_order`]); only a
//!   whole round of failures makes it pause (the ladder of
//!   [`super::backoff`]). A gateway that accepts TCP but does not answer
//!   (a stopped process) is given [`REGISTER_TIMEOUT`] when another is
//!   there to try.
//! - **Failback.** While on a secondary the agent probes the gateways
//!   before it in the list with `GET /v1/health` every [`probe_pause`]
//!   (jittered); one that has answered every probe for the hold-down
//!   ([`HoldDown`]) gets the channel back, after a further random part of
//!   [`homecoming_spread`]: the agent registers there first
//!   and then says `BYE failback` to the secondary (make-before-break),
//!   so it is never absent, and its running sessions stay where they are.
//! - **Browsing.** A control asks every gateway and shows each agent once
//!   ([`merge`]), with the gateway it is on.
//!
//! Pure: the caller supplies clocks and randomness, so every rule has a
//! unit test.

use std::time::{Duration, Instant};

use crate::proto::{AgentSummary, Move};

/// Most gateways one client knows: the primary and up to seven
/// secondaries. An agent probes those before the one it is on, so this
/// bounds its probes per interval; more would be a list typed wrong.
pub const MAX_GATEWAYS: usize = 8;

/// How long a registration may take when another gateway is there to
/// try: a stopped gateway's kernel still completes the TCP handshake, so
/// without this the agent would wait for the full answer deadline (30 s)
/// before moving on. Long enough for a TLS handshake over a slow uplink.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a health probe may take in all (dial, TLS, answer). A gateway
/// slower than this is not one to move back to yet.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest probe interval: a probe a second per agent is already more
/// than a primary with many agents wants to answer.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Longest default probe interval, whatever the CMPI: a primary that is
/// back should not wait for its agents for more than a few minutes.
pub const MAX_DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// The probe interval when none is given: a fifth of the CMPI (1 s to
/// [`MAX_DEFAULT_PROBE_INTERVAL`]), so that a probe's jitter, the default
/// hold-down ([`default_hold_down`], two intervals) and the confirming
/// probe after it add up to at most four fifths of a CMPI: the agent is
/// back within one CMPI of its primary's return.
pub fn default_probe_interval(cmpi: Duration) -> Duration {
    (cmpi / 5).clamp(MIN_PROBE_INTERVAL, MAX_DEFAULT_PROBE_INTERVAL)
}

/// The hold-down when none is given: two probe intervals, so a gateway
/// must answer at least three probes in a row before agents come back,
/// and one that flaps faster than that keeps none of them.
pub fn default_hold_down(probe_interval: Duration) -> Duration {
    probe_interval.saturating_mul(2)
}

/// How far past the hold-down an agent spreads its move home: the rest
/// of the CMPI after two probe pauses and the hold-down (the worst case
/// before the hold-down is over), so that the agents of a primary that
/// comes back arrive spread over the CMPI instead of within one probe
/// interval (15,000 agents and a 12 s interval would be 1,250
/// registrations a second), and still within one CMPI of its return.
/// Zero when the probes and the hold-down take the whole CMPI already.
pub fn homecoming_spread(cmpi: Duration, probe: Duration, hold_down: Duration) -> Duration {
    cmpi.saturating_sub(probe.saturating_mul(2).saturating_add(hold_down))
}

/// The pause before the next probe: between half the interval and the
/// whole of it, placed by `frac` (0.0 to 1.0), so agents that failed over
/// together do not probe, nor come back, in the same instant.
pub fn probe_pause(interval: Duration, frac: f64) -> Duration {
    super::backoff::jitter(interval.max(MIN_PROBE_INTERVAL), frac)
}

/// The order in which an agent tries its gateways (indices into its list,
/// the primary being 0): every one in list order, except that the one
/// whose channel just ended or that just failed (`avoid`) comes last. So
/// a primary that died is not tried again before the secondary, and a
/// secondary that died sends the agent home first.
pub fn attempt_order(gateways: usize, avoid: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..gateways).filter(|&i| Some(i) != avoid).collect();
    if let Some(a) = avoid.filter(|&a| a < gateways) {
        order.push(a);
    }
    order
}

/// What a registration at gateway `to`, after holding the channel with
/// gateway `from`, is: back to one earlier in the list (`failback`), or
/// on to a later one (`failover`). `None` for no move (the same gateway
/// again, or no earlier channel).
pub fn move_kind(from: Option<usize>, to: usize) -> Option<Move> {
    match from {
        Some(f) if to < f => Some(Move::Failback),
        Some(f) if to > f => Some(Move::Failover),
        _ => None,
    }
}

/// Whether a gateway has been up long enough to move back to: every
/// probe answered, by the same run of the gateway (its boot id), for the
/// hold-down. A failed probe or a new boot id starts the wait over, so a
/// flapping gateway gets no agents back.
#[derive(Debug, Clone)]
pub struct HoldDown {
    /// How long the gateway must stay up.
    hold: Duration,
    /// Since when it has answered, and as which boot.
    up_since: Option<(Instant, String)>,
}

impl HoldDown {
    /// A gateway not known to be up, to be held down for `hold`.
    pub fn new(hold: Duration) -> HoldDown {
        HoldDown { hold, up_since: None }
    }

    /// Records a probe at `now`: `Some(boot)` if the gateway answered,
    /// `None` if it did not. True once it has been up for the hold-down.
    pub fn probed(&mut self, answer: Option<&str>, now: Instant) -> bool {
        let Some(boot) = answer else {
            self.up_since = None;
            return false;
        };
        match &self.up_since {
            Some((_, seen)) if seen == boot => {}
            _ => self.up_since = Some((now, boot.to_string())),
        }
        self.up_since
            .as_ref()
            .is_some_and(|(since, _)| now.saturating_duration_since(*since) >= self.hold)
    }
}

/// Merges the lists of several gateways (in list order, the primary
/// first) so that each agent appears once, with the index of the gateway
/// it is on. An agent listed by two (it is moving: registered at the new
/// one, not yet gone from the old) is shown where it registered last,
/// which is where it is going; on a tie, the earlier gateway. Sorted by
/// name. The times compared are the gateways' own clocks, whole seconds,
/// so gateways should keep their clocks in step (NTP).
pub fn merge(lists: Vec<Vec<AgentSummary>>) -> Vec<(usize, AgentSummary)> {
    let mut all: std::collections::BTreeMap<String, (usize, AgentSummary)> = std::collections::BTreeMap::new();
    for (index, list) in lists.into_iter().enumerate() {
        for agent in list {
            match all.get(&agent.name) {
                Some((_, seen)) if seen.connected_since >= agent.connected_since => {}
                _ => {
                    all.insert(agent.name.clone(), (index, agent));
                }
            }
        }
    }
    all.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    fn agent(name: &str, since: &str) -> AgentSummary {
        AgentSummary {
            name: name.into(),
            external_addr: "127.0.0.1:1".into(),
            connected_since: since.into(),
            last_poll: since.into(),
            mac: String::new(),
            local_ip: String::new(),
            os: String::new(),
            gateway: None,
        }
    }

    #[test]
    fn the_gateway_that_just_failed_is_tried_last() {
        assert_eq!(attempt_order(2, None), vec![0, 1]);
        assert_eq!(attempt_order(2, Some(0)), vec![1, 0]);
        assert_eq!(attempt_order(3, Some(1)), vec![0, 2, 1]);
        assert_eq!(attempt_order(1, Some(0)), vec![0]);
        assert_eq!(attempt_order(2, Some(7)), vec![0, 1]);
    }

    #[test]
    fn moves_are_named_by_direction() {
        assert_eq!(move_kind(None, 0), None);
        assert_eq!(move_kind(Some(0), 0), None);
        assert_eq!(move_kind(Some(0), 1), Some(Move::Failover));
        assert_eq!(move_kind(Some(2), 0), Some(Move::Failback));
    }

    #[test]
    fn defaults_bring_an_agent_home_within_one_cmpi() {
        for cmpi in [1, 5, 60, 600, 86_400].map(SECS) {
            let probe = default_probe_interval(cmpi);
            let worst = probe + default_hold_down(probe) + probe;
            assert!(worst <= cmpi.max(SECS(4)), "cmpi {cmpi:?}: {worst:?}");
            assert!(probe >= MIN_PROBE_INTERVAL);
        }
        assert_eq!(default_probe_interval(SECS(60)), SECS(12));
        assert_eq!(default_hold_down(SECS(12)), SECS(24));
    }

    #[test]
    fn moves_home_are_spread_over_the_rest_of_the_cmpi() {
        assert_eq!(homecoming_spread(SECS(60), SECS(12), SECS(24)), SECS(12));
        assert_eq!(homecoming_spread(SECS(5), SECS(1), SECS(2)), SECS(1));
        assert_eq!(homecoming_spread(SECS(5), SECS(2), SECS(4)), Duration::ZERO);
        assert_eq!(homecoming_spread(SECS(5), Duration::MAX, SECS(1)), Duration::ZERO);
    }

    #[test]
    fn probes_are_spread_over_half_the_interval() {
        assert_eq!(probe_pause(SECS(10), 0.0), SECS(5));
        assert_eq!(probe_pause(SECS(10), 1.0), SECS(10));
        assert_eq!(probe_pause(Duration::ZERO, 1.0), MIN_PROBE_INTERVAL);
    }

    #[test]
    fn a_flapping_gateway_never_outlasts_the_hold_down() {
        let t0 = Instant::now();
        let mut h = HoldDown::new(SECS(3));
        // Up 2 s, down 2 s, probed every second: never up for 3 s.
        for cycle in 0..5u64 {
            let base = t0 + SECS(cycle * 4);
            for s in 0..=2 {
                assert!(!h.probed(Some("b1"), base + SECS(s)), "cycle {cycle}, up {s} s");
            }
            assert!(!h.probed(None, base + SECS(3)));
        }
        let base = t0 + SECS(20);
        assert!(!h.probed(Some("b1"), base));
        assert!(!h.probed(Some("b1"), base + SECS(2)));
        assert!(h.probed(Some("b1"), base + SECS(3)));
    }

    #[test]
    fn a_restart_between_probes_starts_the_hold_down_over() {
        let t0 = Instant::now();
        let mut h = HoldDown::new(SECS(2));
        assert!(!h.probed(Some("b1"), t0));
        assert!(!h.probed(Some("b2"), t0 + SECS(2)));
        assert!(!h.probed(Some("b2"), t0 + SECS(3)));
        assert!(h.probed(Some("b2"), t0 + SECS(4)));
        let mut zero = HoldDown::new(Duration::ZERO);
        assert!(zero.probed(Some("b"), t0));
    }

    #[test]
    fn an_agent_on_two_gateways_is_listed_once_where_it_registered_last() {
        let primary = vec![
            agent("pc1", "2026-01-01T10:00:05Z"),
            agent("pc2", "2026-01-01T09:00:00Z"),
        ];
        let secondary = vec![
            agent("pc1", "2026-01-01T10:00:00Z"),
            agent("pc3", "2026-01-01T10:00:00Z"),
            agent("pc2", "2026-01-01T09:30:00Z"),
        ];
        let merged: Vec<(usize, String)> = merge(vec![primary.clone(), secondary])
            .into_iter()
            .map(|(i, a)| (i, a.name))
            .collect();
        assert_eq!(merged, vec![(0, "pc1".into()), (1, "pc2".into()), (1, "pc3".into())]);
        let tie: Vec<usize> = merge(vec![primary.clone(), primary])
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(tie, vec![0, 0]);
    }
}
