//! What controls do: browse agents, and open relay sessions to them.
//!
//! A session lives on the worker its control connected to. That worker
//! parks the control in a pending slot (`core::pairing`), asks the agent's
//! owner to push `OPEN <sid>` down the agent's channel, and waits (pairing
//! deadline) for the agent's data connection, which `join` delivers here.
//! Then both sides get `101` and the relay runs with both sockets on this
//! one thread.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures_channel::oneshot;
use futures_util::future::{Either, select};

use super::answer::{identity, refuse_proof, reject, send, verify, wants_upgrade};
use super::operator::{Grant, fresh_code, grant};
use crate::approve::{Busy, Question, Verdict};
use std::sync::Arc;

use crate::auth::new_nonce;
use crate::auth::{BootId, KeyId};
use crate::client::{self, BootCache, ClientError, ClientTls, Endpoint, OperatorTicket, Session};
use crate::config::Approve;
use crate::conn::Conn;
use crate::eventlog::sanitize;
use crate::gateway::cluster::SessionShare;
use crate::gateway::core::cluster::{AgentKey, Located};
use crate::gateway::core::directory::owner_of;
use crate::gateway::core::handoff::{OpenResult, ShardMsg};
use crate::gateway::core::permit::Permit;
use crate::gateway::core::reply::Refusal;
use crate::gateway::core::sessions::SessionInfo;
use crate::gateway::core::stats::Stats;
use crate::gateway::shard::Shard;
use crate::http::{self, RequestHead};
use crate::proto::{self, AgentSummary, SessionId};
use crate::relay::{Counters, relay};

/// `GET /v1/clients`: the agents that share the control's key, as JSON.
pub(crate) async fn browse(shard: Rc<Shard>, stream: Conn, peer: SocketAddr, head: RequestHead, _permit: Permit) {
    // A control names itself, but curl with a bearer key need not.
    let identity_raw = match (head.header(proto::H_IDENTITY), identity(&head)) {
        (None, _) => String::new(),
        (Some(_), Some((raw, _))) => raw,
        (Some(_), None) => {
            reject(&shard, &stream, Refusal::BadName("control name")).await;
            return;
        }
    };
    let kid = match verify(&shard, &stream, peer.ip(), &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            refuse_proof(
                &shard,
                &stream,
                peer.ip(),
                why,
                "Control browse",
                "Terminating connection",
            )
            .await;
            return;
        }
    };
    let control = http::pct_decode(&identity_raw).unwrap_or_default();
    let granted = match grant(&shard, &stream, peer.ip(), &head, &identity_raw, &control, kid) {
        Ok(g) => g,
        Err(why) => {
            reject(&shard, &stream, why).await;
            return;
        }
    };
    let mut agents: Vec<AgentSummary> = Vec::new();
    for w in 0..shard.workers() {
        if w == shard.index {
            agents.extend(shard.directory.borrow().list(kid));
            continue;
        }
        match shard.ask(w, |reply| ShardMsg::List { kid, reply }).await {
            Ok(list) => agents.extend(list),
            Err(e) => {
                log::warn!("worker {w} did not list its agents: {e:?}");
                reject(&shard, &stream, Refusal::WorkerSlow("client list")).await;
                return;
            }
        }
    }
    // In a cluster, the key's agents on the other live gateways too. With
    // Redis away, this gateway's own agents are listed, and a header says
    // the list is partial.
    let mut partial: Option<String> = None;
    if let Some(cluster) = &shard.shared.cluster {
        match cluster.list(kid).await {
            Ok(remote) => {
                let here: HashSet<String> = agents.iter().map(|a| a.name.clone()).collect();
                agents.extend(remote.into_iter().filter(|a| !here.contains(&a.name)));
            }
            // A header value: Redis's error text, with no control
            // character that could end the line.
            Err(why) => {
                partial = Some(
                    why.reason()
                        .chars()
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect(),
                )
            }
        }
    }
    if let Some(g) = &granted {
        agents.retain(|a| g.scope.may_reach(&a.name));
    }
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    shard.shared.audit.record("browse", || {
        vec![
            ("operator", operator_of(granted.as_ref()).into()),
            ("key", shard.keys.borrow().name_of(kid).into()),
            ("control", control.as_str().into()),
            ("source", peer.ip().to_string().into()),
            ("agents", agents.len().into()),
        ]
    });
    let body = match serde_json::to_vec(&agents) {
        Ok(b) => b,
        Err(_) => {
            reject(&shard, &stream, Refusal::CannotEncode).await;
            return;
        }
    };
    let boot = shard.shared.boot.to_string();
    let mut headers = vec![(proto::H_BOOT_WRITTEN, boot.as_str())];
    if let Some(why) = &partial {
        headers.push((proto::H_CLUSTER_PARTIAL_WRITTEN, why.as_str()));
    }
    let answer = http::response(200, &headers, "application/json", &body);
    let _ = send(&shard, &stream, answer).await;
}

/// Who asks for an agent that is not here, for [`not_here`].
struct Asker<'a> {
    kid: KeyId,
    agent: &'a str,
    name_raw: &'a str,
    control: &'a str,
    control_shown: &'a str,
    head: &'a RequestHead,
    granted: Option<&'a Grant>,
}

/// An agent not on this gateway. In a cluster: with `cross = "relay"`,
/// this gateway opens the session at the gateway that holds it, as the
/// control (same key, name and ticket), and returns it with its share of
/// the connection cap, to be relayed; else a `307` there (the control CLI
/// follows it once). A `503` when the cluster directory cannot say; the
/// `404` a lone gateway gives otherwise. `None`: answered here.
async fn not_here(shard: &Shard, stream: &Conn, asker: Asker<'_>) -> Option<(Session, Permit)> {
    let agent_shown = sanitize(asker.agent);
    let control_shown = asker.control_shown;
    let Some(cluster) = &shard.shared.cluster else {
        reject(shard, stream, Refusal::NoSuchClient(&agent_shown)).await;
        return None;
    };
    let key = AgentKey {
        kid: asker.kid,
        name: asker.agent.to_string(),
    };
    match cluster.locate(key).await {
        // Relayed here by another gateway, and not here: not relayed again.
        Ok(Located::At { gw, .. }) if gw != cluster.id && asker.head.header(proto::H_RELAYED).is_some() => {
            reject(shard, stream, Refusal::NoSuchClient(&agent_shown)).await;
            None
        }
        Ok(Located::At {
            gw,
            advertise,
            boot: there,
        }) if gw != cluster.id && cluster.relays() => {
            let Some(permit) = shard.shared.connection_permit() else {
                reject(shard, stream, Refusal::AtConnectionLimit).await;
                return None;
            };
            let ep = match relay_endpoint(shard, cluster, &asker, &advertise, &there) {
                Ok(ep) => ep,
                Err(why) => {
                    log::warn!("cannot relay to gateway {gw}: {why}");
                    reject(shard, stream, Refusal::Relay(502, &why)).await;
                    return None;
                }
            };
            let relayed = [(proto::H_RELAYED_WRITTEN, cluster.id.clone())];
            match client::connect_here(&ep, asker.agent, &relayed).await {
                Ok(session) => {
                    cluster.counts.control_relays.fetch_add(1, Ordering::Relaxed);
                    log::info!("control {control_shown} relayed to gateway {gw} for client {agent_shown}");
                    Some((session, permit))
                }
                Err(ClientError::Refused { status, reason }) => {
                    // The holder's answer, as it gave it (its reasons are
                    // the same texts this gateway would give).
                    let status = if (400..600).contains(&status) { status } else { 502 };
                    reject(shard, stream, Refusal::Relay(status, &reason)).await;
                    None
                }
                Err(e) => {
                    let why = format!("gateway {gw} holds client {agent_shown} and could not be reached: {e}");
                    shard.event(format!("Control {control_shown} could not be relayed: {why}"));
                    reject(shard, stream, Refusal::Relay(502, &why)).await;
                    None
                }
            }
        }
        Ok(Located::At {
            gw,
            advertise,
            boot: there,
        }) if gw != cluster.id => {
            cluster.counts.control_redirects.fetch_add(1, Ordering::Relaxed);
            log::info!("control {control_shown} sent to gateway {gw} ({advertise}) for client {agent_shown}");
            let location = format!("{advertise}{}{}", proto::PATH_CONNECT_PREFIX, asker.name_raw);
            let reason = format!("client {agent_shown} is on gateway {gw}; connect at {advertise}\n");
            let boot = shard.shared.boot.to_string();
            let answer = http::response(
                307,
                &[
                    ("Location", &location),
                    (proto::H_BOOT_WRITTEN, &boot),
                    (proto::H_LOCATION_BOOT_WRITTEN, &there),
                ],
                "text/plain; charset=utf-8",
                reason.as_bytes(),
            );
            let _ = send(shard, stream, answer).await;
            None
        }
        Ok(_) => {
            reject(shard, stream, Refusal::NoSuchClient(&agent_shown)).await;
            None
        }
        Err(why) => {
            let why = why.reason();
            shard.event(format!(
                "Control {control_shown} asked for Client {agent_shown}, which is not here: {why}"
            ));
            reject(shard, stream, Refusal::ClusterUnavailable(&why)).await;
            None
        }
    }
}

/// The endpoint this gateway connects to the holder `advertise` (boot id
/// `boot`) with, on the control's behalf: the key the control proved, its
/// name, and its ticket with the possession key the operator's verifier
/// gives (every gateway of the cluster has the same operators).
fn relay_endpoint(
    shard: &Shard,
    cluster: &crate::gateway::cluster::Cluster,
    asker: &Asker<'_>,
    advertise: &str,
    boot: &str,
) -> Result<Endpoint, String> {
    let key = shard
        .keys
        .borrow()
        .key_of(asker.kid)
        .cloned()
        .ok_or("the key was removed")?;
    let (tls, host_port) = match advertise.strip_prefix("https://") {
        Some(rest) => {
            let config = cluster
                .relay_tls()
                .ok_or("no TLS trust for the other gateways ([cluster] ca_file)")?;
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            (
                Some(ClientTls {
                    config,
                    server_name: host.trim_start_matches('[').trim_end_matches(']').to_string(),
                }),
                rest,
            )
        }
        None => (None, advertise.strip_prefix("http://").unwrap_or(advertise)),
    };
    let operator = match asker.granted {
        None => None,
        Some(g) => {
            let ticket = asker.head.header(proto::H_TICKET).ok_or("no ticket")?;
            let config = shard.config();
            let op = config
                .operators
                .iter()
                .find(|o| o.name == g.operator)
                .ok_or("the operator was removed")?;
            Some(Arc::new(OperatorTicket {
                operator: g.operator.clone(),
                ticket: ticket.to_string(),
                possession: op.verifier.possession_key(ticket),
                expires_at: 0,
            }))
        }
    };
    Ok(Endpoint {
        gateway: host_port.to_string(),
        key,
        identity: asker.control.to_string(),
        bind: None,
        tls,
        boot: BootCache::known(BootId::parse(boot).ok_or("a bad boot id in the lease")?),
        operator,
        totp: None,
        agent_key: None,
    })
}

/// `GET /v1/connect/<name>`: a relay session to agent `name`.
pub(crate) async fn connect(
    shard: Rc<Shard>,
    stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    early: Vec<u8>,
    name_raw: String,
    _permit: Permit,
) {
    if !wants_upgrade(&head, proto::UPGRADE_RELAY) {
        reject(&shard, &stream, Refusal::MustUpgrade("connect", proto::UPGRADE_RELAY)).await;
        return;
    }
    let Some(agent) = http::pct_decode(&name_raw).filter(|n| proto::valid_name(n)) else {
        reject(&shard, &stream, Refusal::BadName("client name")).await;
        return;
    };
    let Some((identity_raw, control)) = identity(&head) else {
        reject(&shard, &stream, Refusal::BadName("control name")).await;
        return;
    };
    let (agent_shown, control_shown) = (sanitize(&agent), sanitize(&control));
    let kid = match verify(&shard, &stream, peer.ip(), &head, &identity_raw) {
        Ok(kid) => kid,
        Err(why) => {
            let (who, then) = (
                format!("Control {control_shown}"),
                format!("Rejecting connection request to Client {agent_shown}"),
            );
            refuse_proof(&shard, &stream, peer.ip(), why, &who, &then).await;
            return;
        }
    };
    let granted = match grant(&shard, &stream, peer.ip(), &head, &identity_raw, &control, kid) {
        Ok(g) => g,
        Err(why) => {
            reject(&shard, &stream, why).await;
            return;
        }
    };
    // With operators, the log names the operator where the seed's lines
    // name the control.
    let control_shown = granted.as_ref().map_or(control_shown, |g| sanitize(&g.operator));
    if let Some(g) = &granted {
        if !g.scope.may_reach(&agent) {
            // As for an agent that is not there: an operator learns
            // nothing of the agents outside its patterns.
            shard.event_from(
                peer.ip(),
                format!(
                    "Operator {control_shown} may not reach Client {agent_shown}. Rejecting connection request from {}",
                    peer.ip()
                ),
            );
            reject(&shard, &stream, Refusal::NoSuchClient(&agent_shown)).await;
            return;
        }
        if let Err(why) = fresh_code(&shard, peer.ip(), &head, g).await {
            reject(&shard, &stream, why).await;
            return;
        }
    }
    if let Some(how) = shard.config().auth.approve.clone() {
        let question = Question {
            operator: granted.as_ref().map(|g| g.operator.clone()).unwrap_or_default(),
            control: control.clone(),
            agent: agent.clone(),
            source: peer.ip(),
            key: shard.keys.borrow().name_of(kid).to_string(),
        };
        let timeout = shard.config().auth.approve_timeout;
        if let Err(why) = approved(&shard, &how, timeout, question, peer, &control_shown, &agent_shown).await {
            reject(&shard, &stream, why).await;
            return;
        }
    }

    let config = shard.config();
    let (tx, rx) = oneshot::channel();
    let token = new_nonce();
    let deadline = Instant::now() + config.limits.pairing_timeout;
    let opened = shard
        .pending
        .borrow_mut()
        .open(kid, &control, &agent, token, deadline, tx);
    let slot = match opened {
        Ok(slot) => slot,
        Err(e) => {
            refuse_pairing(&shard, &stream, peer, &control_shown, Refusal::TooManyWaiting(e)).await;
            return;
        }
    };
    let sid = SessionId {
        worker: shard.index as u16,
        slot: slot as u32,
        token,
    };

    let owner = owner_of(kid, &agent, shard.workers());
    let opened = if owner == shard.index {
        Ok(shard.open_local(kid, &agent, sid))
    } else {
        let name = agent.clone();
        shard.ask(owner, |reply| ShardMsg::Open { kid, name, sid, reply }).await
    };
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            shard.pending.borrow_mut().close(slot, &token);
            log::warn!("worker {owner} did not open a session for {agent_shown}: {e:?}");
            refuse_pairing(
                &shard,
                &stream,
                peer,
                &control_shown,
                Refusal::WorkerSlow("opening the session"),
            )
            .await;
            return;
        }
    };
    let outcome = match opened {
        OpenResult::Sent => Some(compio::time::timeout_at(deadline, rx).await),
        OpenResult::NotFound | OpenResult::Busy => None,
    };
    shard.pending.borrow_mut().close(slot, &token);
    // The agent's side: its data connection, or in a cluster's relay mode
    // the session opened at the gateway that holds it.
    let (agent_stream, agent_early, _agent_permit, upstream) = match (opened, outcome) {
        (_, Some(Ok(Ok(joined)))) => (joined.stream, joined.early, joined.permit, false),
        (OpenResult::NotFound, _) => {
            let asker = Asker {
                kid,
                agent: &agent,
                name_raw: &name_raw,
                control: &control,
                control_shown: &control_shown,
                head: &head,
                granted: granted.as_ref(),
            };
            match not_here(&shard, &stream, asker).await {
                Some((session, permit)) => (session.stream, session.early, permit, true),
                None => return,
            }
        }
        (OpenResult::Busy, _) => {
            refuse_pairing(&shard, &stream, peer, &control_shown, Refusal::NotReading(&agent_shown)).await;
            return;
        }
        // A drain cancelled the wait.
        (_, Some(Ok(Err(_)))) if shard.draining.is_started() => {
            reject(&shard, &stream, Refusal::ShuttingDown).await;
            return;
        }
        (_, Some(Ok(Err(_)))) | (_, None) => {
            refuse_pairing(
                &shard,
                &stream,
                peer,
                &control_shown,
                Refusal::Unreachable(&agent_shown),
            )
            .await;
            return;
        }
        (_, Some(Err(_))) => {
            let secs = config.limits.pairing_timeout.as_secs();
            refuse_pairing(
                &shard,
                &stream,
                peer,
                &control_shown,
                Refusal::JoinTimeout(&agent_shown, secs),
            )
            .await;
            return;
        }
    };

    // A reload may have revoked the operator while its agent was joining:
    // the session would outlive the revocation that was to end it.
    if let Some(g) = &granted {
        let now = shard.config();
        if !now
            .operators
            .iter()
            .any(|o| o.name == g.operator && o.generation == g.generation)
        {
            shard.event(format!(
                "Operator {control_shown} was revoked while Client {agent_shown} joined: the session is not started"
            ));
            reject(&shard, &stream, Refusal::SignInAgain).await;
            return;
        }
    }
    // The data connection's share of the cap (`_agent_permit`) lives as
    // long as the relay.
    let counters = Rc::new(Counters::default());
    let (kill, killed) = oneshot::channel::<()>();
    // One reading for the session's record and its audit line.
    let started = SystemTime::now();
    let key = shard.sessions.borrow_mut().insert(SessionInfo {
        control: control.clone(),
        agent: agent.clone(),
        kid,
        operator: granted.as_ref().map(|g| (g.operator.clone(), g.generation)),
        started,
        counters: counters.clone(),
        _kill: kill,
    });
    Stats::inc(&shard.stats.sessions_total);
    let _in_lease = shard.shared.cluster.as_ref().map(SessionShare::new);
    if upstream {
        shard.event(format!(
            "Control {control_shown} connected to Client {agent_shown} (relayed to its gateway)"
        ));
    } else {
        shard.event(format!("Control {control_shown} connected to Client {agent_shown}"));
    }
    let who = || -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("operator", operator_of(granted.as_ref()).into()),
            ("key", shard.keys.borrow().name_of(kid).into()),
            ("agent", agent.as_str().into()),
            ("control", control.as_str().into()),
            ("source", peer.ip().to_string().into()),
        ]
    };
    shard.shared.audit.record("session_start", who);
    // Logged before the answers, so the log never shows what the peers do
    // after their 101 ahead of the session itself.
    let relaying = pin!(async {
        let boot = shard.shared.boot.to_string();
        let upgrade = http::switching_protocols(proto::UPGRADE_RELAY, &[(proto::H_BOOT_WRITTEN, &boot)]);
        send(&shard, &stream, upgrade.clone()).await?;
        // A relayed session's holder answered its own 101 already.
        if !upstream {
            send(&shard, &agent_stream, upgrade).await?;
        }
        relay(
            &stream,
            early,
            &agent_stream,
            agent_early,
            config.limits.relay_buffer,
            &counters,
        )
        .await
    });
    match select(relaying, killed).await {
        Either::Left((Err(e), _)) => log::debug!("session {control_shown} -> {agent_shown} ended: {e}"),
        Either::Left((Ok(()), _)) => {}
        Either::Right(_) => log::debug!("session {control_shown} -> {agent_shown} closed by reload"),
    }
    let st = &shard.stats;
    st.bytes_to_agent_closed
        .set(st.bytes_to_agent_closed.get() + counters.a_to_b.get());
    st.bytes_to_control_closed
        .set(st.bytes_to_control_closed.get() + counters.b_to_a.get());
    shard.sessions.borrow_mut().remove(key);
    shard.event(format!(
        "Control {control_shown} disconnected from Client {agent_shown}"
    ));
    shard.shared.audit.record("session_end", || {
        let mut end = who();
        end.extend([
            ("start", crate::timefmt::rfc3339(started).into()),
            ("bytes_to_agent", counters.a_to_b.get().into()),
            ("bytes_to_control", counters.b_to_a.get().into()),
        ]);
        end
    });
}

/// Refuses a connect that could not be paired (502, 503, 504) and says so
/// in the event log with the reason, so an administrator can tell a busy
/// gateway from a broken agent. Repeats from one source are summarised: a
/// key holder's connect flood cannot push real events out of the log.
async fn refuse_pairing(shard: &Shard, stream: &Conn, peer: SocketAddr, control_shown: &str, why: Refusal<'_>) {
    shard.event_from(
        peer.ip(),
        format!(
            "Control {control_shown} could not be paired: {} ({})",
            why.reason(),
            why.status()
        ),
    );
    reject(shard, stream, why).await;
}

/// Asks the approval hook about a connect and waits for its answer (off
/// this event loop, within `[auth] approve_timeout_secs`); a no, a late answer or a
/// full queue is the refusal to give, logged with its reason.
async fn approved(
    shard: &Shard,
    how: &Approve,
    timeout: Duration,
    question: Question,
    peer: SocketAddr,
    control_shown: &str,
    agent_shown: &str,
) -> Result<(), Refusal<'static>> {
    let answer = match shard.shared.approver.ask(how, timeout, question) {
        Ok(rx) => {
            // The hook's own deadline answers first; this one only guards
            // against a thread that never sends.
            match compio::time::timeout(timeout + Duration::from_secs(5), rx).await {
                Ok(Ok(verdict)) => verdict,
                _ => Verdict::No("no answer in time".into()),
            }
        }
        Err(busy) => {
            Stats::bump(&shard.stats.approvals, "busy");
            let whose = match busy {
                Busy::Gateway => "the gateway's",
                Busy::Tenant => "this operator's",
            };
            shard.event_from(
                peer.ip(),
                format!(
                    "Control {control_shown} could not be asked about Client {agent_shown}: {whose} approvals are all waiting. \
                     Rejecting connection request from {}",
                    peer.ip()
                ),
            );
            return Err(Refusal::ApprovalsBusy);
        }
    };
    match answer {
        Verdict::Yes => {
            Stats::bump(&shard.stats.approvals, "yes");
            Ok(())
        }
        Verdict::No(why) => {
            Stats::bump(&shard.stats.approvals, "no");
            shard.event_from(
                peer.ip(),
                format!(
                    "Control {control_shown} was not approved to reach Client {agent_shown}: {}. \
                     Rejecting connection request from {}",
                    sanitize(&why),
                    peer.ip()
                ),
            );
            Err(Refusal::NotApproved)
        }
    }
}

/// The operator a grant names, empty without operators (as the audit
/// trail writes it).
fn operator_of(granted: Option<&super::operator::Grant>) -> String {
    granted.map(|g| g.operator.clone()).unwrap_or_default()
}
