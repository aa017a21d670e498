//! Strict request heads (issue 9, hole 12): a `GET` with a body, or with
//! a header the gateway acts on given twice, is refused with 400 and a
//! close instead of having the body ignored and the first header win;
//! a bearer key in clear is refused, in any case of its scheme, and
//! logged as exposed by its key id, never the key.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{EVENT_TIMEOUT, Gateway, GatewayConfig, IO_TIMEOUT, TlsRig, block_on, plain_binding};
use ringway::auth::KeyId;
use ringway::client;
use ringway::proto;

const KEY: &str = "Testing1";

/// A registration head signed by the library, valid as it stands, with
/// `extra` header lines added after the signed ones.
fn register_head(gw: &Gateway, extra: &[(&str, &str)]) -> Vec<u8> {
    let ep = gw.endpoint(KEY, "pc1");
    let mut lines = vec![
        ("Upgrade", proto::UPGRADE_AGENT.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    lines.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
    client::request_head(&ep, plain_binding(&ep), "GET", proto::PATH_REGISTER, &lines)
}

/// Sends `request` and reads the answer to the gateway's close.
fn answer(gw: &Gateway, request: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.addr()).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(request).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("the gateway answers, then closes");
    String::from_utf8(raw).expect("a text answer")
}

/// The exact bytes of a refusal from `gw`.
fn refusal(gw: &Gateway, status_line: &str, reason: &str) -> String {
    let body = format!("{reason}\n");
    format!(
        "{status_line}\r\nRingway-Boot: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        gw.boot(),
        body.len()
    )
}

/// Asserts that the registration with `extra` added gets exactly a 400
/// with `reason`, and that no agent got in.
fn assert_bad_request(extra: &[(&str, &str)], reason: &str) {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let got = answer(&gw, &register_head(&gw, extra));
    assert_eq!(got, refusal(&gw, "HTTP/1.1 400 Bad Request", reason));
    assert_eq!(gw.count_events("Client pc1 connected"), 0);
}

#[test]
fn a_get_with_content_length_gets_400_and_a_close() {
    assert_bad_request(
        &[("Content-Length", "5")],
        "a GET request must not have a body (Content-Length)",
    );
}

#[test]
fn a_get_with_transfer_encoding_gets_400_and_a_close() {
    assert_bad_request(
        &[("Transfer-Encoding", "chunked")],
        "a GET request must not have a body (Transfer-Encoding)",
    );
}

#[test]
fn a_duplicate_authorization_gets_400_though_the_first_is_valid() {
    assert_bad_request(
        &[("Authorization", "Ringway-HMAC-SHA256 kid=0000000000000000")],
        "duplicate Authorization header",
    );
}

#[test]
fn a_duplicate_ringway_identity_gets_400() {
    assert_bad_request(&[("Ringway-Identity", "pc2")], "duplicate Ringway-Identity header");
}

#[test]
fn every_other_header_the_gateway_acts_on_duplicated_gets_400() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    let boot = gw.boot();
    for (name, value) in [
        ("Ringway-Boot", boot.as_str()),
        ("Upgrade", proto::UPGRADE_AGENT),
        ("Ringway-Agent-Mac", "02%3A00%3A00%3A00%3A00%3A02"),
        ("Ringway-Agent-Ip", "10.0.0.9"),
        ("Ringway-Agent-Os", "other"),
    ] {
        // The library writes Upgrade and Ringway-Boot itself; the others
        // once here and once more.
        let extra: Vec<(&str, &str)> = match name {
            "Upgrade" | "Ringway-Boot" => vec![(name, value)],
            _ => vec![(name, value), (name, value)],
        };
        let got = answer(&gw, &register_head(&gw, &extra));
        assert_eq!(
            got,
            refusal(&gw, "HTTP/1.1 400 Bad Request", &format!("duplicate {name} header")),
            "{name} twice"
        );
    }
    assert_eq!(gw.count_events("Client pc1 connected"), 0);
}

#[test]
fn a_bearer_key_over_plain_http_gets_401_and_is_logged_as_exposed_by_key_name() {
    let gw = Gateway::start(&GatewayConfig::new(&[KEY]));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = format!("GET /v1/clients HTTP/1.1\r\nHost: gw\r\nAuthorization: {scheme} {KEY}\r\n\r\n");
        assert_eq!(
            answer(&gw, request.as_bytes()),
            refusal(
                &gw,
                "HTTP/1.1 401 Unauthorized",
                "bearer keys are accepted over TLS (https) only; over plain HTTP prove the key"
            ),
            "scheme {scheme:?}"
        );
    }
    // The plain key list names KEY key1; its hash is never shown either.
    let exposed =
        "Gateway key key1 was sent in clear over plain HTTP from 127.0.0.1: treat it as exposed and replace it";
    gw.wait_for_event(exposed, EVENT_TIMEOUT);
    assert!(
        gw.lines().iter().all(|l| !l.contains(&KeyId::of(KEY).to_string())),
        "the key's hash is never logged"
    );
    assert!(
        gw.lines().iter().all(|l| !l.contains(KEY)),
        "the key itself is never logged"
    );
}

#[test]
fn a_bearer_key_over_tls_is_accepted_in_any_case_of_its_scheme() {
    let rig = TlsRig::start(KEY, false);
    let ep = rig.endpoint("ops");
    for scheme in ["Bearer", "bearer", "BeArEr"] {
        let request = format!("GET /v1/clients HTTP/1.1\r\nHost: gw\r\nAuthorization: {scheme} {KEY}\r\n\r\n");
        let status = block_on(async {
            let conn = client::dial(&ep).await.expect("dial over TLS");
            let (head, _) = client::exchange(&conn, request.into_bytes()).await.expect("an answer");
            head.status
        });
        assert_eq!(status, 200, "scheme {scheme:?}");
    }
}
