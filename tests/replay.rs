//! A captured key proof must not work again (issue 9, hole 1): not after
//! a gateway restart (plain HTTP: the proof signs the gateway's boot id),
//! not on another TLS connection (the proof signs the connection's
//! exported keying material), while honest clients, clocks a little off
//! included, get in as before.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{
    Behaviour, EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, Service, Tap, TlsRig, block_on, echo_round_trip,
    endpoint, names, plain_binding,
};
use compio::BufResult;
use ringway::auth::{self, Signed};
use ringway::client;
use ringway::conn::Conn;
use ringway::http::{HeadError, ResponseHead, parse_response};
use ringway::proto;
use ringway::relay::Duplex;

const KEY: &str = "Testing1";

/// The body of the `401` for a proof signed with a stale boot id.
const STALE: &str = "stale_boot: this proof was not signed with the gateway's current boot id; \
                     sign again with this answer's Ringway-Boot\n";
/// The body of every other refused proof.
const REFUSED: &str = "gateway key proof refused\n";

/// Reads one answer, head and `Content-Length` body, from `s`, leaving
/// the connection as the gateway left it.
fn read_answer(s: &mut TcpStream) -> (ResponseHead, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match parse_response(&raw) {
            Ok((head, len)) => {
                let want: usize = head
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .expect("a Content-Length");
                while raw.len() < len + want {
                    let n = s.read(&mut buf).expect("read the body");
                    assert!(n > 0, "the body was cut short: {raw:?}");
                    raw.extend_from_slice(&buf[..n]);
                }
                assert_eq!(raw.len(), len + want, "nothing follows the answer");
                let body = String::from_utf8(raw[len..].to_vec()).expect("a text body");
                return (head, body);
            }
            Err(HeadError::Incomplete) => {}
            Err(e) => panic!("bad answer {e:?}: {:?}", String::from_utf8_lossy(&raw)),
        }
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed before an answer: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Sends `request` on a new connection to `gw` and reads its answer; the
/// socket comes back for more.
fn send_to(gw: SocketAddr, request: &[u8]) -> (TcpStream, ResponseHead, String) {
    let mut s = TcpStream::connect(gw).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(request).expect("send the request");
    let (head, body) = read_answer(&mut s);
    (s, head, body)
}

/// Whether the gateway has closed `s` (reads EOF, after the linger).
fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to the close") == 0
}

/// The request heads in `sent`, each with its blank line.
fn split_heads(sent: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8(sent.to_vec()).expect("text heads");
    text.split_inclusive("\r\n\r\n")
        .map(|h| h.as_bytes().to_vec())
        .collect()
}

#[test]
fn a_register_proof_captured_on_plain_http_is_refused_after_a_restart() {
    let service = Service::echo();
    let config = GatewayConfig::operated(&[KEY]);
    let mut first = Gateway::start(&config);
    let old_boot = first.boot();

    // An agent registers through a wiretap. It knows no boot id yet, so
    // its first head is answered stale_boot and it signs again on the
    // same connection; the eavesdropper has both heads.
    let tap = Tap::start(first.addr());
    let agent = first.start_agent(endpoint(tap.addr(), KEY, "pc1"), Behaviour::Serve(service.addr()));
    let heads = split_heads(&tap.heads(0, 2));
    assert_eq!(heads.len(), 2, "two heads on the registration's connection");
    let (unbound, captured) = (&heads[0], &heads[1]);
    let captured_text = String::from_utf8_lossy(captured).into_owned();
    assert!(!String::from_utf8_lossy(unbound).contains("Ringway-Boot:"));
    assert!(captured_text.contains(&format!("\r\nRingway-Boot: {old_boot}\r\n")));

    // Within the same boot the nonce cache refuses the replay.
    let (_s, head, body) = send_to(first.addr(), captured);
    assert_eq!((head.status, body.as_str()), (401, REFUSED));
    first.wait_for_event(
        "Security check failed for Client pc1 (127.0.0.1): replayed. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    drop(agent);
    first.kill();

    // A new run of the gateway: the same header bytes, sent to it.
    let second = Gateway::start(&config);
    let new_boot = second.boot();
    assert_ne!(new_boot, old_boot, "each run draws its own boot id");
    let (mut s, head, body) = send_to(second.addr(), captured);
    assert_eq!((head.status, body.as_str()), (401, STALE));
    assert_eq!(head.header("ringway-boot"), Some(new_boot.as_str()));
    assert_eq!(head.header("connection"), None, "kept open to be signed again");
    // Sent again on that connection, as is: refused and closed.
    s.write_all(captured).expect("replay again on the kept connection");
    let (head, body) = read_answer(&mut s);
    assert_eq!((head.status, body.as_str()), (401, STALE));
    assert_eq!(head.header("connection"), Some("close"));
    assert!(closed(&mut s), "a second stale proof closes the connection");
    // A client that sends no boot id (an older agent) hears the same.
    let (_s, head, body) = send_to(second.addr(), unbound);
    assert_eq!((head.status, body.as_str()), (401, STALE));

    // Swapping in the new boot id breaks the signature.
    let forged = captured_text.replace(&old_boot, &new_boot);
    let (_s, head, body) = send_to(second.addr(), forged.as_bytes());
    assert_eq!((head.status, body.as_str()), (401, REFUSED));
    second.wait_for_event(
        "Security check failed for Client pc1 (127.0.0.1): bad_signature. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    assert_eq!(second.count_events("Client pc1 connected"), 0, "no replay got in");

    // The honest agent comes back knowing the old boot id: one stale_boot,
    // then it is in; a control browses and relays exact bytes through it.
    let ep = second.endpoint(KEY, "pc1");
    let (old, _) =
        parse_response(format!("HTTP/1.1 200 OK\r\nRingway-Boot: {old_boot}\r\n\r\n").as_bytes()).expect("a head");
    ep.boot.learn(&old);
    let _agent = second.start_agent(ep, Behaviour::Serve(service.addr()));
    let control = second.endpoint(KEY, "ops");
    assert_eq!(names(&control), ["pc1"]);
    echo_round_trip(&control, "pc1", b"through a gateway that refused every replay");
    // Two replays and the unbound head, then one first request each for
    // the agent and the control; the agent's data connection and the
    // control's connect already knew the id.
    assert_eq!(
        second
            .metrics()
            .sum("ringway_auth_failures_total", &[("reason", "stale_boot")]),
        5.0
    );
}

#[test]
fn a_tls_proof_moved_to_another_tls_connection_is_refused() {
    let rig = TlsRig::start(KEY, false);
    let ep = rig.endpoint("ops");
    let (moved, own) = block_on(async {
        let mine = client::dial(&ep).await.expect("dial over TLS");
        let other = client::dial(&ep).await.expect("dial over TLS again");
        let binding = client::binding(&ep, &mine).expect("keying material");
        assert_ne!(
            binding,
            client::binding(&ep, &other).expect("keying material"),
            "two connections share no keying material"
        );
        let head = client::request_head(&ep, binding, "GET", proto::PATH_CLIENTS, &[]);
        let moved = answer_on(&other, head.clone()).await;
        let own = answer_on(&mine, head).await;
        (moved, own)
    });
    assert_eq!(moved, (401, REFUSED.to_string()));
    assert_eq!(own, (200, "[]".to_string()), "the proof holds on its own connection");
    rig.gw.wait_for_event(
        "Security check failed for Control browse: bad_signature. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
}

/// Sends `head` on `conn` and reads the answer's status and body.
async fn answer_on(conn: &Conn, head: Vec<u8>) -> (u16, String) {
    let (answer, mut body) = client::exchange(conn, head).await.expect("an answer");
    let len: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    while body.len() < len {
        body.reserve(len - body.len());
        let BufResult(res, b) = conn.read_into(body).await;
        body = b;
        assert!(res.expect("read the body") > 0, "the body was cut short");
    }
    (answer.status, String::from_utf8(body).expect("a text body"))
}

#[test]
fn honest_clock_skew_of_two_minutes_is_still_accepted() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let ep = gw.endpoint(KEY, "ops");
    let binding = plain_binding(&ep);
    let boot = gw.boot();
    let now = auth::unix_now();
    for (ts, status) in [(now - 120, 200), (now + 120, 200), (now - 400, 401), (now + 400, 401)] {
        let req = Signed {
            method: "GET",
            target: proto::PATH_CLIENTS,
            identity: "ops",
            binding,
        };
        let proof = auth::sign(&ep.key, &req, ts, auth::new_nonce());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: gw\r\nRingway-Identity: ops\r\nRingway-Boot: {boot}\r\nAuthorization: {proof}\r\n\r\n",
            proto::PATH_CLIENTS
        );
        let (_s, head, body) = send_to(gw.addr(), request.as_bytes());
        let want = if status == 200 { "[]" } else { REFUSED };
        assert_eq!(
            (head.status, body.as_str()),
            (status, want),
            "a clock {} s off",
            ts as i64 - now as i64
        );
    }
    gw.wait_for_event(
        "Security check failed for Control browse: expired. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
}
