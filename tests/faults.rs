//! Faults the gateway must live through: a lossy, reordering, slow network
//! between control, gateway and agent; the open-file limit; and peers that
//! reset a session mid-transfer.
//!
//! The network test builds its own namespaces and needs root (CI runs as
//! root, with the iproute2 and iptables packages); without them it fails,
//! saying so, rather than skipping.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    AgentThread, Behaviour, DelayProxy, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, Impairment, Netns, Service,
    StdSession, assert_byte_exact_both_ways, both_ended, connect_std, dropped, echo_round_trip, endpoint, held_back,
    impair, limit_open_files, poll_until, reset, stream_until, veth, wait_readable,
};

const KEY: &str = "Testing1";

// ---- a lossy, reordering, slow network ----

/// Share of packets dropped on leaving each veth end: the 1 %.
const LOSS: f64 = 0.01;

/// Share of packets held back behind the others on each veth end: the
/// issue's 5 %.
const REORDER: f64 = 0.05;

/// Latency the delay proxy adds to each direction: the 5 ms.
const DELAY: Duration = Duration::from_millis(5);

/// Bytes sent each way at once.
const BULK: usize = 64 << 20;

/// Bound of the whole exchange; it takes about 14 s here in a debug build.
const BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// Fewest packets each loss rule must have dropped. Every veth end sends
/// about 50,000 packets (one direction's 64 MiB in 1448-byte segments and
/// the other's acknowledgements), so 1 % is some 500 (measured: 490-530);
/// under 100 means the rule did not apply.
const MIN_DROPPED: u64 = 100;

/// Fewest packets each reorder rule must have held back: 5 % of the same
/// 50,000 is 2,500 (measured: 2,500-2,700).
const MIN_HELD_BACK: u64 = 1_000;

// Addresses of the two veths: control ↔ gateway, agent ↔ gateway.
const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const GATEWAY_CONTROL_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
const GATEWAY_AGENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

/// Control, gateway and agent each in a namespace of its own, joined by
/// two veths whose four ends drop 1 % and reorder 5 % of what they send;
/// control and agent reach the gateway through a proxy that delays each
/// direction by 5 ms. 64 MiB each way at once arrive byte for byte.
#[test]
fn relay_is_byte_exact_through_loss_reordering_and_delay() {
    let control_ns = Netns::new("control");
    let gateway_ns = Netns::new("gateway");
    let agent_ns = Netns::new("agent");
    let (control_end, gw_control_end) = veth(
        &control_ns,
        ("c0", CONTROL_IP),
        &gateway_ns,
        ("g0", GATEWAY_CONTROL_SIDE),
    );
    let (agent_end, gw_agent_end) = veth(&agent_ns, ("a0", AGENT_IP), &gateway_ns, ("g1", GATEWAY_AGENT_SIDE));
    let ends = [
        (&control_ns, &control_end),
        (&gateway_ns, &gw_control_end),
        (&gateway_ns, &gw_agent_end),
        (&agent_ns, &agent_end),
    ];
    let faults = Impairment {
        loss: LOSS,
        reorder: REORDER,
    };
    for (ns, end) in ends {
        impair(ns, end, faults);
    }

    let gw = Gateway::start_prepared(&GatewayConfig::new(&[KEY]), |cmd| gateway_ns.enter(cmd));
    let proxy = gateway_ns.run(|| DelayProxy::start(gw.addr(), DELAY));
    let service = agent_ns.run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the agent's service"));
    let service_addr = service.local_addr().expect("service address");
    let agent_ep = endpoint(SocketAddr::from((GATEWAY_AGENT_SIDE, proxy.port())), KEY, "far-agent");
    let _agent = agent_ns
        .run(|| AgentThread::start(agent_ep, Behaviour::Serve(service_addr)))
        .unwrap_or_else(|e| panic!("the agent could not register through the faulty link: {e}"));
    gw.wait_for_event("Client far-agent connected", EVENT_TIMEOUT);

    let control_ep = endpoint(
        SocketAddr::from((GATEWAY_CONTROL_SIDE, proxy.port())),
        KEY,
        "far-control",
    );
    let StdSession { stream, early } = control_ns
        .run(|| connect_std(&control_ep, "far-agent"))
        .unwrap_or_else(|e| panic!("connect through the faulty link failed: {e}"));
    assert!(
        wait_readable(&service, EVENT_TIMEOUT),
        "the agent never dialled its service"
    );
    let (service_side, _) = service.accept().expect("accept the agent's connection");
    let started = Instant::now();
    assert_byte_exact_both_ways(stream, early, service_side, BULK, BULK_TIMEOUT);
    eprintln!(
        "64 MiB each way through loss, reordering and delay: {:?}",
        started.elapsed()
    );
    gw.wait_for_event("Control far-control disconnected from Client far-agent", EVENT_TIMEOUT);

    for (ns, end) in ends {
        let (lost, held) = (dropped(ns, end), held_back(ns, end));
        eprintln!("{}: {lost} packets dropped, {held} held back", end.dev);
        assert!(lost >= MIN_DROPPED, "{} dropped only {lost} packets", end.dev);
        assert!(held >= MIN_HELD_BACK, "{} held back only {held} packets", end.dev);
    }
    // The senders' TCP saw segments arrive out of order, not only lost:
    // the held-back packets really were overtaken.
    let reordered: u64 = [&control_ns, &gateway_ns, &agent_ns]
        .iter()
        .map(|ns| ns.tcp_counter("TCPSACKReorder") + ns.tcp_counter("TCPTSReorder"))
        .sum();
    eprintln!("reordering detected by the senders: {reordered}");
    assert!(reordered > 0, "no sender saw a reordered segment");
}

// ---- the open-file limit ----

/// The gateway's open-file limit: the issue's `prlimit --nofile=512`.
const NOFILE: u64 = 512;

/// What the gateway keeps back from its default connection cap for its
/// own files (docs/ARCHITECTURE.md: the cap is the limit less 256).
const FD_RESERVE: u64 = 256;

/// Connections opened at once: well past [`NOFILE`].
const FLOOD: usize = 600;

/// The answer past the connection cap, byte for byte.
const FULL_REASON: &str = "the gateway is at its connection limit; try again later";

/// How the gateway logs a failed accept (a substring of the line).
const ACCEPT_FAILED: &str = "accept failed";

/// Lifts the per-source limits on unauthenticated connections: the flood
/// comes from one address, and these tests are about descriptors, not
/// about sources (tests/sources.rs is).
fn one_source_may_flood(config: &mut GatewayConfig) {
    config.limits_extra.extend([
        "max_unauthenticated_per_source = 65536".to_string(),
        "new_connections_per_source_per_sec = 0".to_string(),
    ]);
}

/// Opens [`FLOOD`] connections to `addr` and sends nothing.
fn flood(addr: SocketAddr) -> Vec<TcpStream> {
    (0..FLOOD)
        .map(|i| {
            let s = TcpStream::connect_timeout(&addr, EVENT_TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i} to the gateway failed: {e}"));
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
            s
        })
        .collect()
}

/// Waits until at least `n` of `conns` have something to read (or hung
/// up), one poll(2) over all of them; returns the indices of those.
fn wait_answered(conns: &[TcpStream], n: usize) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let answered = poll_until(EVENT_TIMEOUT, || {
        fds.iter_mut().for_each(|p| p.revents = 0);
        // SAFETY: `fds` holds valid pollfds for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        let ready: Vec<usize> = (0..fds.len()).filter(|&i| fds[i].revents != 0).collect();
        (ready.len() >= n).then_some(ready)
    });
    answered.unwrap_or_else(|| panic!("fewer than {n} of {} connections were answered", conns.len()))
}

/// Reads each of `answered` to EOF and checks it is exactly the 503 of a
/// gateway at its connection limit, carrying the gateway's boot id (the
/// same in every answer; the gateway is too full to be asked for it).
fn assert_all_refused_full(conns: &mut [TcpStream], answered: &[usize]) {
    let mut want: Option<String> = None;
    for &i in answered {
        let mut got = Vec::new();
        conns[i]
            .read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: reading the refusal failed: {e}"));
        let got = String::from_utf8_lossy(&got).into_owned();
        let want = want.get_or_insert_with(|| {
            let (head, _) = ringway::http::parse_response(got.as_bytes())
                .unwrap_or_else(|e| panic!("connection {i}: bad answer {got:?}: {e:?}"));
            let boot = head
                .header("ringway-boot")
                .unwrap_or_else(|| panic!("no Ringway-Boot in {got:?}"));
            assert!(ringway::auth::BootId::parse(boot).is_some(), "bad boot id in {got:?}");
            let want = ringway::http::error_response(503, &[("Ringway-Boot", boot)], FULL_REASON);
            String::from_utf8_lossy(&want).into_owned()
        });
        assert!(want.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{want}");
        assert!(want.ends_with(&format!("\r\n\r\n{FULL_REASON}\n")), "{want}");
        assert_eq!(&got, want, "connection {i}'s answer");
    }
}

/// Whether the gateway's process is still running (not a zombie).
fn alive(gw: &Gateway) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Closes `held` and waits until the gateway has closed its ends, i.e.
/// its descriptors are back to `baseline`.
fn release(gw: &Gateway, held: Vec<TcpStream>, baseline: usize) {
    drop(held);
    let back = poll_until(EVENT_TIMEOUT, || (gw.fd_count() <= baseline).then_some(()));
    assert!(back.is_some(), "descriptors: {} now, {baseline} before", gw.fd_count());
}

/// A new agent registers and relays: service resumed.
fn assert_service_resumes(gw: &Gateway, name: &str) {
    let service = Service::echo();
    let _agent = gw.serving_agent(KEY, name, service.addr());
    echo_round_trip(&gw.endpoint(KEY, "after-flood"), name, b"service is back");
}

/// Under `prlimit --nofile=512` the default connection cap is 256: of 600
/// connections 256 are held and the other 344 get the exact 503, at once;
/// no accept ever fails, and service resumes when they close.
#[test]
fn at_the_open_file_limit_peers_past_the_cap_get_503_and_service_resumes() {
    let mut config = GatewayConfig::operated(&[KEY]);
    // Held connections stay held (unanswered heads) for the whole test.
    config.head_timeout_secs = Some(60);
    one_source_may_flood(&mut config);
    let gw = Gateway::start_prepared(&config, |cmd| limit_open_files(cmd, NOFILE));
    let cap = (NOFILE - FD_RESERVE) as usize;
    assert_eq!(gw.metric("ringway_connections_max"), cap as u64, "the default cap");
    let baseline = gw.fd_count();

    let mut conns = flood(gw.addr());
    let refused = wait_answered(&conns, FLOOD - cap);
    assert_eq!(refused.len(), FLOOD - cap, "connections answered at once");
    assert_all_refused_full(&mut conns, &refused);
    assert_eq!(gw.metric("ringway_connections_open"), cap as u64);
    assert_eq!(
        gw.metrics().sum("ringway_rejected_total", &[("status", "503")]),
        (FLOOD - cap) as f64
    );
    let fds = gw.fd_count();
    assert!(
        fds < NOFILE as usize,
        "the cap kept the gateway under its limit: {fds} descriptors"
    );
    let failed: Vec<String> = gw.lines().into_iter().filter(|l| l.contains(ACCEPT_FAILED)).collect();
    assert!(failed.is_empty(), "accepts failed under the cap: {failed:?}");
    assert!(alive(&gw), "the gateway died");

    release(&gw, conns, baseline);
    assert_service_resumes(&gw, "after-cap");
}

/// With the cap configured above the open-file limit (an operator's
/// mistake), accepts fail with EMFILE: the peers past the limit still get
/// the exact 503 at once (the gateway's spare descriptor), the failures
/// are logged once and then counted (one line when accepting works again,
/// with the number), and service resumes when connections close.
#[test]
fn past_the_open_file_limit_peers_get_503_and_accept_failures_are_logged_once_per_interval() {
    let mut config = GatewayConfig::new(&[KEY]);
    config.head_timeout_secs = Some(60);
    config.max_connections = Some(10_000);
    one_source_may_flood(&mut config);
    // One worker, one listener: the descriptors it holds are all the
    // connections'.
    config.workers = 1;
    let gw = Gateway::start_prepared(&config, |cmd| limit_open_files(cmd, NOFILE));
    let baseline = gw.fd_count();
    let held = NOFILE as usize - baseline;

    let started = Instant::now();
    let mut conns = flood(gw.addr());
    let refused = wait_answered(&conns, FLOOD - held);
    let flooded_for = started.elapsed();
    assert_eq!(refused.len(), FLOOD - held, "connections answered at once");
    assert_all_refused_full(&mut conns, &refused);
    assert_eq!(gw.fd_count(), NOFILE as usize, "every descriptor in use");
    let failed: Vec<String> = gw.lines().into_iter().filter(|l| l.contains(ACCEPT_FAILED)).collect();
    eprintln!("{} refusals in {flooded_for:?}; warnings: {failed:?}", refused.len());
    assert_eq!(
        failed.len(),
        1,
        "accept failures logged during {flooded_for:?}: {failed:?}"
    );
    assert!(failed[0].contains("Too many open files"), "{}", failed[0]);
    assert!(alive(&gw), "the gateway died");

    release(&gw, conns, baseline);
    assert_service_resumes(&gw, "after-emfile");
    // Each refused peer took one failed accept (the spare is let go only
    // after one); the first was logged, the rest are reported now.
    let again = gw.wait_for_line("accepting again", EVENT_TIMEOUT);
    let unlogged = refused.len() - 1;
    let want = format!("accepting again ({unlogged} more failed accepts since the last warning)");
    assert!(again.ends_with(&want), "{again:?}, not {want:?}");
}

// ---- resets mid-transfer ----

/// Bytes each end has received before one of them resets: the session is
/// well under way in both directions.
const UNDER_WAY: usize = 1 << 20;

/// Which end of a session resets it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resetter {
    /// The control's socket.
    Control,
    /// The agent's local service.
    Service,
}

/// Streams both ways through a session, resets one end once both have
/// received [`UNDER_WAY`], and checks that the other end's two directions
/// end, the session leaves /api/sessions and the gateway's descriptors
/// return to what they were before it (none it opened for the session is
/// left, nor more than it had).
fn reset_mid_transfer(who: Resetter) {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let service = Service::manual();
    let agent = format!("rst-agent-{who:?}");
    let _agent = gw.serving_agent(KEY, &agent, service.addr());
    gw.sync_workers();
    let baseline = gw.descriptors();

    let control = format!("rst-control-{who:?}");
    let (StdSession { stream, early }, service_side) = gw.session(KEY, &control, &agent, &service);
    assert!(early.is_empty(), "no bytes before the control sends");
    let (victim, survivor) = match who {
        Resetter::Control => (stream, service_side),
        Resetter::Service => (service_side, stream),
    };
    let sessions = gw.get_json("/api/sessions");
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");

    // The surviving end says how much it has received, so the reset comes
    // once both directions are under way.
    let survivor_received = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&survivor_received);
    let watcher = std::thread::spawn(move || {
        let done = stream_until(&survivor, "the surviving end", EVENT_TIMEOUT, |d| {
            progress.store(d.received, Ordering::Relaxed);
            both_ended(d)
        });
        drop(survivor);
        done
    });
    let before = stream_until(&victim, "the end that resets", EVENT_TIMEOUT, |d| {
        d.received >= UNDER_WAY && survivor_received.load(Ordering::Relaxed) >= UNDER_WAY
    });
    reset(victim);
    let after = watcher.join().expect("the surviving end's thread");
    eprintln!("{who:?} reset after {before:?}; the other end: {after:?}");
    assert!(
        after.received >= UNDER_WAY,
        "the other end was receiving too: {after:?}"
    );
    assert!(after.read_end.is_some() && after.write_error.is_some(), "{after:?}");

    gw.wait_for_event(
        &format!("Control {control} disconnected from Client {agent}"),
        EVENT_TIMEOUT,
    );
    let gone = poll_until(EVENT_TIMEOUT, || {
        let sessions = gw.get_json("/api/sessions");
        (sessions.as_array().map(Vec::len) == Some(0)).then_some(())
    });
    assert!(
        gone.is_some(),
        "the session is still listed: {}",
        gw.get_json("/api/sessions")
    );
    // The admin listener may still have been closing the socket of the
    // last request when the baseline was read, so it can only shrink.
    let back = poll_until(EVENT_TIMEOUT, || gw.descriptors().is_subset(&baseline).then_some(()));
    let left: Vec<_> = gw.descriptors().difference(&baseline).cloned().collect();
    assert!(back.is_some(), "descriptors the session left open: {left:?}");
}

#[test]
fn control_reset_mid_transfer_ends_both_directions_and_frees_the_session() {
    reset_mid_transfer(Resetter::Control);
}

#[test]
fn service_reset_mid_transfer_ends_both_directions_and_frees_the_session() {
    reset_mid_transfer(Resetter::Service);
}
