//! A primary and a secondary gateway: the health probe and the role,
//! agents failing over when the primary dies or goes silent and failing
//! back once it has stayed up for the hold-down, sessions that survive the
//! move byte for byte, and controls that find agents on either gateway.
//! Real `ringway` binaries throughout, with a small CMPI.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    COMMAND_TIMEOUT, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, LoggedChild, Prng, Service, TlsRig, block_on,
    connect_std, echo_round_trip, http_exchange, is_listening, names, plain_binding, poll_until, read_hashed, refusal,
    ringway_client, ringway_command, run_bounded, spawn_agent_binary, spawn_control_binary,
};
use ring::digest;
use ringway::client::{AgentChannel, AgentInfo};
use ringway::proto::Move;

const KEY: &str = "Testing1";

/// The poll interval of both gateways: small, so a test sees several.
const CMPI_SECS: u64 = 5;

/// Agents probe their primary every second (jittered 0.5-1 s) and come
/// back after it has answered for two: short, so the tests are quick.
const PROBE_SECS: &str = "1";
const HOLD_DOWN_SECS: u64 = 2;

/// Agents in the kill -9 test. The issue asks for 200; 50 keeps the test
/// within the CPU two shared cores have (each is a process of its own).
const AGENTS: usize = 200;

/// A primary and a secondary on loopback; the primary's config, so it can
/// be started again on the same port.
struct Pair {
    primary: Option<Gateway>,
    secondary: Gateway,
    primary_config: GatewayConfig,
    primary_addr: SocketAddr,
}

impl Pair {
    fn start() -> Pair {
        let mut primary_config = GatewayConfig::new(&[KEY]);
        primary_config.cmpi_secs = Some(CMPI_SECS);
        primary_config.admin = true;
        let primary = Gateway::start(&primary_config);
        let primary_addr = primary.addr();
        primary_config.listen = vec![primary_addr];
        let mut secondary_config = GatewayConfig::new(&[KEY]);
        secondary_config.cmpi_secs = Some(CMPI_SECS);
        secondary_config.admin = true;
        secondary_config.role = Some("secondary");
        Pair {
            primary: Some(primary),
            secondary: Gateway::start(&secondary_config),
            primary_config,
            primary_addr,
        }
    }

    fn primary(&self) -> &Gateway {
        // Invariant: tests ask for the primary only while it runs.
        self.primary.as_ref().expect("the primary is running")
    }

    /// `--gateway P --secondary S` and the short probe settings.
    fn agent_args(&self) -> Vec<String> {
        vec![
            "--secondary".into(),
            self.secondary.addr().to_string(),
            "--probe-secs".into(),
            PROBE_SECS.into(),
            "--hold-down-secs".into(),
            HOLD_DOWN_SECS.to_string(),
        ]
    }

    /// Starts `ringway agent` with [`Pair::agent_args`]; an option in
    /// `extra` replaces its default there.
    fn spawn_agent(&self, name: &str, expose: SocketAddr, extra: &[&str]) -> LoggedChild {
        let mut args: Vec<String> = Vec::new();
        for pair in self.agent_args().chunks(2) {
            if !extra.contains(&pair[0].as_str()) {
                args.extend_from_slice(pair);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_agent_binary(&self.primary_addr.to_string(), KEY, name, expose, &args)
    }

    /// Starts agent `name` (see [`Pair::spawn_agent`]) and waits until it
    /// holds its channel with the primary.
    fn agent_on_primary(&self, name: &str, expose: SocketAddr, extra: &[&str]) -> LoggedChild {
        let agent = self.spawn_agent(name, expose, extra);
        self.primary()
            .wait_for_event(&format!("Client {name} connected"), EVENT_TIMEOUT);
        self.wait_on_primary(&agent);
        agent
    }

    /// Kills the primary and waits for agent `name` to fail over.
    fn kill_and_fail_over(&mut self, name: &str) {
        self.kill_primary();
        let from = format!("Client {name} connected (failover from {})", self.primary_addr);
        self.secondary.wait_for_event(&from, EVENT_TIMEOUT);
    }

    /// Waits until `agent` has its channel with the primary: the gateway
    /// logs an arrival before its `101`, so only the agent's own line says
    /// the registration is complete.
    fn wait_on_primary(&self, agent: &LoggedChild) {
        agent.wait_for_line(&format!("registered with {} ", self.primary_addr), EVENT_TIMEOUT);
    }

    /// Kills the primary (SIGKILL) and waits until its port is free.
    fn kill_primary(&mut self) {
        if let Some(mut p) = self.primary.take() {
            p.kill();
        }
        // The kernel tears a killed process's io_uring listeners down a
        // few milliseconds after it is gone.
        let addr = self.primary_addr;
        assert!(
            poll_until(EVENT_TIMEOUT, || (!is_listening(addr)).then_some(())).is_some(),
            "the killed primary's listeners never went away"
        );
    }

    /// Starts the primary again on its port, while agents probe it.
    fn restart_primary(&mut self) -> Instant {
        let gw = Gateway::start_while_agents_dial(&self.primary_config);
        assert_eq!(gw.addr(), self.primary_addr);
        self.primary = Some(gw);
        Instant::now()
    }

    /// `ringway control ls --json --gateway P --secondary S`: each agent's
    /// name and the gateway it is listed on, as the merged list gives them.
    fn merged_ls(&self) -> Vec<(String, String)> {
        let (p, s) = (self.primary_addr.to_string(), self.secondary.addr().to_string());
        let cmd = ringway_client(
            KEY,
            &[
                "control",
                "ls",
                "--json",
                "--as",
                "lister",
                "--gateway",
                &p,
                "--secondary",
                &s,
            ],
        );
        let done = run_bounded(cmd, b"", COMMAND_TIMEOUT);
        assert!(done.success(), "control ls failed: {}", done.stderr);
        let value: serde_json::Value =
            serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", done.stdout));
        let array = value
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", done.stdout));
        array
            .iter()
            .map(|a| {
                let field = |k: &str| a[k].as_str().unwrap_or_else(|| panic!("no {k} in {a}")).to_string();
                (field("name"), field("gateway"))
            })
            .collect()
    }
}

/// Names of `n` agents.
fn agent_names(n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("pc{i:03}")).collect();
    v.sort();
    v
}

/// Waits until `gw` lists exactly `want` (sorted); the time it took.
fn wait_listed(gw: &Gateway, want: &[String], timeout: Duration) -> Duration {
    let start = Instant::now();
    let ep = gw.endpoint(KEY, "watcher");
    let seen = poll_until(timeout, || {
        let mut got = names(&ep);
        got.sort();
        (got == want).then_some(())
    });
    assert!(
        seen.is_some(),
        "{} never listed the {} agents; it lists {:?}",
        gw.addr(),
        want.len(),
        names(&ep)
    );
    start.elapsed()
}

#[test]
fn the_health_probe_answers_role_and_boot_without_a_log_line() {
    let pair = Pair::start();
    let s = &pair.secondary;
    let request = format!("GET /v1/health HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr());
    let lines_before = s.lines().len();
    for _ in 0..3 {
        let reply = http_exchange(s.addr(), &request);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let boot = reply.header("ringway-boot").expect("a Ringway-Boot header").to_string();
        assert_eq!(reply.body, format!("{{\"role\":\"secondary\",\"boot\":\"{boot}\"}}\n"));
    }
    let primary = http_exchange(pair.primary_addr, &request);
    assert!(primary.body.starts_with("{\"role\":\"primary\","), "{}", primary.body);
    assert_eq!(s.lines().len(), lines_before, "a probe writes no line: {:?}", s.lines());
    s.wait_metric("ringway_health_probes_total", 3);

    // A secondary with no agents is in standby; with one, it is not.
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains("\nringway_role{role=\"secondary\"} 1\n"), "{metrics}");
    assert!(metrics.contains("\nringway_standby 1\n"), "{metrics}");
    assert!(s.get("/").body.contains("<b id=\"role\">secondary (standby)</b>"));
    let status = |gw: &Gateway| {
        let admin = gw.admin().to_string();
        let done = run_bounded(ringway_command(&["status", "--admin", &admin]), b"", COMMAND_TIMEOUT);
        assert!(done.success(), "{}", done.stderr);
        done.stdout.lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(status(s), "Role: secondary (standby)");
    assert_eq!(status(pair.primary()), "Role: primary");
    let echo = Service::echo();
    let _agent = s.serving_agent(KEY, "pc1", echo.addr());
    assert!(s.get("/metrics").body.contains("\nringway_standby 0\n"));
    assert_eq!(status(s), "Role: secondary");
}

#[test]
fn the_health_probe_answers_over_tls_and_when_tls_is_required() {
    let rig = TlsRig::start(KEY, true);
    let ep = rig.endpoint("prober");
    let answer = block_on(ringway::client::health(&ep)).unwrap_or_else(|e| panic!("probe over TLS: {e}"));
    assert_eq!(answer.role, "primary");
    assert_eq!(answer.boot.len(), 32, "{answer:?}");
    rig.gw.wait_metric("ringway_health_probes_total", 1);
    // Plain HTTP to a gateway that requires TLS is no answer to go home to.
    let plain = rig.gw.endpoint(KEY, "prober");
    let (status, _) = refusal(block_on(ringway::client::health(&plain)));
    assert_eq!(status, 403);
}

#[test]
fn a_gateway_older_than_the_probe_counts_as_up() {
    // What a gateway without /v1/health answers: 404, with its boot id.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let boot = "0123456789abcdef0123456789abcdef";
    let server = std::thread::spawn(move || {
        for answer in [
            format!("HTTP/1.1 404 Not Found\r\nRingway-Boot: {boot}\r\nContent-Length: 17\r\n\r\nno such endpoint\n"),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n".to_string(),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
        ] {
            let (mut s, _) = listener.accept().expect("accept");
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).expect("read the probe");
            s.write_all(answer.as_bytes()).expect("answer");
        }
    });
    let ep = common::endpoint(addr, KEY, "prober");
    let up = block_on(ringway::client::health(&ep)).expect("a 404 with a boot id is up");
    assert_eq!((up.role.as_str(), up.boot.as_str()), ("", boot));
    assert_eq!(refusal(block_on(ringway::client::health(&ep))).0, 503);
    assert_eq!(
        refusal(block_on(ringway::client::health(&ep))).0,
        404,
        "no boot id: not a gateway"
    );
    server.join().expect("the fake gateway");
}

#[test]
fn a_reload_changes_the_role_live() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.admin = true;
    let gw = Gateway::start(&config);
    let role = || {
        block_on(ringway::client::health(&gw.endpoint(KEY, "p")))
            .expect("a health answer")
            .role
    };
    assert_eq!(role(), "primary");
    config.listen = vec![gw.addr()];
    config.role = Some("secondary");
    gw.rewrite(&config);
    gw.reload_by_sighup();
    assert_eq!(role(), "secondary");
    assert!(gw.get("/metrics").body.contains("\nringway_standby 1\n"));
}

#[test]
fn a_hostile_previous_header_is_ignored() {
    let pair = Pair::start();
    let s = &pair.secondary;
    let ep = s.endpoint(KEY, "pc1");
    // Too long, not ASCII, an unknown move: the arrival is logged plainly.
    let long = "g".repeat(ringway::proto::MAX_PREVIOUS_CHARS + 1);
    for (n, (kind, from)) in [(Move::Failover, long.as_str()), (Move::Failback, "gw-\u{e9}")]
        .into_iter()
        .enumerate()
    {
        let channel = block_on(AgentChannel::register_moved(
            &ep,
            &AgentInfo::default(),
            Some((kind, from)),
        ))
        .unwrap_or_else(|e| panic!("registration failed: {e}"));
        s.wait_for_events("Client pc1 connected", n + 1, EVENT_TIMEOUT);
        drop(channel);
        s.wait_for_events("Client pc1 Disconnected", n + 1, EVENT_TIMEOUT);
    }
    let events = s.events();
    assert!(!events.iter().any(|e| e.contains("(fail")), "{events:?}");

    // Two of them: refused like any doubled header the gateway acts on.
    let extra = [
        ("Upgrade", ringway::proto::UPGRADE_AGENT.to_string()),
        ("Connection", "Upgrade".to_string()),
        ("Ringway-Previous", "failover a".to_string()),
        ("Ringway-Previous", "failover b".to_string()),
    ];
    let head = ringway::client::request_head(&ep, plain_binding(&ep), "GET", ringway::proto::PATH_REGISTER, &extra);
    let mut sock = TcpStream::connect(s.addr()).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("a read timeout");
    sock.write_all(&head).expect("send");
    let mut answer = String::new();
    sock.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nduplicate Ringway-Previous header\n"),
        "{answer:?}"
    );
}

#[test]
fn kill_9_the_primary_then_restart_it_agents_fail_over_and_back() {
    let mut pair = Pair::start();
    let echo = Service::echo();
    let want = agent_names(AGENTS);
    let agents: Vec<LoggedChild> = want.iter().map(|n| pair.spawn_agent(n, echo.addr(), &[])).collect();
    agents.iter().for_each(|a| pair.wait_on_primary(a));
    wait_listed(pair.primary(), &want, EVENT_TIMEOUT);
    let on_primary = pair.merged_ls();
    assert_eq!(on_primary.len(), AGENTS);
    assert!(
        on_primary.iter().all(|(_, gw)| *gw == pair.primary_addr.to_string()),
        "{on_primary:?}"
    );

    // kill -9: every agent is on the secondary within 5 s.
    pair.kill_primary();
    let took = wait_listed(&pair.secondary, &want, EVENT_TIMEOUT);
    assert!(took <= Duration::from_secs(5), "failover took {took:?}");
    eprintln!("{AGENTS} agents listed on the secondary {took:?} after the kill");
    let from = format!("(failover from {})", pair.primary_addr);
    for name in &want {
        assert_eq!(
            pair.secondary.count_events(&format!("Client {name} connected {from}")),
            1,
            "{name}"
        );
    }
    let merged = pair.merged_ls();
    assert_eq!(merged.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), want);
    assert!(merged.iter().all(|(_, gw)| *gw == pair.secondary.addr().to_string()));

    // The primary returns on its port: every agent comes back within a
    // CMPI and the hold-down, registering there before it leaves the
    // secondary, so every merged listing meanwhile shows each agent once.
    let back = pair.restart_primary();
    let bound = Duration::from_secs(CMPI_SECS + HOLD_DOWN_SECS);
    let primary_ep = pair.primary().endpoint(KEY, "watcher");
    let mut listings = 0;
    loop {
        let merged = pair.merged_ls();
        listings += 1;
        let names_seen: Vec<String> = merged.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names_seen, want, "a merged listing during the failback");
        let mut home = names(&primary_ep);
        home.sort();
        if home == want {
            break;
        }
        assert!(
            back.elapsed() <= bound + Duration::from_secs(5),
            "not all back after {:?}",
            back.elapsed()
        );
    }
    assert!(listings >= 1);
    let from = format!("(failback from {})", pair.secondary.addr());
    for name in &want {
        pair.secondary
            .wait_for_event(&format!("Client {name} Disconnected (failback)"), EVENT_TIMEOUT);
        assert_eq!(
            pair.primary().count_events(&format!("Client {name} connected {from}")),
            1,
            "{name}"
        );
    }
    let arrived = back.elapsed();
    assert!(arrived <= bound + Duration::from_secs(5), "failback took {arrived:?}");
    eprintln!("{AGENTS} agents back on the primary {arrived:?} after its start ({listings} merged listings meanwhile)");
    wait_listed(&pair.secondary, &[], EVENT_TIMEOUT);
    assert!(pair.secondary.get("/metrics").body.contains("\nringway_standby 1\n"));
}

/// Streams seeded bytes into `w` in small paced chunks until `stop` is
/// set and `after` more bytes have gone, then half-closes; the count and
/// SHA-256 of what it sent.
fn stream_until(mut w: TcpStream, seed: u64, stop: Arc<AtomicBool>, after: usize) -> (usize, Vec<u8>) {
    const STEP: usize = 16 * 1024;
    let mut prng = Prng::new(seed);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let (mut sent, mut since_stop) = (0usize, 0usize);
    while since_stop < after {
        let chunk = prng.bytes(STEP);
        w.write_all(&chunk).expect("send through the session");
        ctx.update(&chunk);
        sent += STEP;
        if stop.load(Ordering::SeqCst) {
            since_stop += STEP;
        }
        // Paced, so bytes are still flowing when the agent moves.
        std::thread::sleep(Duration::from_millis(5));
    }
    w.shutdown(Shutdown::Write).expect("half-close");
    (sent, ctx.finish().as_ref().to_vec())
}

#[test]
fn a_session_through_the_secondary_keeps_relaying_while_its_agent_fails_back() {
    let mut pair = Pair::start();
    let service = Service::manual();
    let agent = pair.agent_on_primary("mover", service.addr(), &[]);
    pair.kill_and_fail_over("mover");

    // A session through the secondary, bytes flowing both ways.
    let session = connect_std(&pair.secondary.endpoint(KEY, "ctl"), "mover").expect("connect via the secondary");
    let service_end = service.accept(EVENT_TIMEOUT);
    service_end.set_read_timeout(Some(IO_TIMEOUT)).expect("a read timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let clone = |s: &TcpStream| s.try_clone().expect("clone a socket");
    let (c_stop, s_stop) = (stop.clone(), stop.clone());
    let control_w = clone(&session.stream);
    let service_w = clone(&service_end);
    let control_tx = std::thread::spawn(move || stream_until(control_w, 11, c_stop, 1 << 20));
    let service_tx = std::thread::spawn(move || stream_until(service_w, 22, s_stop, 1 << 20));
    let (mut control_r, early) = (clone(&session.stream), session.early);
    let mut service_r = clone(&service_end);
    let control_rx = std::thread::spawn(move || read_hashed(&mut control_r, &early).expect("read the service's bytes"));
    let service_rx = std::thread::spawn(move || read_hashed(&mut service_r, &[]).expect("read the control's bytes"));

    // The primary returns; the agent moves its channel home meanwhile.
    pair.restart_primary();
    let from_secondary = format!("Client mover connected (failback from {})", pair.secondary.addr());
    pair.primary().wait_for_event(&from_secondary, EVENT_TIMEOUT);
    pair.secondary
        .wait_for_event("Client mover Disconnected (failback)", EVENT_TIMEOUT);
    agent.wait_for_line("moved back to", EVENT_TIMEOUT);
    stop.store(true, Ordering::SeqCst);

    let (to_service, to_service_digest) = control_tx.join().expect("control sender");
    let (to_control, to_control_digest) = service_tx.join().expect("service sender");
    assert_eq!(
        service_rx.join().expect("service reader"),
        (to_service, to_service_digest)
    );
    assert_eq!(
        control_rx.join().expect("control reader"),
        (to_control, to_control_digest)
    );
    assert!(to_service >= 1 << 20 && to_control >= 1 << 20);

    // New sessions go through the primary; the secondary no longer has it.
    let echo_ctl = pair.primary().endpoint(KEY, "ctl2");
    let session = connect_std(&echo_ctl, "mover").expect("a new session through the primary");
    let mut end = service.accept(EVENT_TIMEOUT);
    let mut control = session.stream;
    control.write_all(b"new way").expect("send");
    let mut got = [0u8; 7];
    end.read_exact(&mut got).expect("the service reads");
    assert_eq!(&got, b"new way");
    let (status, _) = refusal(connect_std(&pair.secondary.endpoint(KEY, "ctl3"), "mover"));
    assert_eq!(status, 404);
}

#[test]
fn a_silent_primary_is_left_within_dead_after() {
    let pair = Pair::start();
    let echo = Service::echo();
    let dead_after = 3;
    let _agent = pair.agent_on_primary("quiet", echo.addr(), &["--dead-after", &dead_after.to_string()]);
    // SIGSTOP: the socket stays open, the kernel still acks, nothing answers.
    pair.primary().signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let from = format!("Client quiet connected (failover from {})", pair.primary_addr);
    pair.secondary.wait_for_event(&from, EVENT_TIMEOUT);
    // The documented bound: dead_after, then the first pause of the quick
    // ladder (at most 1 s), then the registration on the secondary.
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_secs(dead_after + 1 + 2),
        "the agent left the silent primary after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(dead_after) - Duration::from_millis(1500),
        "left too early: {took:?}"
    );
    pair.primary().signal(libc::SIGCONT);
}

#[test]
fn a_flapping_primary_does_not_make_agents_flap() {
    let mut pair = Pair::start();
    let echo = Service::echo();
    let hold = 4;
    let _agent = pair.agent_on_primary("steady", echo.addr(), &["--hold-down-secs", &hold.to_string()]);
    pair.kill_primary();
    pair.secondary.wait_for_event(
        &format!("Client steady connected (failover from {})", pair.primary_addr),
        EVENT_TIMEOUT,
    );

    // Up 2 s, down 2 s, three times: never up for the hold-down.
    for _ in 0..3 {
        pair.restart_primary();
        let up = Instant::now();
        while up.elapsed() < Duration::from_secs(2) {
            assert_eq!(
                names(&pair.primary().endpoint(KEY, "w")),
                Vec::<String>::new(),
                "moved to a flapping primary"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let events = pair.primary().events();
        assert!(!events.iter().any(|e| e.starts_with("Client steady")), "{events:?}");
        pair.kill_primary();
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(pair.secondary.count_events("Client steady Disconnected (failback)"), 0);

    // Up for good: back after the hold-down, not before.
    let back = pair.restart_primary();
    pair.primary().wait_for_event(
        &format!("Client steady connected (failback from {})", pair.secondary.addr()),
        EVENT_TIMEOUT,
    );
    let took = back.elapsed();
    assert!(
        took >= Duration::from_secs(hold),
        "came back after {took:?}, within the hold-down"
    );
}

#[test]
fn control_ls_and_connect_work_with_the_primary_down() {
    let mut pair = Pair::start();
    let echo = Service::echo();
    let _agent = pair.agent_on_primary("far", echo.addr(), &[]);
    let (p, s) = (pair.primary_addr.to_string(), pair.secondary.addr().to_string());

    // Both up, the agent on the primary: connect goes there.
    let (_control, local) = spawn_control_binary(&p, KEY, "ctl", "far", &["--secondary", &s]);
    round_trip(local, b"via the primary");
    pair.primary()
        .wait_for_event("Control ctl connected to Client far", EVENT_TIMEOUT);

    pair.kill_and_fail_over("far");
    assert_eq!(pair.merged_ls(), vec![("far".to_string(), s.clone())]);
    let table = run_bounded(
        ringway_client(
            KEY,
            &["control", "ls", "--as", "lister", "--gateway", &p, "--secondary", &s],
        ),
        b"",
        COMMAND_TIMEOUT,
    );
    assert!(table.success(), "{}", table.stderr);
    let row = table.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.starts_with("far ") && row.contains(&s), "{}", table.stdout);
    assert!(
        table.stderr.contains(&format!("cannot list the agents of {p}")),
        "{}",
        table.stderr
    );

    // The same control, its primary gone, reaches the agent through the
    // secondary.
    round_trip(local, b"via the secondary");
    pair.secondary
        .wait_for_event("Control ctl connected to Client far", EVENT_TIMEOUT);
    echo_round_trip(&pair.secondary.endpoint(KEY, "lib"), "far", b"still here");
}

/// One session through a `control connect --listen` at `local`: the echo
/// of `payload`.
fn round_trip(local: SocketAddr, payload: &[u8]) {
    let mut s = TcpStream::connect(local).expect("connect to the control");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("a read timeout");
    s.write_all(payload).expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the echo");
    assert_eq!(back, payload);
}

/// `ringway agent --config FILE`: the same settings as the command line,
/// the secondary among them; an agent started from a file alone
/// registers with its primary, fails over to the secondary from the
/// file when the primary dies, and serves sessions there.
#[test]
fn an_agent_configured_by_file_fails_over_to_the_secondary_it_names() {
    let mut primary = Gateway::start(&GatewayConfig::new(&[KEY]));
    let secondary = Gateway::start(&GatewayConfig::new(&[KEY]));
    let service = Service::echo();
    let dir = common::TestDir::new("agent-file");
    std::fs::write(dir.join("agent.key"), format!("{KEY}\n")).expect("key file");
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "gateway = \"{}\"\nsecondary = [\"{}\"]\nkey_file = \"agent.key\"\nname = \"filed\"\nexpose = \"{}\"\nstate_dir = \"state\"\n",
            primary.addr(),
            secondary.addr(),
            service.addr()
        ),
    )
    .expect("agent config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.arg("agent")
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .env_remove("RINGWAY_KEY");
    let agent = LoggedChild::spawn("agent filed", cmd);
    primary.wait_for_event("Client filed connected", EVENT_TIMEOUT);
    // The gateway logs the arrival before its 101: kill it only once the
    // agent holds the channel, or the agent saw a failed registration, not
    // a lost channel, and arrives on the secondary as a newcomer.
    agent.wait_for_line(&format!("registered with {} ", primary.addr()), EVENT_TIMEOUT);
    primary.kill();
    secondary.wait_for_event_prefix("Client filed connected (failover from ", EVENT_TIMEOUT);
    echo_round_trip(
        &secondary.endpoint(KEY, "ops"),
        "filed",
        b"through the secondary from the file",
    );
}
