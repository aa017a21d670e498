//! The relay: exact bytes both ways at once, half-close carried in each
//! direction, and backpressure instead of buffering when a reader stalls.
//!
//! Path: control (blocking socket) → gateway → library agent (own thread)
//! → local service (std threads).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{
    AgentThread, Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, Service, StdSession, connect_std, read_hashed,
    send_generated, sha256, wait_writable,
};

const KEY: &str = "Testing1";

/// A gateway, a manual service and an agent publishing it.
struct Rig {
    gw: Gateway,
    service: Service,
    _agent: AgentThread,
    agent_name: String,
}

impl Rig {
    fn start(agent_name: &str) -> Rig {
        let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
        let service = Service::manual();
        let agent = AgentThread::start(gw.endpoint(KEY, agent_name), Behaviour::Serve(service.addr()))
            .unwrap_or_else(|e| panic!("agent registration failed: {e}"));
        gw.wait_for_event(&format!("Client {agent_name} connected"), EVENT_TIMEOUT);
        Rig {
            gw,
            service,
            _agent: agent,
            agent_name: agent_name.to_string(),
        }
    }

    /// Opens a session as `control`; returns the control's socket (and
    /// early bytes) and the service's side of it.
    fn session(&self, control: &str) -> (StdSession, TcpStream) {
        let session = connect_std(&self.gw.endpoint(KEY, control), &self.agent_name)
            .unwrap_or_else(|e| panic!("connect failed: {e}"));
        let service_side = self.service.accept(EVENT_TIMEOUT);
        (session, service_side)
    }
}

#[test]
fn sixty_four_mib_each_way_at_once_arrive_byte_exact() {
    const LEN: usize = 64 << 20;
    let rig = Rig::start("bulk-agent");
    let (StdSession { stream: control, early }, service) = rig.session("bulk-control");

    // Each side writes its own stream on one thread while another reads and
    // hashes what the other side sends.
    let mut service_tx = service.try_clone().expect("clone service socket");
    let service_writer = std::thread::spawn(move || {
        let sent = send_generated(&mut service_tx, 2, LEN).expect("service sends");
        service_tx.shutdown(Shutdown::Write).expect("service half-closes");
        sent
    });
    let mut service_rx = service;
    let service_reader = std::thread::spawn(move || read_hashed(&mut service_rx, &[]).expect("service reads"));
    let mut control_tx = control.try_clone().expect("clone control socket");
    let control_writer = std::thread::spawn(move || {
        let sent = send_generated(&mut control_tx, 1, LEN).expect("control sends");
        control_tx.shutdown(Shutdown::Write).expect("control half-closes");
        sent
    });
    let mut control_rx = control;
    let (control_got, control_hash) = read_hashed(&mut control_rx, &early).expect("control reads");

    let control_sent = control_writer.join().expect("control writer");
    let service_sent = service_writer.join().expect("service writer");
    let (service_got, service_hash) = service_reader.join().expect("service reader");
    assert_eq!(control_got, LEN, "bytes the control received");
    assert_eq!(service_got, LEN, "bytes the service received");
    assert_eq!(control_hash, service_sent, "SHA-256 of service → control");
    assert_eq!(service_hash, control_sent, "SHA-256 of control → service");
    assert_ne!(control_sent, service_sent, "the two directions carry different streams");
    rig.gw.wait_for_event(
        "Control bulk-control disconnected from Client bulk-agent",
        EVENT_TIMEOUT,
    );
}

#[test]
fn control_half_close_reaches_the_service_which_can_still_answer() {
    let rig = Rig::start("hc-agent-1");
    let (StdSession { mut stream, early }, mut service) = rig.session("hc-control-1");

    stream.write_all(b"request from the control").expect("control sends");
    stream.shutdown(Shutdown::Write).expect("control half-closes");
    let mut got = Vec::new();
    service.read_to_end(&mut got).expect("service reads to EOF");
    assert_eq!(got, b"request from the control");

    // The reverse direction still flows after the service saw EOF.
    let answer = common::Prng::new(11).bytes(300_000);
    service.write_all(&answer).expect("service answers after EOF");
    service.shutdown(Shutdown::Write).expect("service half-closes");
    let mut back = early;
    stream.read_to_end(&mut back).expect("control reads to EOF");
    assert_eq!(back.len(), answer.len());
    assert_eq!(sha256(&back), sha256(&answer));
    rig.gw.wait_for_event(
        "Control hc-control-1 disconnected from Client hc-agent-1",
        EVENT_TIMEOUT,
    );
}

#[test]
fn service_half_close_reaches_the_control_which_can_still_send() {
    let rig = Rig::start("hc-agent-2");
    let (StdSession { mut stream, early }, mut service) = rig.session("hc-control-2");

    service.write_all(b"banner from the service").expect("service sends");
    service.shutdown(Shutdown::Write).expect("service half-closes");
    let mut got = early;
    stream.read_to_end(&mut got).expect("control reads to EOF");
    assert_eq!(got, b"banner from the service");

    let request = common::Prng::new(12).bytes(300_000);
    stream.write_all(&request).expect("control sends after EOF");
    stream.shutdown(Shutdown::Write).expect("control half-closes");
    let mut back = Vec::new();
    service.read_to_end(&mut back).expect("service reads to EOF");
    assert_eq!(back.len(), request.len());
    assert_eq!(sha256(&back), sha256(&request));
    rig.gw.wait_for_event(
        "Control hc-control-2 disconnected from Client hc-agent-2",
        EVENT_TIMEOUT,
    );
}

#[test]
fn stalled_reader_stalls_the_writer_without_growing_the_gateway() {
    /// What the control tries to push while the service reads nothing.
    const ATTEMPT: usize = 256 << 20;
    /// Allowed growth of the gateway's RSS: the session's two 64 KiB relay
    /// buffers plus allocator slack, far below what buffering would take.
    const MAX_GROWTH_KIB: u64 = 16 * 1024;
    /// No progress for this long means the writer is stalled.
    const STALL: Duration = Duration::from_secs(2);

    let rig = Rig::start("slow-agent");
    let (StdSession { stream, early }, mut service) = rig.session("fast-control");
    assert!(early.is_empty(), "the service has sent nothing");
    let before = rig.gw.rss_kib();

    let mut stream = stream;
    stream.set_nonblocking(true).expect("non-blocking control socket");
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stalled = false;
    while written < ATTEMPT && Instant::now() < deadline {
        let n = (ATTEMPT - written).min(chunk.len());
        match stream.write(&chunk[..n]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !wait_writable(&stream, STALL) {
                    stalled = true;
                    break;
                }
            }
            Err(e) => panic!("control write failed: {e}"),
        }
    }
    let after = rig.gw.rss_kib();
    assert!(stalled, "the writer was never stalled ({written} bytes written)");
    assert!(written < ATTEMPT, "all {ATTEMPT} bytes went in while nobody read");
    let growth = after.saturating_sub(before);
    assert!(
        growth <= MAX_GROWTH_KIB,
        "gateway RSS grew by {growth} KiB ({before} → {after}) with {written} bytes in flight"
    );

    // Nothing was lost: once the service reads, it gets every byte written.
    stream.set_nonblocking(false).expect("blocking control socket");
    stream.shutdown(Shutdown::Write).expect("control half-closes");
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = service.read(&mut buf).expect("service reads");
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().all(|&b| b == 0x5a),
            "corrupted byte in the stalled stream"
        );
        received += n;
    }
    assert_eq!(received, written, "bytes the service got after the stall");
}

/// `ringway control connect --stdio` is a new process per session (ssh's
/// ProxyCommand): it keeps the gateway's boot id between runs, so over
/// plain HTTP only the first run pays the `401 stale_boot` round trip.
#[test]
fn control_stdio_keeps_the_boot_id_between_runs_so_a_second_session_signs_once() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    let _agent = gw.serving_agent(KEY, "pc1", echo.addr());
    let cache = common::TestDir::new("boot-cache");
    let stale = || {
        gw.metrics()
            .sum("ringway_auth_failures_total", &[("reason", "stale_boot")]) as u64
    };
    // The agent's own first registration learnt the boot id the same way.
    let before = stale();
    for (run, want_stale) in [(1, before + 1), (2, before + 1), (3, before + 1)] {
        let mut cmd = common::ringway_client(
            KEY,
            &[
                "control",
                "connect",
                "pc1",
                "--gateway",
                &gw.addr().to_string(),
                "--as",
                "ops",
                "--stdio",
            ],
        );
        cmd.env("XDG_CACHE_HOME", cache.path());
        let out = common::run_bounded(cmd, format!("run {run}\n").as_bytes(), EVENT_TIMEOUT);
        assert!(out.success(), "run {run}: {}", out.stderr);
        assert_eq!(out.stdout, format!("run {run}\n"), "run {run}: the echo");
        assert_eq!(stale(), want_stale, "run {run}: stale_boot answers so far");
    }
    let stored = std::fs::read_to_string(
        cache
            .path()
            .join("ringway/boots")
            .join(format!("{}.boot", gw.addr().to_string().replace(':', "_"))),
    )
    .expect("the stored boot id");
    assert_eq!(stored, format!("{}\n", gw.boot()));
}
