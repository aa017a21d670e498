//! Control-side calls from blocking test code: the library on a
//! thread-local compio runtime, or its signed heads over std sockets.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;

use compio::runtime::Runtime;
use ringway::auth::{Binding, BootId};
use ringway::client::{self, ClientError, Endpoint};
use ringway::http::{HeadError, parse_response};
use ringway::proto::{self, AgentSummary};

use super::IO_TIMEOUT;

thread_local! {
    /// One compio runtime per test thread for the blocking helpers below.
    static RUNTIME: Runtime = Runtime::new().expect("start a compio runtime");
}

/// Runs `future` on this thread's compio runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// `GET /v1/clients` through the library.
pub fn list(ep: &Endpoint) -> Result<Vec<AgentSummary>, ClientError> {
    block_on(client::list_agents(ep))
}

/// The names a control sees, in the gateway's order; panics on an error.
pub fn names(ep: &Endpoint) -> Vec<String> {
    match list(ep) {
        Ok(agents) => agents.into_iter().map(|a| a.name).collect(),
        Err(e) => panic!("browse failed: {e}"),
    }
}

/// The boot id the gateway at `addr` answers with (`Ringway-Boot`),
/// asked with a request for a path it does not serve: no event, one
/// `404` in its counters.
pub fn ask_boot(addr: impl ToSocketAddrs) -> BootId {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send a request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the 404 to its end");
    let (head, _) = parse_response(&raw).unwrap_or_else(|e| panic!("bad answer: {e:?}"));
    assert_eq!(head.status, 404, "{:?}", String::from_utf8_lossy(&raw));
    let boot = head.header("ringway-boot").expect("every answer has a Ringway-Boot");
    BootId::parse(boot).unwrap_or_else(|| panic!("bad boot id {boot:?}"))
}

/// What a plain-HTTP proof for `ep` is bound to: the boot id it knows,
/// else the gateway's, asked now (see [`ask_boot`]) and remembered.
pub fn plain_binding(ep: &Endpoint) -> Binding {
    if ep.boot.get().is_none() {
        let boot = ask_boot(ep.gateway.as_str());
        let head = format!("HTTP/1.1 404 Not Found\r\nRingway-Boot: {boot}\r\n\r\n");
        let (head, _) = parse_response(head.as_bytes()).expect("a head");
        ep.boot.learn(&head);
    }
    Binding::Boot(ep.boot.get())
}

/// `GET /v1/clients` signed by the library but sent and read with a
/// blocking socket: the gateway's answer, independent of how the library
/// reads responses. Panics unless the answer is a complete `200`.
pub fn browse_raw(ep: &Endpoint) -> Vec<AgentSummary> {
    let mut s = TcpStream::connect(ep.gateway.as_str()).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(&client::request_head(
        ep,
        plain_binding(ep),
        "GET",
        proto::PATH_CLIENTS,
        &[],
    ))
    .expect("send the browse request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("read the answer until the gateway closes");
    let (head, len) = parse_response(&raw).unwrap_or_else(|e| panic!("bad response head: {e:?}"));
    let body = &raw[len..];
    assert_eq!(head.status, 200, "browse answered {}", String::from_utf8_lossy(body));
    assert_eq!(head.header("content-length"), Some(body.len().to_string().as_str()));
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("bad client list: {e}"))
}

/// Registers as an agent with a blocking socket (the request signed by the
/// library): the socket after `101` and any bytes that came with it.
pub fn register_raw(ep: &Endpoint) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(ep.gateway.as_str()).expect("connect to the gateway");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    let extra = [
        ("Upgrade", proto::UPGRADE_AGENT.to_string()),
        ("Connection", "Upgrade".to_string()),
    ];
    s.write_all(&client::request_head(
        ep,
        plain_binding(ep),
        "GET",
        proto::PATH_REGISTER,
        &extra,
    ))
    .expect("send the registration");
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).expect("read the registration answer");
        assert!(n > 0, "the gateway closed during registration: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        match parse_response(&raw) {
            Ok((head, len)) => {
                assert_eq!(
                    head.status,
                    101,
                    "registration answered {:?}",
                    String::from_utf8_lossy(&raw)
                );
                return (s, raw.split_off(len));
            }
            Err(HeadError::Incomplete) => {}
            Err(e) => panic!("bad registration answer: {e:?}"),
        }
    }
}

/// The status and reason of a refusal; panics on success or another error.
pub fn refusal<T>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { status, reason }) => (status, reason),
        Err(e) => panic!("expected a refusal, got the error {e}"),
        Ok(_) => panic!("expected a refusal, got success"),
    }
}

/// A relay session as a blocking socket.
pub struct StdSession {
    /// The session's socket, blocking, with [`IO_TIMEOUT`] on reads.
    pub stream: TcpStream,
    /// Bytes that came with the `101` (the start of the relayed stream).
    pub early: Vec<u8>,
}

/// Opens a relay session to `agent` and turns it into a blocking socket.
pub fn connect_std(ep: &Endpoint, agent: &str) -> Result<StdSession, ClientError> {
    let session = block_on(client::connect(ep, agent))?;
    let fd = session
        .stream
        .tcp()
        .as_fd()
        .try_clone_to_owned()
        .expect("duplicate the session socket");
    // The compio socket must be closed on its runtime; the duplicate keeps
    // the connection open.
    RUNTIME.with(|rt| rt.enter(|| drop(session.stream)));
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false).expect("make the session socket blocking");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    Ok(StdSession {
        stream,
        early: session.early,
    })
}

/// Sends `payload` through a new session to `agent` (whose service
/// echoes), half-closes, and checks that exactly `payload` comes back.
pub fn echo_round_trip(ep: &Endpoint, agent: &str, payload: &[u8]) {
    let StdSession { mut stream, early } =
        connect_std(ep, agent).unwrap_or_else(|e| panic!("connect to {agent} failed: {e}"));
    stream.write_all(payload).expect("send through the relay");
    stream.shutdown(Shutdown::Write).expect("half-close the session");
    let mut back = early;
    stream.read_to_end(&mut back).expect("read the echo to EOF");
    assert_eq!(back.len(), payload.len(), "echo length through {agent}");
    assert!(back == payload, "echo through {agent} differs from what was sent");
}

/// The `name` fields of a JSON array of agents (as `GET /v1/clients` and
/// `ringway control ls --json` give them).
pub fn json_names(json: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON {json:?}: {e}"));
    let array = value.as_array().unwrap_or_else(|| panic!("not a JSON array: {json:?}"));
    array
        .iter()
        .map(|a| {
            a["name"]
                .as_str()
                .unwrap_or_else(|| panic!("agent without a name in {json:?}"))
                .to_string()
        })
        .collect()
}
