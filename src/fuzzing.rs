//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! in `tests/fuzz_corpus.rs`: one function per target, each taking the
//! fuzzer's bytes, calling the real parsers and checking invariants that
//! are cheap to state. A broken invariant panics, which is what a fuzzer
//! reports as a crash; so does a panic inside a parser. Nothing here is
//! API: it is public only so that the fuzz crate and the test can reach
//! it, and hidden from the docs.
//!
//! The invariants, per target:
//! - every length a parser says it used lies within the input and within
//!   the limit the protocol sets ([`http::MAX_HEAD_BYTES`],
//!   [`proto::MAX_FRAME_LINE`]);
//! - what is parsed can be written again and parses back to the same
//!   value (round trip);
//! - what the wire carries has one accepted spelling: a value parsed from
//!   text is written back as that same text (session ids, frames,
//!   percent escapes, the `Authorization` scheme and its numbers), so no
//!   two spellings mean one thing to us and something else to a proxy or
//!   a log reader;
//! - errors are the ones callers branch on: a status of 400 or 431 for a
//!   head, a file and an in-range line for a configuration.

use std::fmt::Write as _;

use crate::auth::{self, Proof};
use crate::client::ranges;
use crate::config;
use crate::http::{self, HeadError, MAX_HEAD_BYTES, MAX_HEADERS};
use crate::proto::{self, FromAgent, MAX_FRAME_LINE, SessionId, ToAgent};

/// A fuzz entry point: the fuzzer's bytes in, a panic for a broken invariant.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by name: the folder under `fuzz/corpus/` and the
/// file under `fuzz/fuzz_targets/`, each with its entry point.
pub const TARGETS: [(&str, Entry); 7] = [
    ("request_head", request_head),
    ("response_head", response_head),
    ("agent_frame", agent_frame),
    ("authorization", authorization),
    ("session_id", session_id),
    ("percent", percent),
    ("config", config),
];

/// A request head as the gateway reads it: `http::parse_request`, then
/// the gateway's own check of what it serves.
pub fn request_head(data: &[u8]) {
    match http::parse_request(data) {
        Ok((head, len)) => {
            check_head(len, data, &head.headers);
            assert!(head.target.starts_with('/'));
            // The head alone parses the same: nothing past it was read.
            assert_eq!(http::parse_request(&data[..len]), Ok((head.clone(), len)));
            // Written again, it reads back the same.
            let mut again = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
            for (name, value) in &head.headers {
                let _ = write!(again, "{name}: {value}\r\n");
            }
            again.push_str("\r\n");
            if again.len() <= MAX_HEAD_BYTES {
                let (reparsed, used) = http::parse_request(again.as_bytes()).expect("a rewritten head parses");
                assert_eq!((reparsed, used), (head.clone(), again.len()));
            }
            #[cfg(target_os = "linux")]
            if let Err(refusal) = crate::gateway::servable(&head) {
                assert!((400..500).contains(&refusal.status()), "{refusal:?}");
            } else {
                assert_eq!(head.method, "GET");
                for (name, _) in proto::SINGLE_HEADERS {
                    assert!(head.header_count(name) <= 1, "{name} twice was served");
                }
            }
        }
        Err(e) => check_head_error(&e, data),
    }
}

/// A response head as a client reads it (`http::parse_response`), and
/// the numbers a client takes from one: the body length and the poll
/// interval.
pub fn response_head(data: &[u8]) {
    match http::parse_response(data) {
        Ok((head, len)) => {
            check_head(len, data, &head.headers);
            assert!((100..=599).contains(&head.status), "status {}", head.status);
            assert_eq!(http::parse_response(&data[..len]), Ok((head.clone(), len)));
            for cap in [0, crate::client::MAX_REASON_BYTES, usize::MAX] {
                if let Ok(n) = ranges::body_length(&head, cap) {
                    assert!(n <= cap);
                }
            }
            if let Some(cmpi) = head.header(proto::H_CMPI).and_then(ranges::parse_cmpi) {
                assert!((ranges::MIN_CMPI..=ranges::MAX_CMPI).contains(&cmpi));
            }
        }
        Err(e) => check_head_error(&e, data),
    }
}

/// The agent channel, both ways: the bytes are read as a stream of frame
/// lines, as the gateway reads an agent's and an agent the gateway's.
pub fn agent_frame(data: &[u8]) {
    let mut rest = data;
    while let Ok((frame, used)) = proto::parse_from_agent(rest) {
        assert!(0 < used && used <= rest.len() && used <= MAX_FRAME_LINE);
        // Words past the ones a frame defines are room for later fields.
        let words: Vec<&str> = line_of(&rest[..used]).split(' ').take(2).collect();
        let line = words.join(" ");
        match frame {
            FromAgent::Unknown => {}
            known => assert_eq!(
                known.to_string(),
                format!("{line}\n"),
                "{line:?} is not written that way"
            ),
        }
        rest = &rest[used..];
    }
    let mut rest = data;
    while let Ok((frame, used)) = proto::parse_to_agent(rest) {
        assert!(0 < used && used <= rest.len() && used <= MAX_FRAME_LINE);
        let line = line_of(&rest[..used]);
        if let Some(frame) = frame {
            // A BYE's reason is free text, so only the numbers and ids
            // of the others have one spelling.
            if !matches!(frame, ToAgent::Bye(_)) {
                assert_eq!(
                    frame.to_string(),
                    format!("{line}\n"),
                    "{line:?} is not written that way"
                );
            }
            let text = frame.to_string();
            assert_eq!(proto::parse_to_agent(text.as_bytes()), Ok((Some(frame), text.len())));
        }
        rest = &rest[used..];
    }
    if let Ok(s) = std::str::from_utf8(data) {
        // A BYE reason is the gateway's own word; any line-free text must
        // still come back as sent.
        if s.len() < MAX_FRAME_LINE - 5 && !s.contains('\n') && !s.ends_with('\r') {
            let bye = ToAgent::Bye(s.to_string()).to_string();
            assert_eq!(
                proto::parse_to_agent(bye.as_bytes()),
                Ok((Some(ToAgent::Bye(s.to_string())), bye.len()))
            );
        }
    }
}

/// An `Authorization` value: our proof scheme and the bearer scheme.
pub fn authorization(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    for scheme in [auth::SCHEME, "Bearer"] {
        if let Some(rest) = auth::strip_scheme(value, scheme) {
            let trimmed = value.trim();
            let after = trimmed.as_bytes().get(scheme.len()).copied();
            assert!(
                trimmed.len() >= scheme.len()
                    && trimmed[..scheme.len()].eq_ignore_ascii_case(scheme)
                    && matches!(after, Some(b' ' | b'\t')),
                "{value:?} was taken as scheme {scheme}"
            );
            assert!(trimmed.ends_with(rest));
        }
    }
    if let Ok(proof) = auth::parse_authorization(value) {
        // The numbers and ids it names are written as we write them.
        let ts = proof.ts.to_string();
        assert!(
            fields(value).any(|(k, v)| k == "ts" && v == ts),
            "{value:?} gave ts {ts}"
        );
        // Each field it took was given once: with two, which one counts
        // would depend on who reads the header.
        for name in ["kid", "ts", "nonce", "sig"] {
            assert_eq!(
                fields(value).filter(|(k, _)| *k == name).count(),
                1,
                "{value:?}: {name}"
            );
        }
        // Written again, it reads back the same.
        let again = proof_header(&proof);
        assert_eq!(auth::parse_authorization(&again), Ok(proof));
    }
}

/// A session id as written in an `OPEN`/`FAIL` frame and a join path,
/// and one made from the bytes, written and read back.
pub fn session_id(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(sid) = SessionId::parse(s)
    {
        assert_eq!(sid.to_string(), s, "a session id accepted as it is not written");
    }
    if let Some((head, token)) = data.split_first_chunk::<6>()
        && let Some(token) = token.first_chunk::<16>()
    {
        let sid = SessionId {
            worker: u16::from_le_bytes([head[0], head[1]]),
            slot: u32::from_le_bytes([head[2], head[3], head[4], head[5]]),
            token: *token,
        };
        assert_eq!(SessionId::parse(&sid.to_string()), Some(sid));
    }
}

/// Percent-decoding (names in paths and headers) and its inverse.
pub fn percent(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(decoded) = http::pct_decode(s) {
        let b = s.as_bytes();
        for (i, _) in s.match_indices('%') {
            assert!(
                b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
                "{s:?}: the escape at {i} is not two hex digits"
            );
        }
        assert_eq!(
            http::pct_decode(&http::pct_encode(&decoded)).as_deref(),
            Some(decoded.as_str())
        );
    }
    let encoded = http::pct_encode(s);
    assert!(encoded.bytes().all(|c| c.is_ascii_graphic()));
    assert_eq!(http::pct_decode(&encoded).as_deref(), Some(s));
}

/// The pure configuration parse (no files read).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse_str(text, "fuzz.toml") {
        Ok(c) => {
            assert!(!c.listen.is_empty(), "a configuration with nowhere to listen");
            assert!(!c.keys.is_empty(), "a configuration with no key");
            assert!(c.workers as u64 <= config::MAX_WORKERS);
            assert!(c.cmpi.as_secs() <= config::MAX_CMPI_SECS && !c.cmpi.is_zero());
        }
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
            assert!(e.line <= lines, "line {} of a {lines}-line file: {e}", e.line);
            assert!(!e.reason.is_empty() && !e.reason.contains('\n'), "{:?}", e.reason);
        }
    }
}

/// A parsed head took `len` bytes of `data`, within the head limits, and
/// its header names are lower-case and values trimmed, as callers look
/// them up.
fn check_head(len: usize, data: &[u8], headers: &[(String, String)]) {
    assert!(len <= data.len(), "used {len} of {} bytes", data.len());
    assert!(len <= MAX_HEAD_BYTES, "a head of {len} bytes was accepted");
    assert!(headers.len() <= MAX_HEADERS);
    for (name, value) in headers {
        assert!(
            !name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()),
            "{name:?}"
        );
        assert_eq!(value.trim(), value);
    }
}

/// An error for a head is one callers know what to do with.
fn check_head_error(e: &HeadError, data: &[u8]) {
    assert!(matches!(e.status(), 400 | 431), "{e:?}");
    if *e == HeadError::Incomplete {
        assert!(data.len() < MAX_HEAD_BYTES, "still reading past {MAX_HEAD_BYTES} bytes");
    }
}

/// A frame line without its `\n` or `\r\n`.
fn line_of(bytes: &[u8]) -> &str {
    let text = std::str::from_utf8(bytes).expect("a parsed line is UTF-8");
    text.strip_suffix('\n').unwrap_or(text).trim_end_matches('\r')
}

/// The `k=v` parameters after the scheme, as written.
fn fields(value: &str) -> impl Iterator<Item = (&str, &str)> {
    let rest = value.trim().split_once([' ', '\t']).map_or("", |(_, r)| r);
    rest.split(',').filter_map(|p| p.trim().split_once('=')).map(|(k, v)| {
        let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        (k, unquoted.unwrap_or(v))
    })
}

/// The header a client writes for `proof`.
fn proof_header(p: &Proof) -> String {
    format!(
        "{} kid={}, ts={}, nonce={}, sig={}",
        auth::SCHEME,
        p.kid,
        p.ts,
        hex::encode(p.nonce),
        hex::encode(p.sig)
    )
}
