//! Load-balanced gateways (issue 12): three real gateways on 127.0.0.1,
//! .2 and .3 share one real redis-server (on a Unix socket of the test's
//! own). Agents spread across them, every gateway lists the whole
//! cluster, a control on any gateway reaches an agent on any other
//! (redirect), a killed gateway's agents vanish within the lease, one name
//! has one owner, the licence holds cluster-wide, and a Redis restart
//! loses nothing that is connected.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, LoggedChild, Prng, Redis, Service, TestDir,
    block_on, connect_std, echo_round_trip, http_request, list, names, poll_until, refusal, ringway_command,
    run_bounded, spawn_agent_binary, spawn_control_binary,
};
use ringway::auth::scram::{Argon2Params, Verifier};
use ringway::auth::totp::{self, TotpSecret};
use ringway::client::identity::AgentIdentity;
use ringway::client::{self, ChannelEnd, Endpoint};
use ringway::proto;

const KEY: &str = "cluster-key-1";
/// Lease of the test gateways: renewed every second.
const LEASE_SECS: u64 = 3;

/// How the gateways of a test cluster are set.
#[derive(Clone, Copy)]
struct Options {
    spread: bool,
    max_clients: Option<usize>,
    /// More `[cluster]` lines.
    extra: &'static str,
}

const PINNED: Options = Options {
    spread: false,
    max_clients: None,
    extra: "",
};

/// Gateway `gwN` on 127.0.0.N, in `redis`'s cluster.
fn gateway(redis: &Redis, n: usize, opts: Options) -> Gateway {
    let mut config = GatewayConfig::operated(&[KEY]);
    config.listen = vec![SocketAddr::from((Ipv4Addr::new(127, 0, 0, n as u8), 0))];
    config.max_clients = opts.max_clients;
    config.tail.push(format!(
        "[cluster]\nredis = {:?}\nid = \"gw{n}\"\nlease_secs = {LEASE_SECS}\nslack_percent = 20\nspread = {}\n{}",
        redis.url(),
        opts.spread,
        opts.extra
    ));
    let gw = Gateway::start(&config);
    gw.wait_for_event(&available(redis, n, 0), EVENT_TIMEOUT);
    gw
}

/// The event of gateway `n` reaching Redis while holding `clients`.
fn available(redis: &Redis, n: usize, clients: usize) -> String {
    format!(
        "Cluster directory available ({}): gateway gw{n} holds {clients} clients",
        redis.url()
    )
}

/// `count` gateways, each seeing all of them live.
fn cluster(redis: &Redis, count: usize, opts: Options) -> Vec<Gateway> {
    let gws: Vec<Gateway> = (1..=count).map(|n| gateway(redis, n, opts)).collect();
    for gw in &gws {
        wait_live(gw, count);
    }
    gws
}

/// Waits until `gw`'s view holds `n` live gateways (it reads the leases
/// every third of the lease time and says so nowhere but its view).
fn wait_live(gw: &Gateway, n: usize) {
    let seen = poll_until(EVENT_TIMEOUT, || {
        let status = gw.get_json("/api/cluster");
        (status["gateways"].as_array().map(Vec::len) == Some(n)).then_some(())
    });
    assert!(
        seen.is_some(),
        "never {n} live gateways: {}",
        gw.get("/api/cluster").body
    );
}

/// Agents connected to `gw` itself.
fn held(gw: &Gateway) -> u64 {
    gw.get_json("/api/gateway")["agents_connected"]
        .as_u64()
        .expect("a count")
}

fn serve(gw: &Gateway, names: &[&str], echo: &Service) -> AgentThread {
    let agents = names
        .iter()
        .map(|n| (gw.endpoint(KEY, n), Behaviour::Serve(echo.addr())))
        .collect();
    let (thread, results) = AgentThread::start_many(agents);
    for (name, r) in names.iter().zip(results) {
        r.unwrap_or_else(|e| panic!("{name} did not register: {e}"));
    }
    thread
}

#[test]
fn three_hundred_agents_spread_across_three_gateways_within_the_slack_and_each_lists_them_all() {
    let dir = TestDir::new("cluster-spread");
    let redis = Redis::start(&dir);
    let gws = cluster(&redis, 3, Options { spread: true, ..PINNED });
    let echo = Service::echo();
    let expected: BTreeSet<String> = (0..300).map(|i| format!("pc{i:03}")).collect();
    // Every agent dials gw1; gw1 keeps its share and sends the rest on.
    let agents = expected
        .iter()
        .map(|n| (gws[0].endpoint(KEY, n), Behaviour::Serve(echo.addr())))
        .collect();
    let (_agents, results) = AgentThread::start_in_waves(agents, 50);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let counts: Vec<u64> = gws.iter().map(held).collect();
    assert_eq!(counts.iter().sum::<u64>(), 300, "{counts:?}");
    // A share is 100; 20 % slack lets a gateway hold at most 120.
    for (i, n) in counts.iter().enumerate() {
        assert!((80..=120).contains(n), "gw{} holds {n} of 300: {counts:?}", i + 1);
    }
    let redirected = gws[0]
        .metrics()
        .sum("ringway_cluster_redirects_total", &[("kind", "agent")]) as u64;
    assert_eq!(
        redirected,
        300 - counts[0],
        "gw1 redirected every agent it did not keep"
    );
    for (i, gw) in gws.iter().enumerate() {
        let seen: BTreeSet<String> = names(&gw.endpoint(KEY, "ops")).into_iter().collect();
        assert_eq!(seen, expected, "browse on gw{}", i + 1);
        let listed = list(&gw.endpoint(KEY, "ops")).expect("browse");
        let elsewhere = listed.iter().filter(|a| a.gateway.is_some()).count() as u64;
        assert_eq!(
            elsewhere,
            300 - counts[i],
            "gw{}'s list names the holders of the others",
            i + 1
        );
    }
    // The operator's view of the cluster, from the real CLI, once gw2 has
    // read the held counts again (every second).
    let settled = poll_until(EVENT_TIMEOUT, || {
        let status = gws[1].get_json("/api/cluster");
        let sum: u64 = status["gateways"]
            .as_array()?
            .iter()
            .filter_map(|g| g["agents"].as_u64())
            .sum();
        (sum == 300).then_some(())
    });
    assert!(settled.is_some(), "{}", gws[1].get("/api/cluster").body);
    let admin = gws[1].admin().to_string();
    let out = run_bounded(
        ringway_command(&["status", "--cluster", "--admin", &admin]),
        b"",
        EVENT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("This gateway: gw2\nDirectory (Redis): up; leases read "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\nGateways (3)\n"), "{}", out.stdout);
    for (i, n) in counts.iter().enumerate() {
        let mark = if i == 1 { " *" } else { "" };
        let row = format!(
            "{:<20} {:<40} {:>8} {:>8}",
            format!("gw{}{mark}", i + 1),
            format!("http://{}", gws[i].addr()),
            n,
            0
        );
        assert!(out.stdout.contains(&row), "{row:?} in:\n{}", out.stdout);
    }
    // A session through a redirected agent: it joins where its channel is.
    let on_gw3 = list(&gws[2].endpoint(KEY, "ops"))
        .expect("browse")
        .into_iter()
        .find(|a| a.gateway.is_none())
        .expect("gw3 holds some");
    echo_round_trip(&gws[0].endpoint(KEY, "ops"), &on_gw3.name, b"spread and reached");
}

#[test]
fn a_control_on_any_gateway_reaches_an_agent_on_each_other_byte_exact() {
    let dir = TestDir::new("cluster-reach");
    let redis = Redis::start(&dir);
    let gws = cluster(&redis, 3, PINNED);
    let echo = Service::echo();
    let _agents: Vec<AgentThread> = gws
        .iter()
        .enumerate()
        .map(|(i, gw)| serve(gw, &[&format!("a{}", i + 1)], &echo))
        .collect();
    let mut prng = Prng::new(12);
    for (x, gw) in gws.iter().enumerate() {
        for y in (0..3).filter(|&y| y != x) {
            let payload = prng.bytes(256 * 1024 + x * 7 + y);
            echo_round_trip(&gw.endpoint(KEY, "ops"), &format!("a{}", y + 1), &payload);
        }
        let sent = gw
            .metrics()
            .sum("ringway_cluster_redirects_total", &[("kind", "control")]);
        assert_eq!(sent, 2.0, "gw{} sent its control to the two others", x + 1);
    }
    // The real control CLI through gw1 to the agent on gw3, follows the
    // redirect on its own.
    let (mut control, local) = spawn_control_binary(&gws[0].addr().to_string(), KEY, "ops-cli", "a3", &[]);
    let mut s = std::net::TcpStream::connect(local).expect("connect to the control's listener");
    s.set_read_timeout(Some(EVENT_TIMEOUT)).expect("timeout");
    let payload = prng.bytes(100_000);
    s.write_all(&payload).expect("send");
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).expect("echo");
    assert!(back == payload, "bytes through the CLI's redirected session differ");
    drop(s);
    control.kill();
    // An agent no gateway holds is a 404 everywhere.
    let (status, reason) = refusal(connect_std(&gws[1].endpoint(KEY, "ops"), "nobody"));
    assert_eq!((status, reason.as_str()), (404, "no client named nobody is connected"));
}

#[test]
fn a_killed_gateway_s_agents_vanish_from_browse_within_the_lease_and_reconnect_to_the_others() {
    let dir = TestDir::new("cluster-kill");
    let redis = Redis::start(&dir);
    let mut gws = cluster(&redis, 3, PINNED);
    let echo = Service::echo();
    let lost: Vec<String> = (0..10).map(|i| format!("lost{i}")).collect();
    let lost_refs: Vec<&str> = lost.iter().map(String::as_str).collect();
    let _stranded = serve(&gws[2], &lost_refs, &echo);
    // A real agent that has gw1 as its secondary.
    let mover = spawn_agent_binary(
        &gws[2].addr().to_string(),
        KEY,
        "mover",
        echo.addr(),
        &["--secondary", &gws[0].addr().to_string()],
    );
    mover.wait_for_line(&format!("registered with {}", gws[2].addr()), EVENT_TIMEOUT);
    let ops = gws[0].endpoint(KEY, "ops");
    assert_eq!(names(&ops).len(), 11);

    let killed_at = Instant::now();
    gws[2].kill();
    // Library agents do not reconnect: they vanish once gw3's lease is gone.
    let vanished = poll_until(Duration::from_secs(LEASE_SECS * 4), || {
        let now = names(&ops);
        (!now.iter().any(|n| n.starts_with("lost"))).then_some(now)
    });
    let elapsed = killed_at.elapsed();
    let now = vanished.unwrap_or_else(|| panic!("gw3's agents still listed {elapsed:?} after the kill"));
    eprintln!("gw3's agents left browse {:.1} s after kill -9", elapsed.as_secs_f64());
    // The real agent moved to gw1 and is reached through gw2.
    mover.wait_for_line(&format!("registered with {}", gws[0].addr()), EVENT_TIMEOUT);
    let seen = poll_until(EVENT_TIMEOUT, || {
        list(&gws[1].endpoint(KEY, "ops")).ok().filter(|l| {
            l.iter()
                .any(|a| a.name == "mover" && a.gateway.as_deref() == Some("gw1"))
        })
    });
    assert!(seen.is_some(), "mover never listed on gw1: {now:?}");
    echo_round_trip(&gws[1].endpoint(KEY, "ops"), "mover", b"moved and reached");
    assert_eq!(redis.cli(&["SCARD", "ringway:held:gw3"]), "0");
    assert_eq!(redis.cli(&["GET", "ringway:licence"]), "1");
}

#[test]
fn the_same_name_on_two_gateways_leaves_exactly_one() {
    let dir = TestDir::new("cluster-twin");
    let redis = Redis::start(&dir);
    let gws = cluster(&redis, 3, PINNED);
    let echo = Service::echo();
    let first = serve(&gws[0], &["twin"], &echo);
    let _second = serve(&gws[1], &["twin"], &echo);
    let (_, end) = first.wait_end(EVENT_TIMEOUT);
    assert_eq!(end, Ok(ChannelEnd::Bye("replaced".into())));
    gws[0].wait_for_event_prefix(
        "Client twin replaced: a new connection came to gateway gw2 (old one from ",
        EVENT_TIMEOUT,
    );
    for (i, gw) in gws.iter().enumerate() {
        let listed = poll_until(EVENT_TIMEOUT, || {
            let l = list(&gw.endpoint(KEY, "ops")).ok()?;
            (l.len() == 1).then_some(l)
        })
        .unwrap_or_else(|| panic!("gw{} does not list exactly one twin", i + 1));
        let holder = if i == 1 { None } else { Some("gw2") };
        assert_eq!(
            (listed[0].name.as_str(), listed[0].gateway.as_deref()),
            ("twin", holder)
        );
    }
    assert_eq!(held(&gws[0]), 0);
    assert_eq!(redis.cli(&["GET", "ringway:licence"]), "1");
    echo_round_trip(&gws[2].endpoint(KEY, "ops"), "twin", b"the newer twin");
}

#[test]
fn the_licence_holds_across_the_cluster_with_fifty_simultaneous_registrations() {
    let dir = TestDir::new("cluster-licence");
    let redis = Redis::start(&dir);
    let gws = cluster(
        &redis,
        3,
        Options {
            max_clients: Some(20),
            ..PINNED
        },
    );
    let echo = Service::echo();
    let results: Vec<(AgentThread, Vec<Result<(), ringway::client::ClientError>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = gws
            .iter()
            .enumerate()
            .map(|(g, gw)| {
                let agents: Vec<_> = (0..50)
                    .filter(|i| i % 3 == g)
                    .map(|i| (gw.endpoint(KEY, &format!("lic{i:02}")), Behaviour::Serve(echo.addr())))
                    .collect();
                s.spawn(move || AgentThread::start_many(agents))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("registrations")).collect()
    });
    let mut admitted = 0;
    for (_, rs) in &results {
        for r in rs {
            match r {
                Ok(()) => admitted += 1,
                Err(e) => assert!(
                    matches!(e, ringway::client::ClientError::Refused { status: 503, reason } if reason == "licensed maximum of 20 clients reached"),
                    "{e}"
                ),
            }
        }
    }
    assert_eq!(admitted, 20, "the cluster's licence is 20");
    assert_eq!(gws.iter().map(held).sum::<u64>(), 20);
    assert_eq!(redis.cli(&["GET", "ringway:licence"]), "20");
    assert_eq!(names(&gws[0].endpoint(KEY, "ops")).len(), 20);
}

#[test]
fn redis_killed_and_restarted_empty_keeps_local_service_and_rebuilds_the_cluster_view() {
    let dir = TestDir::new("cluster-redis-restart");
    let mut redis = Redis::start(&dir);
    let gws = cluster(&redis, 2, PINNED);
    let echo = Service::echo();
    let _r1 = serve(&gws[0], &["r1"], &echo);
    let _r2 = serve(&gws[1], &["r2"], &echo);
    let ops = gws[0].endpoint(KEY, "ops");
    assert_eq!(names(&ops), ["r1", "r2"]);
    let mut session = connect_std(&ops, "r1").expect("a local session");

    redis.kill();
    let down = gws[0].wait_for_event_prefix(
        &format!("Cluster directory unavailable ({}): ", redis.url()),
        EVENT_TIMEOUT,
    );
    assert!(down.ends_with("Serving this gateway's own clients only"), "{down}");
    // Local service goes on: the open session, a new one, browse.
    session.stream.write_all(b"still here").expect("write");
    let mut back = [0u8; 10];
    session.stream.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"still here");
    echo_round_trip(&ops, "r1", b"a new local session");
    assert_eq!(names(&ops), ["r1"]);
    let head = block_on(async {
        let conn = client::dial(&ops).await.expect("dial");
        client::request(&ops, &conn, "GET", proto::PATH_CLIENTS, &[])
            .await
            .map(|(h, _)| h)
    })
    .expect("browse");
    let partial = head.header("ringway-cluster-partial").unwrap_or_default();
    assert!(
        partial.starts_with("the cluster directory is unavailable: "),
        "{partial:?}"
    );
    let (status, reason) = refusal(connect_std(&ops, "r2"));
    assert_eq!(status, 503, "{reason}");
    assert!(
        reason.starts_with("no client of that name is here, and the cluster directory is unavailable: "),
        "{reason}"
    );
    assert_eq!(gws[0].metrics().sum("ringway_cluster_redis_up", &[]), 0.0);

    // Back, empty: each gateway writes its agents again.
    let redis = Redis::start_at(redis.socket());
    gws[0].wait_for_event(&available(&redis, 1, 1), EVENT_TIMEOUT);
    gws[1].wait_for_event(&available(&redis, 2, 1), EVENT_TIMEOUT);
    wait_live(&gws[0], 2);
    assert_eq!(names(&ops), ["r1", "r2"]);
    echo_round_trip(&ops, "r2", b"across the cluster again");
    assert_eq!(redis.cli(&["GET", "ringway:licence"]), "2");
    assert_eq!(gws[0].metrics().sum("ringway_cluster_redis_up", &[]), 1.0);
    session.stream.write_all(b"and still").expect("write");
    let mut back = [0u8; 9];
    session.stream.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"and still");
}

#[test]
fn a_draining_gateway_moves_its_agents_away_over_time_and_keeps_its_sessions() {
    let dir = TestDir::new("cluster-drain");
    let redis = Redis::start(&dir);
    let gws = cluster(
        &redis,
        3,
        Options {
            extra: "drain_secs = 2\n",
            ..PINNED
        },
    );
    let echo = Service::echo();
    let gw1 = gws[0].addr().to_string();
    let agents: Vec<LoggedChild> = (0..6)
        .map(|i| spawn_agent_binary(&gw1, KEY, &format!("d{i}"), echo.addr(), &[]))
        .collect();
    for a in &agents {
        a.wait_for_line(&format!("registered with {gw1} "), EVENT_TIMEOUT);
    }
    // A session through gw2 to d0 on gw1, open across the drain.
    let mut session = connect_std(&gws[1].endpoint(KEY, "ops"), "d0").expect("a session to d0");

    let reply = http_request(gws[0].admin(), "POST", "/api/drain");
    let said = "Draining gateway gw1: 6 clients are sent to the other gateways over 2 s; new clients go there too";
    assert_eq!((reply.status, reply.body.as_str()), (200, format!("{said}\n").as_str()));
    gws[0].wait_for_event(said, EVENT_TIMEOUT);
    let moved = poll_until(EVENT_TIMEOUT, || {
        let l = list(&gws[1].endpoint(KEY, "ops")).ok()?;
        (l.len() == 6 && l.iter().all(|a| a.gateway.as_deref() != Some("gw1"))).then_some(l)
    });
    assert!(moved.is_some(), "{:?}", list(&gws[1].endpoint(KEY, "ops")));
    assert_eq!(held(&gws[0]), 0);
    for i in 0..6 {
        assert_eq!(
            gws[0].count_events(&format!("Client d{i} Disconnected (moved: gateway draining)")),
            1
        );
    }
    session.stream.write_all(b"drained, not cut").expect("write");
    let mut back = [0u8; 16];
    session.stream.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"drained, not cut");
    // New agents dialling gw1 are sent on.
    let _late = serve(&gws[0], &["late"], &echo);
    let listed = list(&gws[0].endpoint(KEY, "ops")).expect("browse");
    let late = listed.iter().find(|a| a.name == "late").expect("late is listed");
    assert!(matches!(late.gateway.as_deref(), Some("gw2" | "gw3")), "{late:?}");
    let m = gws[0].metrics();
    assert_eq!(
        (
            m.sum("ringway_cluster_draining", &[]),
            m.sum("ringway_cluster_drained_total", &[])
        ),
        (1.0, 6.0)
    );

    let reply = http_request(gws[0].admin(), "POST", "/api/drain?stop");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Gateway gw1 stopped draining: it takes new clients again\n")
    );
    let serving = poll_until(EVENT_TIMEOUT, || {
        let status = gws[0].get_json("/api/cluster");
        let me = status["gateways"]
            .as_array()?
            .iter()
            .find(|g| g["id"] == "gw1")?
            .clone();
        (me["draining"] == false).then_some(())
    });
    assert!(serving.is_some());
    let _home = serve(&gws[0], &["home"], &echo);
    assert_eq!(held(&gws[0]), 1);
    let reply = http_request(gws[0].admin(), "POST", "/api/drain?later");
    assert_eq!(reply.status, 400, "{}", reply.body);
}

/// A TOTP secret (base32 of 20 bytes), as `ringway operator add --totp` makes.
const CAROL_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const CAROL_PASSWORD: &str = "carol likes codes";

/// Waits, if need be, until at least 5 s of the current 30 s TOTP step
/// remain: the clock is the only thing to wait for (no event says a step
/// began).
fn settled_step() -> u64 {
    loop {
        let now = common::unix_now();
        if now % 30 < 25 {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sign_in(ep: &Endpoint, code: &str) -> Result<Endpoint, ringway::client::ClientError> {
    let code = code.to_string();
    let mut give = move || Ok(Some(code.clone()));
    let t = block_on(client::login(ep, "carol", CAROL_PASSWORD.as_bytes(), &mut give))?;
    Ok(Endpoint {
        operator: Some(std::sync::Arc::new(t)),
        ..ep.clone()
    })
}

#[test]
fn a_totp_code_used_on_one_gateway_is_refused_on_the_others_and_one_ticket_works_on_all() {
    let dir = TestDir::new("cluster-operators");
    let redis = Redis::start(&dir);
    let (_homes, gws) = operated_cluster(&redis, "");
    for gw in &gws {
        wait_live(gw, 2);
    }
    let echo = Service::echo();
    let _pc = serve(&gws[1], &["pc"], &echo);
    let secret = TotpSecret::from_base32(CAROL_SECRET).expect("a secret");
    let code = totp::code_at(&secret, &totp::Params::DEFAULT, settled_step());
    let on_gw1 = sign_in(&gws[0].endpoint(KEY, "ops"), &code).expect("carol signs in on gw1");
    let (status, reason) = refusal(sign_in(&gws[1].endpoint(KEY, "ops"), &code));
    assert_eq!((status, reason.as_str()), (401, "sign-in refused: invalid-proof"));
    assert_eq!(
        gws[1]
            .metrics()
            .sum("ringway_sign_ins_total", &[("outcome", "replayed_code")]),
        1.0,
        "gw2 saw the code gw1 had accepted"
    );
    // gw1's ticket is good on gw2 (the same ticket key): browse there,
    // and a connect through gw1 that is redirected to gw2.
    let on_gw2 = Endpoint {
        gateway: gws[1].addr().to_string(),
        boot: Default::default(),
        ..on_gw1.clone()
    };
    assert_eq!(names(&on_gw2), ["pc"]);
    echo_round_trip(&on_gw1, "pc", b"one sign-in, two gateways");
}

#[test]
fn a_name_pinned_on_one_gateway_is_refused_to_another_machine_on_the_others_until_released() {
    let dir = TestDir::new("cluster-pins");
    let redis = Redis::start(&dir);
    let gws = cluster(&redis, 2, PINNED);
    let echo = Service::echo();
    let machine = |gw: &Gateway, id: &std::sync::Arc<AgentIdentity>| {
        let mut ep = gw.endpoint(KEY, "kiosk");
        ep.agent_key = Some(id.clone());
        ep
    };
    let (a, b) = (
        std::sync::Arc::new(AgentIdentity::generate()),
        std::sync::Arc::new(AgentIdentity::generate()),
    );
    let first = AgentThread::start(machine(&gws[0], &a), Behaviour::Serve(echo.addr())).expect("a takes kiosk");
    let taken = "the name kiosk is taken by another machine (its agent key differs); \
                 choose another name, or ask the administrator to release it";
    let (status, reason) = refusal(AgentThread::start(machine(&gws[1], &b), Behaviour::Serve(echo.addr())));
    assert_eq!((status, reason.as_str()), (409, taken));
    gws[1].wait_for_event_prefix(
        "Client kiosk refused: the name is pinned to another machine's agent key in the cluster (key key1); new connection from ",
        EVENT_TIMEOUT,
    );
    // a keeps its name and its gateway.
    let listed = list(&gws[1].endpoint(KEY, "ops")).expect("browse");
    assert_eq!(
        listed
            .iter()
            .map(|x| (x.name.as_str(), x.gateway.as_deref()))
            .collect::<Vec<_>>(),
        [("kiosk", Some("gw1"))]
    );
    echo_round_trip(&gws[1].endpoint(KEY, "ops"), "kiosk", b"still a's");

    // Released on gw2: in Redis and, by message, in gw1's own store.
    let reply = http_request(gws[1].admin(), "POST", "/api/agents/forget?name=kiosk");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "released the pin of client kiosk in the cluster\n")
    );
    gws[0].wait_for_event(
        "Client kiosk (key key1): name pin released by the administrator of another gateway",
        EVENT_TIMEOUT,
    );
    let _second = AgentThread::start(machine(&gws[1], &b), Behaviour::Serve(echo.addr())).expect("b takes kiosk now");
    let (_, end) = first.wait_end(EVENT_TIMEOUT);
    assert_eq!(end, Ok(ChannelEnd::Bye("replaced".into())));
    let (status, reason) = refusal(AgentThread::start(machine(&gws[0], &a), Behaviour::Serve(echo.addr())));
    assert_eq!((status, reason.as_str()), (409, taken), "a is refused on gw1 now");
}

/// Two gateways with carol (password and TOTP, `totp = "required"`) and
/// one ticket key, `extra` added to their `[cluster]`; their folders
/// first, to be dropped after them.
fn operated_cluster(redis: &Redis, extra: &str) -> (Vec<TestDir>, Vec<Gateway>) {
    // argon2's floor, so a sign-in costs tens of milliseconds.
    let params = Argon2Params {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };
    let verifier = Verifier::generate(CAROL_PASSWORD.as_bytes(), &params)
        .expect("a verifier")
        .to_text();
    let block = format!(
        "[auth]\ntotp = \"required\"\n[[operators]]\nname = \"carol\"\nverifier = {verifier:?}\ntotp_secret = {CAROL_SECRET:?}\n"
    );
    // One ticket key for both, copied as docs/CLUSTER.md says.
    let ticket_key = format!("{}\n", "5a".repeat(32));
    // Each gateway's folder (config, state) outlives it: declared first,
    // dropped last.
    let homes: Vec<TestDir> = (1..=2)
        .map(|n| TestDir::new(&format!("cluster-operators-gw{n}")))
        .collect();
    let gws: Vec<Gateway> = homes
        .iter()
        .enumerate()
        .map(|(i, home)| {
            let n = i + 1;
            let state = home.join("state");
            std::fs::create_dir_all(&state).expect("state folder");
            std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("mode");
            let key = state.join("ticket.key");
            std::fs::write(&key, &ticket_key).expect("ticket key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("mode");
            let mut config = GatewayConfig::operated(&[KEY]);
            config.listen = vec![SocketAddr::from((Ipv4Addr::new(127, 0, 0, n as u8), 0))];
            config.tail.push(block.clone());
            config.tail.push(format!(
                "[cluster]\nredis = {:?}\nid = \"gw{n}\"\nlease_secs = {LEASE_SECS}\nspread = false\n{extra}",
                redis.url()
            ));
            let gw = Gateway::start_in(home, &config);
            gw.wait_for_event(&available(redis, n, 0), EVENT_TIMEOUT);
            gw
        })
        .collect();
    (homes, gws)
}

#[test]
fn with_relay_a_control_on_any_gateway_reaches_every_agent_through_its_own_gateway() {
    let dir = TestDir::new("cluster-relay");
    let redis = Redis::start(&dir);
    let gws = cluster(
        &redis,
        3,
        Options {
            extra: "cross = \"relay\"\n",
            ..PINNED
        },
    );
    let echo = Service::echo();
    let _agents: Vec<AgentThread> = gws
        .iter()
        .enumerate()
        .map(|(i, gw)| serve(gw, &[&format!("a{}", i + 1)], &echo))
        .collect();
    let mut prng = Prng::new(13);
    for (x, gw) in gws.iter().enumerate() {
        for y in (0..3).filter(|&y| y != x) {
            let payload = prng.bytes(512 * 1024 + x * 3 + y);
            echo_round_trip(&gw.endpoint(KEY, "ops"), &format!("a{}", y + 1), &payload);
        }
        let m = gw.metrics();
        assert_eq!(
            (
                m.sum("ringway_cluster_relays_total", &[]),
                m.sum("ringway_cluster_redirects_total", &[("kind", "control")])
            ),
            (2.0, 0.0),
            "gw{} relayed its two cross connects and redirected none",
            x + 1
        );
        gw.wait_for_event(
            &format!(
                "Control ops connected to Client a{} (relayed to its gateway)",
                (x + 1) % 3 + 1
            ),
            EVENT_TIMEOUT,
        );
    }
    // A connect a gateway relayed is not relayed again.
    let (status, reason) = {
        let ep = gws[0].endpoint(KEY, "ops");
        let head = block_on(async {
            let conn = client::dial(&ep).await.expect("dial");
            let extra = [
                ("Upgrade", proto::UPGRADE_RELAY.to_string()),
                ("Connection", "Upgrade".to_string()),
                (proto::H_RELAYED_WRITTEN, "gw9".to_string()),
            ];
            client::request(&ep, &conn, "GET", "/v1/connect/a2", &extra)
                .await
                .map(|(h, _)| h)
        })
        .expect("an answer");
        (head.status, head.reason)
    };
    assert_eq!((status, reason.as_str()), (404, "Not Found"));
}

#[test]
fn with_relay_an_operator_s_ticket_reaches_an_agent_on_another_gateway() {
    let dir = TestDir::new("cluster-relay-operator");
    let redis = Redis::start(&dir);
    let (_homes, gws) = operated_cluster(&redis, "cross = \"relay\"\n");
    for gw in &gws {
        wait_live(gw, 2);
    }
    let echo = Service::echo();
    let _pc = serve(&gws[1], &["pc"], &echo);
    let secret = TotpSecret::from_base32(CAROL_SECRET).expect("a secret");
    let code = totp::code_at(&secret, &totp::Params::DEFAULT, settled_step());
    let carol = sign_in(&gws[0].endpoint(KEY, "ops"), &code).expect("carol signs in on gw1");
    echo_round_trip(&carol, "pc", b"relayed with carol's ticket");
    assert_eq!(gws[0].metrics().sum("ringway_cluster_relays_total", &[]), 1.0);
    // Without a ticket, gw1 refuses before anything is relayed.
    let (status, _) = refusal(connect_std(&gws[0].endpoint(KEY, "ops"), "pc"));
    assert_eq!(status, 401);
    assert_eq!(gws[0].metrics().sum("ringway_cluster_relays_total", &[]), 1.0);
}
