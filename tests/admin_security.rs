//! The admin listener against the holes hostile probes found (issue 9,
//! item 7): idle sockets that delayed everyone, a cross-origin reload, a
//! rebound Host reading agent data, missing browser protections, and no
//! bound on connections. docs/ADMIN.md is the spec.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway::admin::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE};
use socket2::{Domain, Socket, Type};

use common::{
    Gateway, GatewayConfig, IO_TIMEOUT, Reply, Service, curl_reply, http_exchange, parse_head, raw_exchange, read_reply,
};

/// The gateway key every test uses.
const KEY: &str = "ops-key-alpha";
/// The MAC the test agents report: agent data a rebinding page must not see.
const MAC: &str = "02:00:00:00:00:01";
/// The refusal of a Host that is not the listener's.
const FOREIGN_HOST: &str = "this Host is not the admin listener's address, localhost or a name in [admin] hosts\n";
/// Logged when a reload starts, whoever asked for it.
const RELOADING: &str = "Reloading configuration";
/// The head deadline docs/ADMIN.md gives: one for the whole head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// A request to the admin listener with `headers` (each `Name: value`)
/// and an optional body.
fn request(method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.push_str(body);
    text
}

/// A connection to `to` from the loopback address `from` (all of
/// 127.0.0.0/8 is loopback on Linux), so a test can be several sources.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket
        .bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect(&to.into())
        .unwrap_or_else(|e| panic!("connect {from} to {to}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    stream
}

/// Asserts that the listener has neither answered nor closed `s`.
fn assert_still_waiting(s: &TcpStream, what: &str) {
    s.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    match (&*s).read(&mut byte) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{what}: the listener already answered or closed it: {other:?}"),
    }
    s.set_nonblocking(false).expect("blocking again");
}

/// The five headers every admin answer carries, with their exact values.
fn assert_security_headers(reply: &Reply, what: &str) {
    let expected = [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expected {
        assert_eq!(reply.header(name), Some(value), "{name} on {what}");
    }
}

#[test]
fn idle_admin_sockets_do_not_delay_metrics() {
    const IDLE: usize = 4;
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(gw.admin()).expect("an idle admin connection"))
        .collect();
    // One of them a slowloris: half a head, the rest never sent.
    idle[0]
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1")
        .expect("half a head");

    let started = Instant::now();
    let metrics = gw.metrics();
    assert_eq!(metrics.sum("ringway_workers_answered", &[]), gw.workers() as f64);
    // Served one at a time, /metrics waited a deadline per idle socket,
    // which by then had been answered 408 and closed.
    for (i, s) in idle.iter().enumerate() {
        assert_still_waiting(s, &format!("idle socket {i}"));
    }
    assert!(
        started.elapsed() < HEAD_DEADLINE,
        "/metrics took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_trickled_admin_head_is_cut_at_one_deadline() {
    // 2 bytes every 200 ms: each read arrives well within any per-read
    // timeout, and the whole head would take over 10 s.
    const PACE: Duration = Duration::from_millis(200);
    const PAD: usize = 80;
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let admin = gw.admin();
    let head = format!(
        "GET /api/clients HTTP/1.1\r\nHost: {admin}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(PAD)
    );
    let mut s = TcpStream::connect(admin).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    let mut writer = s.try_clone().expect("a second handle");
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        for pair in head.as_bytes().chunks(2) {
            if writer.write_all(pair).is_err() {
                return; // Closed by the listener: what the test expects.
            }
            // Pacing a slow client, not waiting for an event.
            std::thread::sleep(PACE);
        }
    });
    let reply = read_reply(&mut s);
    let took = started.elapsed();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (408, "request head not received in time\n")
    );
    assert!(
        took >= HEAD_DEADLINE && took < HEAD_DEADLINE * 2,
        "408 after {took:?}, not at the head deadline"
    );
    drop(s);
    trickle.join().expect("the trickling thread");
}

#[test]
fn a_flood_of_admin_connections_gets_503_past_the_bound() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let admin = gw.admin();
    let get = |from: Ipv4Addr| {
        let mut s = connect_from(from, admin);
        let host = format!("Host: {admin}");
        s.write_all(request("GET", "/api/clients", &[&host], "").as_bytes())
            .expect("send");
        read_reply(&mut s)
    };
    let first = Ipv4Addr::new(127, 0, 0, 1);
    let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS_PER_SOURCE)
        .map(|_| connect_from(first, admin))
        .collect();
    let over_share = get(first);
    assert_eq!(over_share.status, 503);
    assert_eq!(
        over_share.body,
        format!(
            "admin listener busy: {MAX_CONNECTIONS_PER_SOURCE} connections open from your address; try again shortly\n"
        )
    );
    assert_security_headers(&over_share, "a 503");

    // Other sources fill the rest; then everyone is refused.
    let mut octet = 2;
    while held.len() < MAX_CONNECTIONS {
        let from = Ipv4Addr::new(127, 0, 0, octet);
        let room = (MAX_CONNECTIONS - held.len()).min(MAX_CONNECTIONS_PER_SOURCE);
        held.extend((0..room).map(|_| connect_from(from, admin)));
        octet += 1;
    }
    let stranger = Ipv4Addr::new(127, 0, 0, 200);
    let full = get(stranger);
    assert_eq!(
        (full.status, full.body.as_str()),
        (
            503,
            format!("admin listener busy: {MAX_CONNECTIONS} connections open; try again shortly\n").as_str()
        )
    );

    // A held connection is served normally, and its slot comes back by
    // the time its answer is read.
    let mut one = held.pop().expect("a held connection");
    let host = format!("Host: {admin}");
    one.write_all(request("GET", "/api/clients", &[&host], "").as_bytes())
        .expect("send on a held connection");
    assert_eq!(read_reply(&mut one).status, 200);
    let served = get(stranger);
    assert_eq!((served.status, served.body.as_str()), (200, "[]"));
    for (i, s) in held.iter().enumerate() {
        assert_still_waiting(s, &format!("held connection {i}"));
    }
}

#[test]
fn a_cross_origin_reload_is_refused() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let admin = gw.admin();
    let host = format!("Host: {admin}");
    let form = "Content-Type: application/x-www-form-urlencoded";
    let refusals = [
        (
            vec!["Origin: http://evil.example", form],
            "cross-origin request refused: Origin is not this console's own\n",
        ),
        (
            vec!["Origin: null", form],
            "cross-origin request refused: Origin is not this console's own\n",
        ),
        (
            vec!["Sec-Fetch-Site: cross-site", form],
            "cross-origin request refused: Sec-Fetch-Site says another site sent it\n",
        ),
        (
            vec!["Referer: http://evil.example/csrf.html", form],
            "cross-origin request refused: Referer is not this console's own\n",
        ),
    ];
    for (headers, reason) in refusals {
        let mut all = vec![host.as_str()];
        all.extend(headers.iter().copied());
        let reply = http_exchange(admin, &request("POST", "/api/reload", &all, "reload=1"));
        assert_eq!((reply.status, reply.body.as_str()), (403, reason), "{headers:?}");
        assert_security_headers(&reply, "a refused reload");
    }
    // A real client, as a browser's form post would look.
    let url = format!("http://{admin}/api/reload");
    let curl = curl_reply(&["-H", "Origin: http://evil.example", "--data", "reload=1"], &url);
    assert_eq!(
        (curl.status, curl.body.as_str()),
        (403, "cross-origin request refused: Origin is not this console's own\n")
    );

    // The console's own origin may; the event log shows that one reload
    // and no other (events are in order, so an earlier one would show).
    let origin = format!("Origin: http://{admin}");
    let reply = http_exchange(admin, &request("POST", "/api/reload", &[&host, &origin], ""));
    assert_eq!((reply.status, reply.body.as_str()), (200, "configuration reloaded\n"));
    gw.wait_reloaded(1);
    assert_eq!(gw.count_events(RELOADING), 1, "{:#?}", gw.events());
}

#[test]
fn a_foreign_host_is_refused() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(KEY, "pc1", echo.addr());
    let admin = gw.admin();
    let port = admin.port();
    // What a page on evil.example sends once its name points at 127.0.0.1.
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost:{}", port ^ 1),
    ] {
        for path in ["/", "/api/clients", "/api/sessions", "/metrics"] {
            let header = format!("Host: {host}");
            let reply = http_exchange(admin, &request("GET", path, &[&header], ""));
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (403, FOREIGN_HOST),
                "{host} {path}"
            );
            assert_security_headers(&reply, "a foreign Host");
        }
    }
    // curl resolving the attacker's name to the listener, as the
    // browser would after the rebinding.
    let resolve = format!("evil.example:{port}:127.0.0.1");
    let reply = curl_reply(
        &["--resolve", &resolve],
        &format!("http://evil.example:{port}/api/clients"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (403, FOREIGN_HOST));
    // No Host at all, or two.
    let none = http_exchange(admin, &request("GET", "/api/clients", &[], ""));
    assert_eq!((none.status, none.body.as_str()), (400, "a Host header is required\n"));
    let two = [format!("Host: {admin}"), "Host: evil.example".to_string()];
    let two = http_exchange(admin, &request("GET", "/api/clients", &[&two[0], &two[1]], ""));
    assert_eq!((two.status, two.body.as_str()), (400, "more than one Host header\n"));

    // The listener's own names still see the agent, MAC and all.
    for host in [admin.to_string(), format!("localhost:{port}")] {
        let header = format!("Host: {host}");
        let reply = http_exchange(admin, &request("GET", "/api/clients", &[&header], ""));
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
        assert!(
            reply.body.contains("\"name\":\"pc1\"") && reply.body.contains(MAC),
            "{}",
            reply.body
        );
    }
}

#[test]
fn a_configured_host_is_served() {
    let config = GatewayConfig {
        admin_hosts: vec!["console.example".into()],
        ..GatewayConfig::operated(&[KEY])
    };
    let gw = Gateway::start(&config);
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(KEY, "pc1", echo.addr());
    let port = gw.admin().port();
    let resolve = |name: &str| format!("{name}:{port}:127.0.0.1");

    let reply = curl_reply(
        &["--resolve", &resolve("console.example")],
        &format!("http://console.example:{port}/api/clients"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply.body.contains("\"name\":\"pc1\"") && reply.body.contains(MAC),
        "{}",
        reply.body
    );
    // A state change from the configured origin is the console's own.
    let reload = curl_reply(
        &[
            "--resolve",
            &resolve("console.example"),
            "-X",
            "POST",
            "-H",
            &format!("Origin: http://console.example:{port}"),
        ],
        &format!("http://console.example:{port}/api/reload"),
    );
    assert_eq!((reload.status, reload.body.as_str()), (200, "configuration reloaded\n"));
    gw.wait_reloaded(1);

    // Names beside it are not.
    for name in ["other.example", "sub.console.example"] {
        let reply = curl_reply(
            &["--resolve", &resolve(name)],
            &format!("http://{name}:{port}/api/clients"),
        );
        assert_eq!((reply.status, reply.body.as_str()), (403, FOREIGN_HOST), "{name}");
    }
}

#[test]
fn security_headers_are_sent() {
    let gw = Gateway::start(&GatewayConfig::operated(&[KEY]));
    let admin = gw.admin();
    let host = format!("Host: {admin}");
    let cases = [
        ("GET", "/", 200, "text/html; charset=utf-8"),
        ("HEAD", "/", 200, "text/html; charset=utf-8"),
        ("GET", "/console.css", 200, "text/css; charset=utf-8"),
        ("GET", "/api/clients", 200, "application/json"),
        ("GET", "/api/sessions", 200, "application/json"),
        ("GET", "/metrics", 200, "text/plain; version=0.0.4"),
        ("GET", "/no-such-page", 404, "text/plain; charset=utf-8"),
        ("PUT", "/metrics", 405, "text/plain; charset=utf-8"),
    ];
    for (method, path, status, content_type) in cases {
        let reply = parse_head(&raw_exchange(admin, &request(method, path, &[&host], "")));
        let body = reply.body.as_str();
        let what = format!("{method} {path}");
        assert_eq!(reply.status, status, "{what}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{what}");
        assert_security_headers(&reply, &what);
        let answered = format!("{} of {}", gw.workers(), gw.workers());
        let from_snapshot = matches!(path, "/" | "/api/clients" | "/api/sessions" | "/metrics") && status == 200;
        assert_eq!(
            reply.header("ringway-workers-answered"),
            from_snapshot.then_some(answered.as_str()),
            "{what}"
        );
        if method == "HEAD" {
            assert_eq!(body, "", "{what} has no body");
            assert!(reply.header("content-length").is_some_and(|l| l != "0"), "{what}");
        }
    }
    // The console loads nothing but its own stylesheet.
    let page = gw.get("/");
    assert!(page.body.contains("<link rel=\"stylesheet\" href=\"/console.css\">"));
    assert!(
        !page.body.contains("<script") && !page.body.contains("<style"),
        "{}",
        page.body
    );
}
