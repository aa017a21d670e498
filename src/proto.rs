//! The wire vocabulary shared by gateway and clients: paths, header names,
//! the agent channel's frames and session ids. Bytes in, meaning out.
//!
//! After `101 Switching Protocols` an agent's registration connection
//! carries short text lines, one frame per line (see docs/PROTOCOL.md).
//! Text keeps the channel debuggable with `socat`; the line limit keeps the
//! gateway's per-agent read buffer small.

use std::fmt;

/// Agent registration (upgrade to the agent channel).
pub const PATH_REGISTER: &str = "/v1/agent/register";
/// Agent joining a session with a data connection: `/v1/session/<sid>`.
pub const PATH_SESSION_PREFIX: &str = "/v1/session/";
/// Control browsing the agents its key can see.
pub const PATH_CLIENTS: &str = "/v1/clients";
/// The unauthenticated health probe: `200` with a [`HealthAnswer`].
pub const PATH_HEALTH: &str = "/v1/health";
/// Control opening a relay session: `/v1/connect/<pct-encoded name>`.
pub const PATH_CONNECT_PREFIX: &str = "/v1/connect/";
/// An operator signing in (upgrade to the login exchange).
pub const PATH_LOGIN: &str = "/v1/login";

/// `Upgrade:` token of the agent channel.
pub const UPGRADE_AGENT: &str = "ringway-agent/1";
/// `Upgrade:` token of a relay connection (control or agent data).
pub const UPGRADE_RELAY: &str = "ringway-relay/1";
/// `Upgrade:` token of the operator sign-in exchange.
pub const UPGRADE_LOGIN: &str = "ringway-login/1";

/// Who is asking: the agent's or control's name, percent-encoded.
pub const H_IDENTITY: &str = "ringway-identity";
/// Agent details sent at registration, percent-encoded.
pub const H_AGENT_MAC: &str = "ringway-agent-mac";
/// The agent's own (local) IP address, as it sees it.
pub const H_AGENT_IP: &str = "ringway-agent-ip";
/// The agent's operating system, free text.
pub const H_AGENT_OS: &str = "ringway-agent-os";
/// The gateway's boot id: in every answer, and in every plain-HTTP
/// request with the id its proof signs (lower-case, for lookups).
pub const H_BOOT: &str = "ringway-boot";
/// [`H_BOOT`] as the gateway and clients write it.
pub const H_BOOT_WRITTEN: &str = "Ringway-Boot";
/// Sent by an agent that registers after a move: `failover <gateway>` or
/// `failback <gateway>`, the gateway it held its channel with before (as
/// the agent names it), for the arrival's event line. See
/// [`parse_previous`].
pub const H_PREVIOUS: &str = "ringway-previous";
/// [`H_PREVIOUS`] as clients write it.
pub const H_PREVIOUS_WRITTEN: &str = "Ringway-Previous";
/// On a browse answer in a cluster: why the list holds this gateway's
/// agents only (the cluster directory did not answer).
pub const H_CLUSTER_PARTIAL_WRITTEN: &str = "Ringway-Cluster-Partial";
/// On a cluster's `307`: the boot id of the gateway the `Location`
/// names, so a plain-HTTP client signs its first proof there right.
pub const H_LOCATION_BOOT: &str = "ringway-location-boot";
/// [`H_LOCATION_BOOT`] as gateways write it.
pub const H_LOCATION_BOOT_WRITTEN: &str = "Ringway-Location-Boot";
/// On a connect a cluster gateway relays to the agent's gateway: the
/// relaying gateway's id. A connect carrying it is never relayed again
/// (no chain, no loop while the directory settles).
pub const H_RELAYED: &str = "ringway-relayed";
/// [`H_RELAYED`] as gateways write it.
pub const H_RELAYED_WRITTEN: &str = "Ringway-Relayed";
/// On a registration: the cluster gateway that redirected this agent
/// here; a registration carrying it is never redirected again.
pub const H_REDIRECTED: &str = "ringway-redirected";
/// [`H_REDIRECTED`] as clients write it.
pub const H_REDIRECTED_WRITTEN: &str = "Ringway-Redirected";
/// Longest gateway name kept from [`H_PREVIOUS`]: a DNS name (253) and a
/// port would fit in 260, but the log line only needs to tell gateways
/// apart; longer is refused (the header is ignored).
pub const MAX_PREVIOUS_CHARS: usize = 128;
/// Sent in the registration response: the poll interval in seconds.
pub const H_CMPI: &str = "ringway-cmpi";
/// An operator's ticket, next to the key proof of a browse or connect.
pub const H_TICKET: &str = "ringway-ticket";
/// [`H_TICKET`] as clients write it.
pub const H_TICKET_WRITTEN: &str = "Ringway-Ticket";
/// Proof of holding the ticket's possession key: 64 hex digits of
/// HMAC-SHA-256(possession key, the key proof's signed string).
pub const H_TICKET_PROOF: &str = "ringway-ticket-proof";
/// [`H_TICKET_PROOF`] as clients write it.
pub const H_TICKET_PROOF_WRITTEN: &str = "Ringway-Ticket-Proof";
/// The agent's Ed25519 public key, base64url without padding (32 bytes),
/// sent with every registration; the gateway pins the name to it.
pub const H_AGENT_KEY: &str = "ringway-agent-key";
/// [`H_AGENT_KEY`] as clients write it.
pub const H_AGENT_KEY_WRITTEN: &str = "Ringway-Agent-Key";
/// The agent key's Ed25519 signature over the key proof's string,
/// base64url without padding (64 bytes; docs/PROTOCOL.md).
pub const H_AGENT_SIG: &str = "ringway-agent-sig";
/// [`H_AGENT_SIG`] as clients write it.
pub const H_AGENT_SIG_WRITTEN: &str = "Ringway-Agent-Sig";
/// A fresh TOTP code for a connect, with `[auth] totp_per_session`.
pub const H_TOTP: &str = "ringway-totp";
/// [`H_TOTP`] as clients write it.
pub const H_TOTP_WRITTEN: &str = "Ringway-Totp";

/// Headers that would give a `GET` a body, which the gateway never reads:
/// a request with one is refused (400) rather than having bytes it
/// ignored taken as the next request or the relayed stream.
pub const BODY_HEADERS: [(&str, &str); 2] = [
    ("content-length", "a GET request must not have a body (Content-Length)"),
    (
        "transfer-encoding",
        "a GET request must not have a body (Transfer-Encoding)",
    ),
];

/// Headers the gateway acts on, each allowed once: with two, which one
/// counts would depend on who reads the head (a proxy in front may take
/// the last, the gateway the first), so a request with two is refused
/// (400) with the reason given here.
pub const SINGLE_HEADERS: [(&str, &str); 15] = [
    ("authorization", "duplicate Authorization header"),
    (H_IDENTITY, "duplicate Ringway-Identity header"),
    (H_BOOT, "duplicate Ringway-Boot header"),
    ("upgrade", "duplicate Upgrade header"),
    (H_AGENT_MAC, "duplicate Ringway-Agent-Mac header"),
    (H_AGENT_IP, "duplicate Ringway-Agent-Ip header"),
    (H_AGENT_OS, "duplicate Ringway-Agent-Os header"),
    (H_TICKET, "duplicate Ringway-Ticket header"),
    (H_TICKET_PROOF, "duplicate Ringway-Ticket-Proof header"),
    (H_TOTP, "duplicate Ringway-Totp header"),
    (H_AGENT_KEY, "duplicate Ringway-Agent-Key header"),
    (H_AGENT_SIG, "duplicate Ringway-Agent-Sig header"),
    (H_PREVIOUS, "duplicate Ringway-Previous header"),
    (H_REDIRECTED, "duplicate Ringway-Redirected header"),
    (H_RELAYED, "duplicate Ringway-Relayed header"),
];

/// Why an agent moved its channel, as [`H_PREVIOUS`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Its preferred gateway went away; it came to a later one in its list.
    Failover,
    /// It came back to a gateway earlier in its list (its primary).
    Failback,
}

impl Move {
    /// The word on the wire and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Move::Failover => "failover",
            Move::Failback => "failback",
        }
    }
}

/// Parses a [`H_PREVIOUS`] value, `<failover|failback> <gateway>`: the
/// move and the gateway, which is 1 to [`MAX_PREVIOUS_CHARS`] printable
/// ASCII characters without spaces. `None` for anything else, which the
/// gateway ignores (the arrival is logged without it).
pub fn parse_previous(value: &str) -> Option<(Move, &str)> {
    let (kind, gateway) = value.trim().split_once(' ')?;
    let kind = match kind {
        "failover" => Move::Failover,
        "failback" => Move::Failback,
        _ => return None,
    };
    let ok = (1..=MAX_PREVIOUS_CHARS).contains(&gateway.len()) && gateway.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some((kind, gateway))
}

/// Longest reason an agent's `BYE` may give; a longer or odd one makes the
/// frame unknown (ignored).
pub const MAX_AGENT_BYE_CHARS: usize = 32;

/// Longest agent or control name. Names show in the console and log; 64 is
/// twice a NetBIOS name and more than a DNS label.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest line of the sign-in exchange either side sends, newline
/// included: a SCRAM message is at most 512 bytes and a ticket 1 KiB, so
/// a `TICKET` line (word, ticket, expiry) is the longest; nothing longer
/// is read.
pub const MAX_LOGIN_LINE: usize = 1100;

/// Longest frame line on the agent channel, newline included. Every frame
/// we define is under 100 bytes; the rest is room for later fields.
pub const MAX_FRAME_LINE: usize = 512;

/// The body of `GET /v1/health`'s `200`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthAnswer {
    /// `primary` or `secondary` (`[gateway] role`).
    pub role: String,
    /// The gateway's boot id, as in `Ringway-Boot`: a new one means the
    /// gateway restarted.
    pub boot: String,
}

/// One agent as a control sees it (`GET /v1/clients` returns an array).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentSummary {
    /// The agent's name, unique per key.
    pub name: String,
    /// Where its channel comes from, as the gateway sees it (ip:port).
    pub external_addr: String,
    /// When it registered, RFC 3339 UTC.
    pub connected_since: String,
    /// When it last polled, RFC 3339 UTC.
    pub last_poll: String,
    /// MAC address the agent reported.
    pub mac: String,
    /// The agent's own IP address, as it reported it.
    pub local_ip: String,
    /// Operating system the agent reported.
    pub os: String,
    /// In a cluster, the id of the gateway that holds it when that is
    /// not the one answering (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// Checks a peer-chosen name: 1 to [`MAX_NAME_CHARS`] characters, not
/// blank. Any other character is allowed (names travel percent-encoded);
/// the log sanitises them and the console escapes them, so a hostile name
/// is shown, harmlessly, rather than hidden.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&n) && !name.trim().is_empty() && !name.contains('\0')
}

/// A frame the gateway sends down an agent channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    /// Answer to `PING <seq>`.
    Pong(u64),
    /// Dial a data connection for this session.
    Open(SessionId),
    /// The poll interval changed (reload).
    Cmpi(u64),
    /// The gateway is closing this channel; the reason is one word.
    Bye(String),
}

/// A frame an agent sends up its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromAgent {
    /// Heartbeat; the gateway answers `PONG <seq>`.
    Ping(u64),
    /// The agent cannot serve this session (its local service refused).
    Fail(SessionId),
    /// The agent is leaving this channel (it moved to another gateway and
    /// is registered there already): the reason is one word of `a-z`,
    /// `0-9` and `-`, such as `failback`. Its sessions go on.
    Bye(String),
    /// A frame this version does not know; ignored, for forward compatibility.
    Unknown,
}

/// Why a channel line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No newline yet: read more.
    Incomplete,
    /// Longer than [`MAX_FRAME_LINE`] or not UTF-8: close the channel.
    Invalid,
}

impl fmt::Display for ToAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToAgent::Pong(seq) => writeln!(f, "PONG {seq}"),
            ToAgent::Open(sid) => writeln!(f, "OPEN {sid}"),
            ToAgent::Cmpi(secs) => writeln!(f, "CMPI {secs}"),
            ToAgent::Bye(reason) => writeln!(f, "BYE {reason}"),
        }
    }
}

impl fmt::Display for FromAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FromAgent::Ping(seq) => writeln!(f, "PING {seq}"),
            FromAgent::Fail(sid) => writeln!(f, "FAIL {sid}"),
            FromAgent::Bye(reason) => writeln!(f, "BYE {reason}"),
            FromAgent::Unknown => writeln!(f, "NOP"),
        }
    }
}

/// A number as the protocol writes it: decimal digits, no sign and no
/// leading zero, fitting `T`. Rust's `parse` would also take `+7` and
/// `007`; refusing them gives every number one spelling, so a frame, a
/// session id or a proof reads the same to us as to anyone logging or
/// comparing the text.
pub fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    let canonical = match s.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical.then(|| s.parse().ok()).flatten()
}

/// Splits the first line off `buf`: the line (without `\n` or `\r\n`) and
/// the bytes it took.
fn take_line(buf: &[u8]) -> Result<(&str, usize), FrameError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_FRAME_LINE => {
            let line = std::str::from_utf8(&buf[..i]).map_err(|_| FrameError::Invalid)?;
            Ok((line.trim_end_matches('\r'), i + 1))
        }
        Some(_) => Err(FrameError::Invalid),
        None if buf.len() >= MAX_FRAME_LINE => Err(FrameError::Invalid),
        None => Err(FrameError::Incomplete),
    }
}

/// Parses one agent frame from the start of `buf`.
pub fn parse_from_agent(buf: &[u8]) -> Result<(FromAgent, usize), FrameError> {
    let (line, used) = take_line(buf)?;
    let mut words = line.split(' ');
    let frame = match (words.next(), words.next()) {
        (Some("PING"), Some(seq)) => parse_decimal(seq).map_or(FromAgent::Unknown, FromAgent::Ping),
        (Some("FAIL"), Some(sid)) => SessionId::parse(sid).map(FromAgent::Fail).unwrap_or(FromAgent::Unknown),
        (Some("BYE"), Some(reason))
            if (1..=MAX_AGENT_BYE_CHARS).contains(&reason.len())
                && reason
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            FromAgent::Bye(reason.to_string())
        }
        _ => FromAgent::Unknown,
    };
    Ok((frame, used))
}

/// Parses one gateway frame from the start of `buf`; `None` for a frame
/// this version does not know (skip it).
pub fn parse_to_agent(buf: &[u8]) -> Result<(Option<ToAgent>, usize), FrameError> {
    let (line, used) = take_line(buf)?;
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let frame = match verb {
        "PONG" => parse_decimal(arg).map(ToAgent::Pong),
        "OPEN" => SessionId::parse(arg).map(ToAgent::Open),
        "CMPI" => parse_decimal(arg).map(ToAgent::Cmpi),
        "BYE" => Some(ToAgent::Bye(arg.to_string())),
        _ => None,
    };
    Ok((frame, used))
}

/// Names a pending relay session: the worker that holds the control's side,
/// the slot there, and a random token so that ids cannot be guessed.
/// Written `<worker>.<slot>.<32 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    /// Worker index holding the control's connection.
    pub worker: u16,
    /// Slot in that worker's pending-session slab.
    pub slot: u32,
    /// 128 random bits.
    pub token: [u8; 16],
}

impl SessionId {
    /// Parses the `<worker>.<slot>.<hex>` form, exactly as [`Display`]
    /// writes it (no sign or leading zero, lower-case hex): an id has one
    /// spelling, so the one in a join path is the one the log showed.
    ///
    /// [`Display`]: fmt::Display
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let worker = parse_decimal(parts.next()?)?;
        let slot = parse_decimal(parts.next()?)?;
        let hex = parts.next()?;
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut token = [0u8; 16];
        hex::decode_to_slice(hex, &mut token).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { worker, slot, token })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.worker, self.slot, hex::encode(self.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let sid = SessionId {
            worker: 1,
            slot: 42,
            token: [0xab; 16],
        };
        for frame in [
            ToAgent::Pong(7),
            ToAgent::Open(sid),
            ToAgent::Cmpi(60),
            ToAgent::Bye("replaced".into()),
        ] {
            let bytes = frame.to_string();
            assert_eq!(parse_to_agent(bytes.as_bytes()), Ok((Some(frame), bytes.len())));
        }
        for frame in [
            FromAgent::Ping(3),
            FromAgent::Fail(sid),
            FromAgent::Bye("failback".into()),
        ] {
            let bytes = frame.to_string();
            assert_eq!(parse_from_agent(bytes.as_bytes()), Ok((frame, bytes.len())));
        }
    }

    #[test]
    fn partial_long_and_unknown_lines() {
        assert_eq!(parse_from_agent(b"PING 1"), Err(FrameError::Incomplete));
        assert_eq!(parse_from_agent(&[b'a'; MAX_FRAME_LINE]), Err(FrameError::Invalid));
        assert_eq!(
            parse_from_agent(b"HELLO there\r\nPING 2\n"),
            Ok((FromAgent::Unknown, 13))
        );
        assert_eq!(parse_to_agent(b"NOTIFY 3\n"), Ok((None, 9)));
        assert_eq!(parse_from_agent(b"\xff\n"), Err(FrameError::Invalid));
    }

    #[test]
    fn an_agent_bye_with_an_odd_reason_is_unknown() {
        assert_eq!(parse_from_agent(b"BYE Failback\n"), Ok((FromAgent::Unknown, 13)));
        assert_eq!(parse_from_agent(b"BYE\n"), Ok((FromAgent::Unknown, 4)));
        let long = format!("BYE {}\n", "a".repeat(MAX_AGENT_BYE_CHARS + 1));
        assert_eq!(parse_from_agent(long.as_bytes()), Ok((FromAgent::Unknown, long.len())));
        let most = format!("BYE {}\n", "a".repeat(MAX_AGENT_BYE_CHARS));
        assert_eq!(
            parse_from_agent(most.as_bytes()),
            Ok((FromAgent::Bye("a".repeat(MAX_AGENT_BYE_CHARS)), most.len()))
        );
    }

    #[test]
    fn a_hostile_previous_header_is_ignored() {
        assert_eq!(parse_previous("failover gw-a:443"), Some((Move::Failover, "gw-a:443")));
        assert_eq!(
            parse_previous(" failback 10.0.0.1:8443 "),
            Some((Move::Failback, "10.0.0.1:8443"))
        );
        assert_eq!(parse_previous("failover"), None);
        assert_eq!(parse_previous("moved gw-a"), None);
        assert_eq!(parse_previous("failover gw a"), None);
        assert_eq!(parse_previous("failover gw\u{1b}[2J"), None);
        assert_eq!(parse_previous("failover gw-\u{e9}"), None);
        let long = format!("failover {}", "g".repeat(MAX_PREVIOUS_CHARS + 1));
        assert_eq!(parse_previous(&long), None);
        let most = format!("failover {}", "g".repeat(MAX_PREVIOUS_CHARS));
        assert!(parse_previous(&most).is_some());
    }

    #[test]
    fn session_ids_parse_strictly() {
        let sid = SessionId {
            worker: 3,
            slot: 9,
            token: [1; 16],
        };
        assert_eq!(SessionId::parse(&sid.to_string()), Some(sid));
        assert_eq!(SessionId::parse("3.9"), None);
        assert_eq!(SessionId::parse("3.9.0101"), None);
        assert_eq!(SessionId::parse(&format!("{sid}.1")), None);
    }

    #[test]
    fn numbers_have_one_spelling() {
        assert_eq!(parse_decimal::<u64>("0"), Some(0));
        assert_eq!(parse_decimal::<u64>("18446744073709551615"), Some(u64::MAX));
        for s in ["", "+7", "-7", "007", "00", " 7", "7 ", "18446744073709551616", "٣"] {
            assert_eq!(parse_decimal::<u64>(s), None, "{s:?}");
        }
    }

    /// fuzz/corpus/session_id/crash-leading-zero-slot: a slot written
    /// `0294967295` was taken as 294967295.
    #[test]
    fn session_id_with_a_leading_zero_is_refused() {
        let token = "ffffffffffffffffffffffffffffffff";
        assert!(SessionId::parse(&format!("65535.294967295.{token}")).is_some());
        assert_eq!(SessionId::parse(&format!("65535.0294967295.{token}")), None);
        assert_eq!(SessionId::parse(&format!("01.2.{token}")), None);
    }

    #[test]
    fn session_id_with_a_plus_sign_or_upper_case_hex_is_refused() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(SessionId::parse(&format!("1.2.{token}")).is_some());
        let upper = token.to_uppercase();
        for refused in [format!("+1.2.{token}"), format!("1.+2.{token}"), format!("1.2.{upper}")] {
            assert_eq!(SessionId::parse(&refused), None, "{refused}");
        }
    }

    /// fuzz/corpus/agent_frame/crash-ping-leading-zeros: `PING 0010867853145011699714`
    /// was a ping of 10867853145011699714, answered with a `PONG` of other digits.
    #[test]
    fn ping_with_leading_zeros_is_not_a_ping() {
        assert_eq!(
            parse_from_agent(b"PING 0010867853145011699714\n"),
            Ok((FromAgent::Unknown, 28))
        );
        assert_eq!(parse_from_agent(b"PING +5\n"), Ok((FromAgent::Unknown, 8)));
        assert_eq!(parse_to_agent(b"PONG 05\n"), Ok((None, 8)));
        assert_eq!(parse_to_agent(b"CMPI +60\n"), Ok((None, 9)));
        assert_eq!(
            parse_from_agent(b"PING 10867853145011699714\n"),
            Ok((FromAgent::Ping(10867853145011699714), 26))
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("pc1"));
        assert!(valid_name("Reception desk"));
        assert!(!valid_name(""));
        assert!(!valid_name("   "));
        assert!(!valid_name("a\0b"));
        assert!(valid_name("<script>alert(1)</script>\r\nGW forged"));
        assert!(!valid_name(&"x".repeat(MAX_NAME_CHARS + 1)));
    }
}
