//! Operator sign-in end to end: real `ringway serve` gateways with
//! `[[operators]]`, signed into with the real `ringway control login` and
//! with the client library, on loopback ports the gateways pick. What the
//! answers, the relayed bytes and the event log must say is exact.
//!
//! Verifiers are made here with argon2's cheapest accepted cost (19 MiB,
//! 2 passes), so each sign-in costs the test tens of milliseconds.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{
    EVENT_TIMEOUT, Finished, Gateway, GatewayConfig, IO_TIMEOUT, Service, Tap, TestDir, TlsConfig, block_on,
    connect_std, echo_round_trip, endpoint, gen_cert, json_names, list, names, refusal, ringway_client, run_bounded,
    sha256,
};
use data_encoding::{BASE64, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
use ringway::auth::scram::{Argon2Params, Verifier};
use ringway::auth::totp::{self, TotpSecret};
use ringway::client::{self, ClientError, Credential, Endpoint, OperatorTicket};
use ringway::conn::Conn;
use ringway::eventlog::REPEAT_WINDOW;
use ringway::lines::read_line;
use ringway::relay::Duplex;
use ringway::tls::Trust;

/// argon2's floor (`ParamPolicy::STRONG`): what the client accepts at least.
const FAST: Argon2Params = Argon2Params {
    m_kib: 19_456,
    t: 2,
    p: 1,
};

const ACME: (&str, &str) = ("acme", "acme-key-0001");
const BETA: (&str, &str) = ("beta", "beta-key-0002");

const ALICE_PASSWORD: &str = "correct horse battery";
const BOB_PASSWORD: &str = "bob's own password";
/// A TOTP secret (base32 of 20 bytes), as `ringway operator add --totp` makes.
const CAROL_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const CAROL_PASSWORD: &str = "carol likes codes";

const SIGN_IN_FIRST: &str = "sign in first: ringway control login";
const SIGN_IN_AGAIN: &str = "sign in again: ringway control login";
const REFUSED: &str = "sign-in refused: invalid-proof";

/// A verifier of `password` with a salt of its own, at [`FAST`].
fn verifier(password: &str) -> String {
    Verifier::generate(password.as_bytes(), &FAST)
        .expect("a verifier")
        .to_text()
}

/// An `[[operators]]` block.
fn operator(name: &str, password: &str, extra: &str) -> String {
    format!(
        "[[operators]]\nname = {name:?}\nverifier = {:?}\n{extra}",
        verifier(password)
    )
}

/// A gateway with keys acme and beta, the event log and admin listener,
/// and these `[auth]` lines and operator blocks.
fn config(auth: &str, operators: &[String]) -> GatewayConfig {
    let mut c = GatewayConfig::operated(&[]);
    c.named_keys = vec![
        (ACME.0.to_string(), ACME.1.to_string()),
        (BETA.0.to_string(), BETA.1.to_string()),
    ];
    c.tail = vec![format!("[auth]\n{auth}")];
    c.tail.extend(operators.iter().cloned());
    c
}

/// Signs in through the library; the endpoint then carries the ticket.
fn sign_in(ep: &Endpoint, user: &str, password: &str, code: Option<String>) -> Result<Endpoint, ClientError> {
    let mut give = move || Ok(code.clone());
    let t = block_on(client::login(ep, user, password.as_bytes(), &mut give))?;
    Ok(signed(ep, t))
}

fn signed(ep: &Endpoint, t: OperatorTicket) -> Endpoint {
    Endpoint {
        operator: Some(Arc::new(t)),
        ..ep.clone()
    }
}

/// The refusal a sign-in got.
fn sign_in_refusal(ep: &Endpoint, user: &str, password: &str, code: Option<String>) -> (u16, String) {
    refusal(sign_in(ep, user, password, code))
}

/// A `ringway` client command proving acme's key, with its tickets in
/// `home` and `password` in its environment.
fn control_command(home: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = ringway_client(ACME.1, args);
    cmd.env("XDG_CONFIG_HOME", home)
        .env_remove("RINGWAY_PASSWORD")
        .env_remove("RINGWAY_TOTP");
    cmd
}

fn run(cmd: std::process::Command) -> Finished {
    run_bounded(cmd, b"", EVENT_TIMEOUT)
}

/// Waits, if need be, until at least 5 s of the current 30 s TOTP step
/// remain, so codes computed now are judged in the same step by the
/// gateway. The clock is the only thing to wait for here: no event says
/// a step began.
fn settled_step() -> u64 {
    loop {
        let now = common::unix_now();
        if now % 30 < 25 {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn carol_code(at: u64) -> String {
    let secret = TotpSecret::from_base32(CAROL_SECRET).expect("a secret");
    totp::code_at(&secret, &totp::Params::DEFAULT, at)
}

#[test]
fn login_then_ls_and_connect_through_the_real_binaries_then_logout() {
    let alice = operator("alice", ALICE_PASSWORD, "");
    let gw = Gateway::start(&config("totp = \"off\"\n", &[alice]));
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(ACME.1, "pc-1", echo.addr());
    let home = TestDir::new("operator-home");
    let addr = gw.addr().to_string();

    // Without a ticket, the exact refusal and a non-zero exit.
    let ls = run(control_command(
        home.path(),
        &["control", "ls", "--json", "--gateway", &addr, "--as", "ops"],
    ));
    assert!(!ls.success(), "{ls:?}");
    assert!(
        ls.stderr.contains(&format!("gateway refused (401): {SIGN_IN_FIRST}")),
        "{ls:?}"
    );

    let mut login = control_command(
        home.path(),
        &["control", "login", "--gateway", &addr, "--user", "alice", "--as", "ops"],
    );
    login.env("RINGWAY_PASSWORD", ALICE_PASSWORD);
    let done = run(login);
    assert!(done.success(), "{done:?}");
    gw.wait_for_event(
        "Operator alice signed in as Control ops with key acme from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    let file = home
        .path()
        .join("ringway/tickets")
        .join(format!("{}.json", addr.replace(':', "_")));
    let mode = std::fs::metadata(&file).expect("the ticket file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let stored = std::fs::read_to_string(&file).expect("readable");
    assert!(!stored.contains(ALICE_PASSWORD), "the password is never stored");

    // ls takes the ticket's control name without --as.
    let ls = run(control_command(
        home.path(),
        &["control", "ls", "--json", "--gateway", &addr],
    ));
    assert!(ls.success(), "{ls:?}");
    assert_eq!(json_names(&ls.stdout), ["pc-1"]);

    let connect = control_command(
        home.path(),
        &[
            "control",
            "connect",
            "pc-1",
            "--gateway",
            &addr,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let control = common::LoggedChild::spawn("control", connect);
    let line = control.wait_for_line("listening on ", EVENT_TIMEOUT);
    let local = line
        .rsplit_once("listening on ")
        .and_then(|(_, rest)| rest.split(';').next())
        .expect("an address")
        .trim()
        .to_string();
    let mut s = TcpStream::connect(&local).expect("connect to the control");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("a timeout");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the echo");
    assert_eq!(sha256(&back), sha256(&payload), "exact bytes back through the relay");
    gw.wait_for_event("Control alice connected to Client pc-1", EVENT_TIMEOUT);
    drop(control);

    let out = run(control_command(home.path(), &["control", "logout", "--gateway", &addr]));
    assert!(out.success(), "{out:?}");
    assert!(!file.exists(), "logout removes the ticket");
    let ls = run(control_command(
        home.path(),
        &["control", "ls", "--gateway", &addr, "--as", "ops"],
    ));
    assert!(!ls.success());
    assert!(ls.stderr.contains(SIGN_IN_FIRST), "{ls:?}");
}

#[test]
fn without_a_ticket_browse_and_connect_get_the_exact_error() {
    let gw = Gateway::start(&config("", &[operator("alice", ALICE_PASSWORD, "")]));
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(ACME.1, "pc-1", echo.addr());
    let ep = gw.endpoint(ACME.1, "ops");
    assert_eq!(refusal(list(&ep)), (401, SIGN_IN_FIRST.to_string()));
    gw.wait_for_event(
        "Sign-in check failed for Control ops: no_ticket. Terminating connection from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    assert_eq!(refusal(connect_std(&ep, "pc-1")), (401, SIGN_IN_FIRST.to_string()));
    assert_eq!(echo.accepted(), 0, "the agent is never asked");
    // A ticket for another control name is refused as well.
    let signed_in = sign_in(&ep, "alice", ALICE_PASSWORD, None).expect("signed in");
    let other = Endpoint {
        identity: "elsewhere".into(),
        ..signed_in.clone()
    };
    assert_eq!(refusal(list(&other)), (401, SIGN_IN_AGAIN.to_string()));
    assert_eq!(names(&signed_in), ["pc-1"]);
    echo_round_trip(&signed_in, "pc-1", b"hello through a ticket");
}

#[test]
fn wrong_password_unknown_user_and_locked_get_the_same_answer_and_five_failures_lock() {
    let gw = Gateway::start(&config("", &[operator("bob", BOB_PASSWORD, "")]));
    let ep = gw.endpoint(ACME.1, "ops");
    assert_eq!(
        sign_in_refusal(&ep, "bob", "not bob's password", None),
        (401, REFUSED.into())
    );
    gw.wait_for_event(
        "Sign-in failed for Operator bob: wrong_password. Rejecting sign-in from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    assert_eq!(
        sign_in_refusal(&ep, "nobody", BOB_PASSWORD, None),
        (401, REFUSED.into())
    );
    // Three more wrong (four in a row), then the right one resets the count.
    for _ in 0..3 {
        assert_eq!(sign_in_refusal(&ep, "bob", "still wrong", None), (401, REFUSED.into()));
    }
    sign_in(&ep, "bob", BOB_PASSWORD, None).expect("the fifth try is right: not locked");
    for i in 0..5 {
        assert_eq!(
            sign_in_refusal(&ep, "bob", "wrong again", None),
            (401, REFUSED.into()),
            "try {i}"
        );
    }
    gw.wait_for_event(
        "Operator bob is locked for 30 minutes after 5 failed sign-ins in a row",
        EVENT_TIMEOUT,
    );
    assert_eq!(
        gw.count_events("Operator bob is locked for 30 minutes after 5 failed sign-ins in a row"),
        1
    );
    // Locked: the right password gets the very same answer.
    assert_eq!(sign_in_refusal(&ep, "bob", BOB_PASSWORD, None), (401, REFUSED.into()));
    gw.wait_for_event_prefix(
        "Sign-in failed for Operator bob: locked. Rejecting sign-in from 127.0.0.1",
        REPEAT_WINDOW + EVENT_TIMEOUT,
    );
    let m = gw.metrics();
    for (outcome, n) in [
        ("ok", 1.0),
        ("wrong_password", 9.0),
        ("unknown_operator", 1.0),
        ("locked", 1.0),
    ] {
        assert_eq!(m.sum("ringway_sign_ins_total", &[("outcome", outcome)]), n, "{outcome}");
    }
    assert_eq!(m.sum("ringway_sign_ins_total", &[]), 12.0, "no other outcome");
}

#[test]
fn a_used_code_is_refused_and_skew_is_one_step_each_way() {
    let carol = operator("carol", CAROL_PASSWORD, &format!("totp_secret = {CAROL_SECRET:?}\n"));
    let gw = Gateway::start(&config("totp = \"required\"\n", &[carol]));
    let ep = gw.endpoint(ACME.1, "ops");
    let now = settled_step();
    for off in [-60i64, 60] {
        let code = carol_code(now.saturating_add_signed(off));
        assert_eq!(
            sign_in_refusal(&ep, "carol", CAROL_PASSWORD, Some(code)),
            (401, REFUSED.into()),
            "two steps off ({off} s) is refused"
        );
    }
    assert_eq!(
        sign_in_refusal(&ep, "carol", CAROL_PASSWORD, None),
        (401, REFUSED.into()),
        "no code"
    );
    let behind = carol_code(now - 30);
    sign_in(&ep, "carol", CAROL_PASSWORD, Some(behind.clone())).expect("one step behind is accepted");
    assert_eq!(
        sign_in_refusal(&ep, "carol", CAROL_PASSWORD, Some(behind)),
        (401, REFUSED.into()),
        "an accepted code is never accepted again"
    );
    let ahead = carol_code(now + 30);
    let signed_in = sign_in(&ep, "carol", CAROL_PASSWORD, Some(ahead.clone())).expect("one step ahead is accepted");
    assert_eq!(
        sign_in_refusal(&ep, "carol", CAROL_PASSWORD, Some(ahead)),
        (401, REFUSED.into())
    );
    assert_eq!(names(&signed_in), Vec::<String>::new());
}

#[test]
fn an_operator_sees_and_reaches_only_its_keys_and_patterns() {
    let alice = operator("alice", ALICE_PASSWORD, "keys = [\"acme\"]\nagents = [\"pc-*\"]\n");
    let bea = operator("bea", BOB_PASSWORD, "keys = [\"beta\"]\n");
    let gw = Gateway::start(&config("", &[alice, bea]));
    let echo = Service::echo();
    let _a = gw.serving_agent(ACME.1, "pc-1", echo.addr());
    let _b = gw.serving_agent(ACME.1, "kiosk-1", echo.addr());
    let _c = gw.serving_agent(BETA.1, "pc-9", echo.addr());
    let alice = sign_in(&gw.endpoint(ACME.1, "ops"), "alice", ALICE_PASSWORD, None).expect("alice");
    assert_eq!(names(&alice), ["pc-1"], "key acme's agents matching pc-*");
    assert_eq!(
        refusal(connect_std(&alice, "kiosk-1")),
        (404, "no client named kiosk-1 is connected".to_string())
    );
    echo_round_trip(&alice, "pc-1", b"within the pattern");
    let bea = sign_in(&gw.endpoint(BETA.1, "ops"), "bea", BOB_PASSWORD, None).expect("bea");
    assert_eq!(
        names(&bea),
        ["pc-9"],
        "an operator of key beta never sees acme's agents"
    );
    // alice may not sign in with beta's key: the same refusal as any.
    assert_eq!(
        sign_in_refusal(&gw.endpoint(BETA.1, "ops"), "alice", ALICE_PASSWORD, None),
        (401, REFUSED.into())
    );
}

#[test]
fn a_removed_operators_ticket_is_refused_after_reload_and_its_session_ends() {
    let alice = operator("alice", ALICE_PASSWORD, "");
    let bob = operator("bob", BOB_PASSWORD, "");
    let mut cfg = config("", &[alice, bob.clone()]);
    let gw = Gateway::start(&cfg);
    let service = Service::manual();
    let _pc1 = gw.serving_agent(ACME.1, "pc-1", service.addr());
    let ep = sign_in(&gw.endpoint(ACME.1, "ops"), "alice", ALICE_PASSWORD, None).expect("alice");
    let mut session = connect_std(&ep, "pc-1").expect("a session");
    let mut far = service.accept(EVENT_TIMEOUT);
    session.stream.write_all(b"ping").expect("send");
    let mut got = [0u8; 4];
    far.read_exact(&mut got).expect("the agent's side gets it");
    assert_eq!(&got, b"ping");
    gw.wait_for_event("Control alice connected to Client pc-1", EVENT_TIMEOUT);
    let sessions = gw.get_json("/api/sessions");
    let rows = sessions.as_array().expect("an array of sessions");
    assert_eq!(rows.len(), 1, "{sessions}");
    assert_eq!(rows[0]["operator"], "alice", "{sessions}");
    assert_eq!(rows[0]["control"], "ops", "{sessions}");

    cfg.tail = vec!["[auth]\n".to_string(), bob];
    gw.rewrite(&cfg);
    gw.reload_by_sighup();
    gw.wait_for_event(
        "Operator alice was removed: its tickets are revoked and its sessions are ended",
        EVENT_TIMEOUT,
    );
    gw.wait_for_event("Control alice disconnected from Client pc-1", EVENT_TIMEOUT);
    let mut rest = Vec::new();
    session.stream.read_to_end(&mut rest).expect("the session ends");
    assert_eq!(rest, b"", "nothing more after the revocation");
    assert_eq!(refusal(list(&ep)), (401, SIGN_IN_AGAIN.to_string()));
    sign_in(&gw.endpoint(ACME.1, "ops"), "bob", BOB_PASSWORD, None).expect("bob stays");
}

#[test]
fn sign_in_over_plain_http_never_carries_the_password() {
    let gw = Gateway::start(&config("", &[operator("alice", ALICE_PASSWORD, "")]));
    let tap = Tap::start(gw.addr());
    let ep = endpoint(tap.addr(), ACME.1, "ops");
    let signed_in = sign_in(&ep, "alice", ALICE_PASSWORD, None).expect("signed in through the tap");
    assert_eq!(names(&signed_in), Vec::<String>::new());
    // Connection 0 signed in (the client sent all of it before the
    // gateway's last answer), connection 1 browsed with the ticket.
    let mut sent = tap.heads(0, 1);
    sent.extend(tap.heads(1, 1));
    let pw = ALICE_PASSWORD.as_bytes();
    for (what, form) in [
        ("as is", pw.to_vec()),
        ("base64", BASE64.encode(pw).into_bytes()),
        ("base64url", BASE64URL_NOPAD.encode(pw).into_bytes()),
        ("hex", HEXLOWER.encode(pw).into_bytes()),
        ("HEX", HEXUPPER.encode(pw).into_bytes()),
        (
            "percent-encoded",
            ringway::http::pct_encode(ALICE_PASSWORD).into_bytes(),
        ),
    ] {
        assert!(
            !sent.windows(form.len()).any(|w| w == form.as_slice()),
            "the password went over the wire {what}"
        );
    }
    assert!(
        sent.windows(6).any(|w| w == b"SCRAM "),
        "the exchange itself was captured"
    );
}

#[test]
fn a_stolen_verifier_cannot_sign_in() {
    let text = verifier(ALICE_PASSWORD);
    let gw = Gateway::start(&config(
        "",
        &[format!("[[operators]]\nname = \"alice\"\nverifier = {text:?}\n")],
    ));
    let ep = gw.endpoint(ACME.1, "ops");
    // The verifier's parts: ...$<salt>$<StoredKey>$<ServerKey>.
    let parts: Vec<&str> = text.rsplitn(3, '$').collect();
    let key = |s: &str| -> [u8; 32] {
        let bytes = data_encoding::BASE64_NOPAD.decode(s.as_bytes()).expect("base64");
        bytes.try_into().expect("32 bytes")
    };
    let (server_key, stored_key) = (key(parts[0]), key(parts[1]));
    for (what, salted) in [("StoredKey", stored_key), ("ServerKey", server_key)] {
        let mut none = || Ok(None);
        let tried = block_on(client::login_with(&ep, "alice", Credential::Salted(&salted), &mut none));
        assert_eq!(refusal(tried), (401, REFUSED.into()), "{what} as the salted password");
    }
    assert_eq!(
        sign_in_refusal(&ep, "alice", &text, None),
        (401, REFUSED.into()),
        "the verifier as a password"
    );
    sign_in(&ep, "alice", ALICE_PASSWORD, None).expect("the password itself still works");
}

#[test]
fn a_source_gets_twenty_sign_ins_then_429() {
    let gw = Gateway::start(&config("", &[operator("alice", ALICE_PASSWORD, "")]));
    let ep = gw.endpoint(ACME.1, "ops");
    let upgrade = || {
        block_on(async {
            let stream = client::dial(&ep).await?;
            let extra = [
                ("Upgrade", ringway::proto::UPGRADE_LOGIN.to_string()),
                ("Connection", "Upgrade".to_string()),
            ];
            let (head, _) = client::request(&ep, &stream, "GET", ringway::proto::PATH_LOGIN, &extra).await?;
            Ok::<u16, ClientError>(head.status)
        })
    };
    for i in 0..20 {
        assert_eq!(upgrade().expect("an answer"), 101, "sign-in {i} is within the burst");
    }
    assert_eq!(upgrade().expect("an answer"), 429);
    // The event line may be summarised under a later line from the same
    // source (the 20 abandoned sign-ins'); the counter is exact.
    let refusals = gw
        .metrics()
        .sum("ringway_source_refusals_total", &[("reason", "sign_ins")]);
    assert_eq!(refusals, 1.0);
}

/// A sign-in connection on `ep` after its `101`, with the bytes read
/// past the answer.
async fn open_login(ep: &Endpoint) -> (Conn, Vec<u8>) {
    let stream: Conn = client::dial(ep).await.expect("dial");
    let extra = [
        ("Upgrade", ringway::proto::UPGRADE_LOGIN.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    let (head, pending) = client::request(ep, &stream, "GET", ringway::proto::PATH_LOGIN, &extra)
        .await
        .expect("an answer");
    assert_eq!(head.status, 101);
    (stream, pending)
}

/// Every line the gateway sends until it closes.
async fn rest_lines(stream: &Conn, pending: &mut Vec<u8>) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Ok(line)) = compio::time::timeout(EVENT_TIMEOUT, read_line(stream, pending, 4096)).await {
        got.push(line);
    }
    got
}

/// Opens a sign-in on `ep` (the upgrade), sends `lines` as they are and
/// gives every line the gateway sent back until it closed.
fn raw_login(ep: &Endpoint, lines: &[u8]) -> Vec<String> {
    block_on(async {
        let (stream, mut pending) = open_login(ep).await;
        let compio::BufResult(sent, _) = stream.write_all_from(lines.to_vec()).await;
        sent.expect("send the lines");
        rest_lines(&stream, &mut pending).await
    })
}

#[test]
fn malformed_login_lines_get_invalid_encoding_and_a_close() {
    let gw = Gateway::start(&config("", &[operator("alice", ALICE_PASSWORD, "")]));
    let ep = gw.endpoint(ACME.1, "ops");
    assert_eq!(raw_login(&ep, b"HELLO\n"), ["FAIL invalid-encoding"]);
    assert_eq!(raw_login(&ep, b"SCRAM n,,n=alice\n"), ["FAIL invalid-encoding"]);
    assert_eq!(
        raw_login(&ep, b"SCRAM n,,n=bad name,r=0123456789abcdef\n"),
        ["FAIL invalid-username-encoding"]
    );
    assert_eq!(
        raw_login(&ep, &[b'x'; 2000]),
        ["FAIL invalid-encoding"],
        "an endless line"
    );
    assert_eq!(
        raw_login(&ep, b"SCRAM \x1b[2J\n"),
        ["FAIL invalid-encoding"],
        "control bytes"
    );
    // A client asking to bind over plain HTTP: refused before any hashing.
    assert_eq!(
        raw_login(&ep, b"SCRAM p=tls-exporter,,n=alice,r=0123456789abcdef\n"),
        ["FAIL channel-bindings-dont-match"]
    );
    // A gateway without operators has no sign-in.
    let plain = Gateway::start(&GatewayConfig::new(&[ACME.1]));
    let (status, reason) = refusal(sign_in(&plain.endpoint(ACME.1, "ops"), "alice", ALICE_PASSWORD, None));
    assert_eq!((status, reason.as_str()), (404, "this gateway has no operators"));
    // And with none, the key alone still admits, as before.
    assert_eq!(names(&plain.endpoint(ACME.1, "ops")), Vec::<String>::new());
}

#[test]
fn over_tls_the_sign_in_is_bound_to_the_connection() {
    let dir = TestDir::new("operators-tls");
    let certs = dir.join("certs");
    gen_cert(&certs);
    let mut cfg = config("", &[operator("alice", ALICE_PASSWORD, "")]);
    cfg.tls = Some(TlsConfig {
        cert: certs.join("cert.pem"),
        key: certs.join("key.pem"),
        require: true,
    });
    let gw = Gateway::start_in(&dir, &cfg);
    let echo = Service::echo();
    let trust = Trust::CaFile(certs.join("ca.pem"));
    let _pc1 = gw.start_agent(
        gw.tls_endpoint(ACME.1, "pc-1", &trust),
        common::Behaviour::Serve(echo.addr()),
    );
    let ep = gw.tls_endpoint(ACME.1, "ops", &trust);
    let signed_in = sign_in(&ep, "alice", ALICE_PASSWORD, None).expect("signed in over TLS");
    assert_eq!(names(&signed_in), ["pc-1"]);
    let t = common::exchange(common::open_session(&signed_in, "pc-1"), 7, 100_000);
    assert_eq!(
        (t.received_len, t.received_sha256),
        (100_000, t.sent_sha256),
        "exact bytes back over TLS"
    );
    // A client that does not bind over TLS (a downgrade a man in the
    // middle would need) is refused before it hashes.
    assert_eq!(
        raw_login(&ep, b"SCRAM n,,n=alice,r=0123456789abcdef\n"),
        ["FAIL channel-bindings-dont-match"]
    );
    assert_eq!(
        raw_login(&ep, b"SCRAM y,,n=alice,r=0123456789abcdef\n"),
        ["FAIL channel-bindings-dont-match"]
    );
}

#[test]
fn totp_per_session_asks_a_fresh_code_for_each_connect() {
    let carol = operator("carol", CAROL_PASSWORD, &format!("totp_secret = {CAROL_SECRET:?}\n"));
    let gw = Gateway::start(&config("totp = \"required\"\ntotp_per_session = true\n", &[carol]));
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(ACME.1, "pc-1", echo.addr());
    let now = settled_step();
    let ep = sign_in(
        &gw.endpoint(ACME.1, "ops"),
        "carol",
        CAROL_PASSWORD,
        Some(carol_code(now - 30)),
    )
    .expect("signed in");
    assert_eq!(names(&ep), ["pc-1"], "a browse needs no code");
    let fresh = (401, "a fresh TOTP code is needed".to_string());
    assert_eq!(refusal(connect_std(&ep, "pc-1")), fresh, "no code");
    let with = |code: String| Endpoint {
        totp: Some(code),
        ..ep.clone()
    };
    echo_round_trip(&with(carol_code(now)), "pc-1", b"one code, one session");
    assert_eq!(
        refusal(connect_std(&with(carol_code(now)), "pc-1")),
        fresh,
        "the same code again"
    );
    assert_eq!(refusal(connect_std(&with("123".into()), "pc-1")), fresh, "not a code");
    echo_round_trip(&with(carol_code(now + 30)), "pc-1", b"the next step's code");
}

/// A sign-in as alice made by hand: the client-first, then a proof made
/// with the ClientKey that `client_key` gives for the server-first; every
/// line the gateway sent back until it closed.
fn hand_made_sign_in(ep: &Endpoint, client_key: impl Fn(&str) -> Vec<u8>) -> Vec<String> {
    block_on(async {
        let (stream, mut pending) = open_login(ep).await;
        let bare = "n=alice,r=handmadehandmade00";
        let write = |line: String| stream.write_all_from(line.into_bytes());
        write(format!("SCRAM n,,{bare}\n")).await.0.expect("send");
        let line = read_line(&stream, &mut pending, 4096).await.expect("server-first");
        let server_first = line.strip_prefix("SCRAM ").expect("a SCRAM line").to_string();
        let nonce = server_first
            .split(',')
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .expect("the nonce");
        let without_proof = format!("c={},r={nonce}", BASE64.encode(b"n,,"));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let client_key = client_key(&server_first);
        let stored = ring::digest::digest(&ring::digest::SHA256, &client_key);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, stored.as_ref());
        let signature = ring::hmac::sign(&key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature.as_ref()).map(|(a, b)| a ^ b).collect();
        write(format!("SCRAM {without_proof},p={}\n", BASE64.encode(&proof)))
            .await
            .0
            .expect("send");
        rest_lines(&stream, &mut pending).await
    })
}

/// What a stolen verifier gives: StoredKey and ServerKey, not ClientKey
/// (a SHA-256 preimage of StoredKey). The best a thief can put in
/// ClientKey's place is refused; the same hand-made exchange with the
/// ClientKey from the password signs in, so the forgery is built right.
#[test]
fn a_proof_forged_from_the_stored_key_is_refused() {
    let text = verifier(ALICE_PASSWORD);
    let gw = Gateway::start(&config(
        "totp = \"off\"\n",
        &[format!("[[operators]]\nname = \"alice\"\nverifier = {text:?}\n")],
    ));
    let ep = gw.endpoint(ACME.1, "ops");
    let field = |n: usize| {
        let b64 = text.rsplit('$').nth(n).expect("a verifier field");
        data_encoding::BASE64_NOPAD.decode(b64.as_bytes()).expect("base64")
    };
    let (server_key, stored_key) = (field(0), field(1));
    for (what, key) in [("StoredKey", stored_key), ("ServerKey", server_key)] {
        assert_eq!(
            hand_made_sign_in(&ep, |_| key.clone()),
            ["FAIL invalid-proof"],
            "{what} as ClientKey"
        );
    }
    let real = hand_made_sign_in(&ep, |_| {
        let salted = ringway::auth::scram::salted_password(ALICE_PASSWORD.as_bytes(), &verifier_salt(&text), &FAST)
            .expect("argon2");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
        ring::hmac::sign(&key, b"Client Key").as_ref().to_vec()
    });
    assert_eq!(real.len(), 2, "{real:?}");
    assert!(
        real[0].starts_with("SCRAM v=") && real[1].starts_with("TICKET rwt1."),
        "{real:?}"
    );
}

/// The salt of a verifier's text.
fn verifier_salt(text: &str) -> Vec<u8> {
    let b64 = text.rsplit('$').nth(2).expect("the salt");
    data_encoding::BASE64_NOPAD.decode(b64.as_bytes()).expect("base64")
}

#[test]
fn the_real_login_binary_reads_the_code_from_ringway_totp_once() {
    let carol = operator("carol", CAROL_PASSWORD, &format!("totp_secret = {CAROL_SECRET:?}\n"));
    let gw = Gateway::start(&config("totp = \"required\"\n", &[carol]));
    let home = TestDir::new("operator-home-totp");
    let addr = gw.addr().to_string();
    let code = carol_code(settled_step());
    let login = || {
        let mut cmd = control_command(
            home.path(),
            &["control", "login", "--gateway", &addr, "--user", "carol", "--as", "ops"],
        );
        cmd.env("RINGWAY_PASSWORD", CAROL_PASSWORD).env("RINGWAY_TOTP", &code);
        run(cmd)
    };
    let first = login();
    assert!(first.success(), "{first:?}");
    let again = login();
    assert!(!again.success(), "the same code twice: {again:?}");
    assert!(
        again.stderr.contains(&format!("gateway refused (401): {REFUSED}")),
        "{again:?}"
    );
    let ls = run(control_command(
        home.path(),
        &["control", "ls", "--json", "--gateway", &addr],
    ));
    assert!(ls.success(), "the first sign-in's ticket is still kept: {ls:?}");
    assert_eq!(json_names(&ls.stdout), Vec::<String>::new());
}

#[test]
fn a_state_dir_that_cannot_be_made_stops_the_start_with_its_path() {
    let dir = TestDir::new("operators-state");
    std::fs::write(dir.join("not-a-folder"), b"x").expect("a file");
    let cfg = config("", &[operator("alice", ALICE_PASSWORD, "")]);
    let text = cfg.to_toml(dir.path());
    let blocked = dir.join("not-a-folder").join("state");
    let text = text.replacen(
        "[gateway]\n",
        &format!("[gateway]\nstate_dir = {:?}\n", blocked.to_str().expect("UTF-8")),
        1,
    );
    let file = dir.join("gateway.toml");
    std::fs::write(&file, text).expect("write the config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.arg("serve").arg("--config").arg(&file);
    let done = run(cmd);
    assert!(!done.success(), "{done:?}");
    assert!(
        done.stderr.contains(&format!(
            "Failed to start Gateway - cannot read the ticket key {}: Not a directory",
            blocked.join("ticket.key").display()
        )),
        "{done:?}"
    );
}

#[test]
fn with_totp_off_an_operators_secret_is_not_asked_for() {
    let carol = operator("carol", CAROL_PASSWORD, &format!("totp_secret = {CAROL_SECRET:?}\n"));
    let gw = Gateway::start(&config("totp = \"off\"\n", &[carol]));
    let ep = sign_in(&gw.endpoint(ACME.1, "ops"), "carol", CAROL_PASSWORD, None).expect("no code asked");
    assert_eq!(names(&ep), Vec::<String>::new());
}

/// A connect waiting for its agent when a reload removes its operator:
/// the agent joins after the revocation, and the session must not start.
#[test]
fn an_operator_revoked_while_its_agent_joins_gets_no_session() {
    let alice = operator("alice", ALICE_PASSWORD, "");
    let bob = operator("bob", BOB_PASSWORD, "");
    let mut cfg = config("", &[alice, bob.clone()]);
    let gw = Gateway::start(&cfg);
    let agent = gw.endpoint(ACME.1, "pc-1");
    let (mut channel, early) = common::register_raw(&agent);
    assert!(early.is_empty());
    gw.wait_for_event("Client pc-1 connected", EVENT_TIMEOUT);
    let ep = sign_in(&gw.endpoint(ACME.1, "ops"), "alice", ALICE_PASSWORD, None).expect("alice");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(connect_std(&ep, "pc-1").map(|_| ()));
    });
    // The gateway's OPEN for the session, a byte at a time.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while channel.read(&mut byte).expect("the agent's channel") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("text");
    let sid = line.strip_prefix("OPEN ").expect("an OPEN frame");
    let sid = ringway::proto::SessionId::parse(sid).expect("a session id");

    cfg.tail = vec!["[auth]\n".to_string(), bob];
    gw.rewrite(&cfg);
    gw.reload_by_sighup();
    let joined = block_on(client::join(&agent, sid));
    assert!(joined.is_err(), "the agent's data connection is closed");
    let control = rx.recv_timeout(EVENT_TIMEOUT).expect("the connect's answer");
    assert_eq!(refusal(control), (401, SIGN_IN_AGAIN.to_string()));
    gw.wait_for_event(
        "Operator alice was revoked while Client pc-1 joined: the session is not started",
        EVENT_TIMEOUT,
    );
    assert_eq!(gw.count_events("Control alice connected to Client pc-1"), 0);
}

/// `[audit] file`: a failed and a good sign-in, a browse and a session
/// are exactly five JSON records, with who, from where, and the bytes
/// each way, in order.
#[test]
fn the_audit_file_has_exactly_the_records_of_a_sessions_life() {
    let alice = operator("alice", ALICE_PASSWORD, "");
    let mut c = config("totp = \"off\"\n", &[alice]);
    c.tail.push("[audit]\nfile = \"audit/trail.jsonl\"\n".to_string());
    let gw = Gateway::start(&c);
    let echo = Service::echo();
    let _pc1 = gw.serving_agent(ACME.1, "pc-1", echo.addr());
    let ep = endpoint(gw.addr(), ACME.1, "ops");

    assert_eq!(sign_in_refusal(&ep, "alice", "not her password", None).1, REFUSED);
    let alice = sign_in(&ep, "alice", ALICE_PASSWORD, None).expect("sign-in");
    assert_eq!(names(&alice), vec!["pc-1"]);
    echo_round_trip(&alice, "pc-1", b"eleven byte");
    gw.wait_for_event("Control alice disconnected from Client pc-1", EVENT_TIMEOUT);

    let path = gw.dir().join("audit/trail.jsonl");
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let records = common::poll_until(EVENT_TIMEOUT, || Some(read()).filter(|r| r.len() >= 5)).expect("five records");
    let mode = std::fs::metadata(&path).expect("the file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the audit file is the administrator's");
    let mut stamps = Vec::new();
    let bare: Vec<serde_json::Value> = records
        .into_iter()
        .map(|mut r| {
            let o = r.as_object_mut().expect("an object");
            stamps.push(
                o.remove("ts")
                    .and_then(|t| t.as_str().map(str::to_string))
                    .expect("a stamp"),
            );
            if let Some(start) = o.remove("start") {
                stamps.push(start.as_str().expect("a start").to_string());
            }
            r
        })
        .collect();
    let who = serde_json::json!({"operator": "alice", "key": "acme", "control": "ops", "source": "127.0.0.1"});
    let with = |extra: serde_json::Value| {
        let mut v = who.clone();
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    assert_eq!(
        bare,
        vec![
            with(serde_json::json!({"event": "sign_in", "outcome": "wrong_password"})),
            with(serde_json::json!({"event": "sign_in", "outcome": "ok"})),
            with(serde_json::json!({"event": "browse", "agents": 1})),
            with(serde_json::json!({"event": "session_start", "agent": "pc-1"})),
            with(
                serde_json::json!({"event": "session_end", "agent": "pc-1", "bytes_to_agent": 11, "bytes_to_control": 11})
            ),
        ]
    );
    for s in stamps {
        assert!(
            s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T',
            "{s:?} is not RFC 3339 UTC"
        );
    }
}

/// The console's sign-in history: the latest sign-ins, newest first, in
/// `/api/signins` and on the `/signins` page the console links to.
#[test]
fn the_console_shows_the_latest_sign_ins_newest_first() {
    let alice = operator("alice", ALICE_PASSWORD, "");
    let gw = Gateway::start(&config("totp = \"off\"\n", &[alice]));
    let ep = endpoint(gw.addr(), ACME.1, "ops");
    assert_eq!(sign_in_refusal(&ep, "mallory", "guess", None).1, REFUSED);
    sign_in(&ep, "alice", ALICE_PASSWORD, None).expect("sign-in");

    let list = gw.get_json("/api/signins");
    let rows: Vec<(&str, &str, &str, &str)> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().expect("a string");
            (f("operator"), f("control"), f("key"), f("outcome"))
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("alice", "ops", "acme", "ok"),
            ("mallory", "ops", "acme", "unknown_operator")
        ]
    );
    let page = gw.get("/signins");
    assert_eq!(page.status, 200);
    let body = &page.body;
    let ok = body.find("<td>alice</td>").expect("alice's row");
    let failed = body.find("<td>mallory</td>").expect("mallory's row");
    assert!(ok < failed, "newest first:\n{body}");
    assert!(gw.get("/").body.contains(r#"<a id="signins-link" href="/signins">"#));
}

/// `ringway control login --password-file` (for scripts): the file's
/// first line is the password; an empty file is refused with its path.
#[test]
fn login_reads_the_password_from_a_file() {
    let alice = operator("alice", ALICE_PASSWORD, "");
    let gw = Gateway::start(&config("totp = \"off\"\n", &[alice]));
    let home = TestDir::new("operator-password-file");
    let addr = gw.addr().to_string();
    let file = home.join("password");
    std::fs::write(&file, format!("{ALICE_PASSWORD}\n")).expect("password file");
    let file = file.to_str().expect("UTF-8").to_string();
    let login = |file: &str| {
        run(control_command(
            home.path(),
            &[
                "control",
                "login",
                "--gateway",
                &addr,
                "--user",
                "alice",
                "--as",
                "ops",
                "--password-file",
                file,
            ],
        ))
    };
    let done = login(&file);
    assert!(done.success(), "{done:?}");
    gw.wait_for_event(
        "Operator alice signed in as Control ops with key acme from 127.0.0.1",
        EVENT_TIMEOUT,
    );
    let empty = home.join("empty");
    std::fs::write(&empty, "").expect("empty file");
    let done = login(empty.to_str().expect("UTF-8"));
    assert!(!done.success(), "{done:?}");
    assert!(
        done.stderr
            .contains(&format!("the password file {} is empty", empty.display())),
        "{done:?}"
    );
}
