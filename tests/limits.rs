//! The front door's limits, seen from a raw socket: malformed, oversized
//! and slow request heads, unknown paths and wrong methods each get their
//! status line and then a close.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Gateway, GatewayConfig, IO_TIMEOUT};
use ringway::http::{HeadError, MAX_HEAD_BYTES, MAX_HEADERS, parse_response};

fn gateway() -> Gateway {
    let mut config = GatewayConfig::new(&["Testing1"]);
    config.head_timeout_secs = Some(1);
    Gateway::start(&config)
}

/// The gateway's whole answer to `request`, read until it closes.
struct Answer {
    status_line: String,
    body: Vec<u8>,
}

/// Sends `request`, then reads until the gateway closes the connection
/// (`read` returns 0; a read timeout fails the test instead).
fn ask(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(request).expect("send the request");
    read_answer(s)
}

fn read_answer(mut s: TcpStream) -> Answer {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("the gateway answers, then closes");
    let (head, len) = parse_response(&raw).unwrap_or_else(|e| panic!("bad response {raw:?}: {e:?}"));
    let status_line = String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == b'\r').unwrap_or(0)]).to_string();
    let body = raw[len..].to_vec();
    let declared: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    assert_eq!(body.len(), declared, "body length of {status_line:?}");
    assert_eq!(head.header("connection"), Some("close"));
    Answer { status_line, body }
}

fn head_with_headers(count: usize) -> Vec<u8> {
    let mut head = b"GET /v1/clients HTTP/1.1\r\n".to_vec();
    for i in 0..count {
        head.extend_from_slice(format!("X-Header-{i}: value\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn head_of_size(total: usize) -> Vec<u8> {
    let start = b"GET /v1/clients HTTP/1.1\r\nX-Filler: ";
    let end = b"\r\n\r\n";
    let mut head = start.to_vec();
    head.resize(total - end.len(), b'a');
    head.extend_from_slice(end);
    assert_eq!(head.len(), total);
    head
}

#[test]
fn garbage_gets_400_and_a_close() {
    let gw = gateway();
    for garbage in [
        &b"\x01\x02\x03\x04 garbage\r\n\r\n"[..],
        b"not an http request at all\r\n\r\n",
        b"GET /v1/clients HTTP/9.9\r\n\r\n",
        b"GET http://elsewhere/ HTTP/1.1\r\n\r\n",
    ] {
        let answer = ask(gw.addr(), garbage);
        assert_eq!(answer.status_line, "HTTP/1.1 400 Bad Request", "for {garbage:?}");
    }
}

#[test]
fn head_larger_than_8_kib_gets_431_and_a_close() {
    let gw = gateway();
    let answer = ask(gw.addr(), &head_of_size(MAX_HEAD_BYTES + 1024));
    assert_eq!(answer.status_line, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(answer.body, format!("{}\n", HeadError::TooLarge.reason()).into_bytes());
}

#[test]
fn head_just_under_8_kib_is_read_whole() {
    let gw = gateway();
    // Judged on its content: no key proof, so 401 (not 431, not 400).
    let answer = ask(gw.addr(), &head_of_size(MAX_HEAD_BYTES - 16));
    assert_eq!(answer.status_line, "HTTP/1.1 401 Unauthorized");
}

#[test]
fn head_split_across_reads_is_reassembled() {
    let gw = gateway();
    let mut s = TcpStream::connect(gw.addr()).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.set_nodelay(true).expect("no Nagle");
    s.write_all(b"GET /v1/clients HTTP/1.1\r\n")
        .expect("send the request line");
    // A slow client: the rest of the head comes in a later segment. The
    // pause makes the split likely; a correct gateway answers the same
    // either way.
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"Host: gateway\r\n\r\n")
        .expect("send the rest of the head");
    let answer = read_answer(s);
    assert_eq!(answer.status_line, "HTTP/1.1 401 Unauthorized");
}

#[test]
fn more_than_32_headers_get_431_and_a_close() {
    let gw = gateway();
    let answer = ask(gw.addr(), &head_with_headers(MAX_HEADERS + 1));
    assert_eq!(answer.status_line, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(
        answer.body,
        format!("{}\n", HeadError::TooManyHeaders.reason()).into_bytes()
    );
    // With 32 the head is read and judged on its content: no key proof.
    let answer = ask(gw.addr(), &head_with_headers(MAX_HEADERS));
    assert_eq!(
        answer.status_line, "HTTP/1.1 401 Unauthorized",
        "32 headers are allowed"
    );
}

/// Sends `request` (less than a head) and checks the 408 comes at the 1 s
/// head deadline: not before it, and not long after.
fn assert_408_at_the_head_deadline(request: &[u8]) {
    let gw = gateway();
    let started = Instant::now();
    let answer = ask(gw.addr(), request);
    let waited = started.elapsed();
    assert_eq!(answer.status_line, "HTTP/1.1 408 Request Timeout");
    assert!(
        waited >= Duration::from_millis(950),
        "408 after {waited:?}, before the 1 s deadline"
    );
    assert!(waited < Duration::from_secs(5), "408 only after {waited:?}");
}

#[test]
fn incomplete_head_gets_408_after_the_head_timeout() {
    assert_408_at_the_head_deadline(b"GET /v1/clients HTTP/1.1\r\nHost: gateway\r\n");
}

#[test]
fn silent_connection_gets_408_after_the_head_timeout() {
    assert_408_at_the_head_deadline(b"");
}

#[test]
fn unknown_path_gets_404_and_a_close() {
    let gw = gateway();
    let answer = ask(gw.addr(), b"GET /v2/nothing-here HTTP/1.1\r\nHost: gateway\r\n\r\n");
    assert_eq!(answer.status_line, "HTTP/1.1 404 Not Found");
}

#[test]
fn post_to_the_client_list_gets_405_and_a_close() {
    let gw = gateway();
    let answer = ask(
        gw.addr(),
        b"POST /v1/clients HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(answer.status_line, "HTTP/1.1 405 Method Not Allowed");
}

#[test]
fn connections_past_the_cap_get_503_until_one_closes() {
    let mut config = GatewayConfig::new(&["Testing1"]);
    config.max_connections = Some(3);
    config.head_timeout_secs = Some(60);
    // One worker: one listener, so connections are accepted in the order
    // they were made and the first three are the ones holding the shares.
    config.workers = 1;
    let gw = Gateway::start(&config);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(gw.addr()).expect("connect"))
        .collect();

    let mut fourth = TcpStream::connect(gw.addr()).expect("connect");
    fourth.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    let full = read_answer(fourth.try_clone().expect("clone"));
    assert_eq!(full.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(
        String::from_utf8_lossy(&full.body),
        "the gateway is at its connection limit; try again later\n"
    );
    let mut rest = Vec::new();
    assert_eq!(fourth.read_to_end(&mut rest).expect("closed"), 0);

    // Closing one held connection gives its share back; nothing announces
    // that, so ask (bounded) until a request is served rather than refused.
    drop(held.pop());
    let served = common::poll_until(common::EVENT_TIMEOUT, || {
        let answer = ask(gw.addr(), b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n");
        (answer.status_line != "HTTP/1.1 503 Service Unavailable").then_some(answer.status_line)
    });
    assert_eq!(served.as_deref(), Some("HTTP/1.1 404 Not Found"));
    drop(held);
}
