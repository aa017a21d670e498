//! One tenant cannot lock every other out through the nonce cache (issue
//! 9, hole 2a): key A floods proofs far past its quota of nonces while key
//! B's agent and control register, browse and relay exact bytes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use common::{
    Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, Prng, Service, echo_round_trip, names, plain_binding,
    poll_until,
};
use ringway::client::{self, Endpoint};
use ringway::eventlog::REPEAT_WINDOW;
use ringway::http::parse_response;
use ringway::proto;

const KEY_A: &str = "Testing1";
const KEY_B: &str = "Testing2";

/// Key A's quota, lowered so a test floods well past it in a second.
const QUOTA: usize = 200;

/// Threads flooding with key A's proofs, each one connection at a time.
const FLOODERS: usize = 3;

/// Rounds of browse and relay key B runs during the flood, spread over...
const ROUNDS: usize = 20;

/// ...key A's first this many refusals: ten times its quota, well past
/// it. (Key B's rounds use 3 of its own nonces each, within its quota.)
const FLOOD_PAST: usize = 10 * QUOTA;

/// What key A hears once past its quota.
const OVER_QUOTA: &str = "this gateway key has made too many key proofs in the last few minutes; try again later\n";

/// What one flooding thread saw.
#[derive(Default)]
struct Flood {
    accepted: usize,
    over_quota: usize,
}

/// Sends browse after browse, each on a new connection with a fresh proof
/// of key A, until `stop`; tells `refused` of each 503.
fn flood(gw: SocketAddr, ep: Endpoint, stop: Arc<AtomicBool>, refused: mpsc::Sender<()>) -> Flood {
    let mut seen = Flood::default();
    while !stop.load(Ordering::SeqCst) {
        let mut s = TcpStream::connect(gw).expect("connect to the gateway");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
        s.write_all(&client::request_head(
            &ep,
            plain_binding(&ep),
            "GET",
            proto::PATH_CLIENTS,
            &[],
        ))
        .expect("send a browse");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read the answer to its end");
        let (head, len) = parse_response(&raw).unwrap_or_else(|e| panic!("bad answer {e:?}"));
        let body = String::from_utf8_lossy(&raw[len..]);
        match head.status {
            200 => seen.accepted += 1,
            503 => {
                assert_eq!(body, OVER_QUOTA);
                seen.over_quota += 1;
                let _ = refused.send(());
            }
            other => panic!("key A's browse answered {other}: {body:?}"),
        }
    }
    seen
}

#[test]
fn a_nonce_flood_by_one_key_leaves_another_key_served() {
    let mut config = GatewayConfig::operated(&[KEY_A, KEY_B]);
    config.limits_extra.push(format!("nonces_per_key = {QUOTA}"));
    let gw = Gateway::start(&config);
    let service = Service::echo();

    let stop = Arc::new(AtomicBool::new(false));
    let (refused_tx, refused) = mpsc::channel();
    let flooder_ep = gw.endpoint(KEY_A, "flood");
    let started = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (ep, stop, tell, addr) = (flooder_ep.clone(), Arc::clone(&stop), refused_tx.clone(), gw.addr());
            thread::spawn(move || flood(addr, ep, stop, tell))
        })
        .collect();
    let mut seen_refused = 0;
    let mut await_refusals = |n: usize| {
        while seen_refused < n {
            let next = refused.recv_timeout(EVENT_TIMEOUT);
            next.expect("key A's flood is refused again");
            seen_refused += 1;
        }
    };
    await_refusals(1);

    // Key B, while key A is past its quota and still flooding.
    let (mut rounds, mut served) = (0, 0);
    let _agent = gw.start_agent(gw.endpoint(KEY_B, "b-agent"), Behaviour::Serve(service.addr()));
    let control = gw.endpoint(KEY_B, "b-ops");
    while rounds < ROUNDS {
        await_refusals((rounds + 1) * FLOOD_PAST / ROUNDS);
        assert_eq!(names(&control), ["b-agent"], "round {rounds}");
        echo_round_trip(&control, "b-agent", &Prng::new(rounds as u64).bytes(10_000));
        rounds += 1;
        served += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let flooded_for = started.elapsed();
    let seen: Vec<Flood> = flooders.into_iter().map(|t| t.join().expect("a flooder")).collect();
    let accepted: usize = seen.iter().map(|f| f.accepted).sum();
    let over_quota: usize = seen.iter().map(|f| f.over_quota).sum();
    let proofs = accepted + over_quota;
    let rate = proofs as f64 / flooded_for.as_secs_f64();
    eprintln!(
        "key A: {proofs} proofs in {flooded_for:.2?} ({rate:.0}/s), {accepted} accepted, {over_quota} over quota; \
         key B: {served}/{rounds} rounds of browse and relay served ({:.0}%)",
        100.0 * served as f64 / rounds as f64
    );

    // Key A got exactly its quota in (every proof is still within the
    // window), and was told why for the rest; well past it.
    assert_eq!(accepted, QUOTA, "key A's proofs accepted");
    assert!(
        over_quota >= FLOOD_PAST,
        "the flood went well past the quota: {over_quota}"
    );
    assert_eq!(served, rounds, "key B is served every time");
    assert_eq!(
        gw.metrics()
            .sum("ringway_auth_failures_total", &[("reason", "nonce_quota")]),
        over_quota as f64
    );
    // Logged per source: a line per window, the rest of it summed when
    // the window closes; every refusal is accounted for.
    let line = "Security check failed for Control browse: nonce_quota. Terminating connection from 127.0.0.1";
    let logged = |events: &[String]| -> usize {
        events
            .iter()
            .filter_map(|e| {
                if e == line {
                    return Some(1);
                }
                let more = e.strip_prefix(&format!("{line} … and "))?;
                let n = more.strip_suffix(" more from 127.0.0.1 in the last 10 s")?;
                n.replace(',', "").parse::<usize>().ok()
            })
            .sum()
    };
    let total = poll_until(REPEAT_WINDOW + EVENT_TIMEOUT, || {
        let n = logged(&gw.events());
        (n >= over_quota).then_some(n)
    });
    assert_eq!(total, Some(over_quota), "refusals written or summed");
    assert_eq!(gw.count_events("Client b-agent connected"), 1);
}
