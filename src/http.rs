//! HTTP/1.1 request and response heads: bytes in, meaning out, no I/O.
//!
//! ringway speaks just enough HTTP/1.1 for its own requests (register,
//! browse, connect, join) and to look like ordinary web traffic to the
//! proxies and firewalls in between. Bodies are never read by the gateway;
//! everything it needs is in the head, and after a `101` the connection
//! stops being HTTP.

use std::fmt::Write as _;

/// Largest request head the gateway reads before answering 431. Our own
/// clients send about 400 bytes; 8 KiB is what most servers allow and
/// leaves room for proxies that add headers.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header lines accepted in one head (431 past it). Our requests carry
/// under 12; proxies may add a few.
pub const MAX_HEADERS: usize = 32;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `POST`, ...: routing branches on it.
    pub method: String,
    /// The request target exactly as sent; signatures cover these bytes.
    pub target: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name` (give it lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// How many times header `name` (give it lower-case) appears.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code, e.g. 101.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of header `name` (give it lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a head could not be parsed. Callers branch on it: `Incomplete` means
/// read more, the others map to a status code and a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not all of the head has arrived yet.
    Incomplete,
    /// The head is larger than [`MAX_HEAD_BYTES`] (431).
    TooLarge,
    /// More than [`MAX_HEADERS`] header lines (431).
    TooManyHeaders,
    /// Not HTTP/1.1 as we accept it (400); the reason is for the body.
    Malformed(&'static str),
}

impl HeadError {
    /// The status code the gateway answers with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Incomplete | HeadError::Malformed(_) => 400,
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
        }
    }

    /// A one-line reason for the response body and the log.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Incomplete => "incomplete request head",
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header lines",
            HeadError::Malformed(why) => why,
        }
    }

    /// As [`HeadError::reason`], for a response head a client read.
    pub fn response_reason(&self) -> &'static str {
        match self {
            HeadError::Incomplete => "incomplete response head",
            HeadError::TooLarge => "response head too large",
            other => other.reason(),
        }
    }
}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid token in request line"),
        httparse::Error::Version => HeadError::Malformed("not HTTP/1.x"),
    }
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Result<Vec<(String, String)>, HeadError> {
    raw.iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed("header value is not UTF-8"))?;
            Ok((h.name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// Parses a request head from the start of `buf`. On success returns the
/// head and how many bytes it took; bytes after that belong to whatever
/// follows (they are never dropped by the caller).
pub fn parse_request(buf: &[u8]) -> Result<(RequestHead, usize), HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if len > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            if req.version != Some(1) {
                return Err(HeadError::Malformed("HTTP/1.1 required"));
            }
            let method = req.method.unwrap_or_default().to_string();
            let target = req.path.unwrap_or_default().to_string();
            if !target.starts_with('/') {
                return Err(HeadError::Malformed("request target must be a path"));
            }
            let headers = collect_headers(req.headers)?;
            Ok((
                RequestHead {
                    method,
                    target,
                    headers,
                },
                len,
            ))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Err(HeadError::Incomplete),
        Err(e) => Err(map_httparse(e)),
    }
}

/// Parses a response head from the start of `buf` (client side).
pub fn parse_response(buf: &[u8]) -> Result<(ResponseHead, usize), HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            // The same bound as a request's: a head that arrived whole in
            // one large read is no smaller for it.
            if len > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let status = res.code.unwrap_or_default();
            // httparse takes any three digits; `020` is no status.
            if !(100..=599).contains(&status) {
                return Err(HeadError::Malformed("invalid status code"));
            }
            let headers = collect_headers(res.headers)?;
            Ok((
                ResponseHead {
                    status,
                    reason: res.reason.unwrap_or_default().to_string(),
                    headers,
                },
                len,
            ))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Err(HeadError::Incomplete),
        Err(e) => Err(map_httparse(e)),
    }
}

/// The standard reason phrase for the statuses ringway sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        307 => "Temporary Redirect",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Builds a complete response with a body. Every error response closes the
/// connection, so it says so.
pub fn response(status: u16, extra_headers: &[(&str, &str)], content_type: &str, body: &[u8]) -> Vec<u8> {
    build_response(status, extra_headers, content_type, body, "Connection: close\r\n")
}

/// As [`response`], but the connection stays open for the peer's next
/// request (the one answer the gateway gives that way: a proof to sign
/// again).
pub fn response_keep_alive(status: u16, extra_headers: &[(&str, &str)], content_type: &str, body: &[u8]) -> Vec<u8> {
    build_response(status, extra_headers, content_type, body, "")
}

fn build_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    connection: &str,
) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in extra_headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n{connection}\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A plain-text error response: the reason, one line.
pub fn error_response(status: u16, extra_headers: &[(&str, &str)], reason: &str) -> Vec<u8> {
    let body = format!("{reason}\n");
    response(status, extra_headers, "text/plain; charset=utf-8", body.as_bytes())
}

/// A `101 Switching Protocols` head; after it the connection is the
/// protocol named in `upgrade`.
pub fn switching_protocols(upgrade: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = String::with_capacity(128);
    let _ = write!(
        head,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n"
    );
    for (name, value) in extra_headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Percent-encodes `s` for a path segment or header value: everything but
/// RFC 3986 unreserved characters is escaped, so names with spaces, commas
/// or non-ASCII letters travel safely.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes a percent-encoded string; `None` if an escape is broken or the
/// result is not UTF-8.
pub fn pct_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly (either case): `u8::from_str_radix`
            // also took `+A`, so `%+A0` decoded as if it were `%0A0`.
            let mut byte = [0u8; 1];
            hex::decode_to_slice(bytes.get(i + 1..i + 3)?, &mut byte).ok()?;
            out.push(byte[0]);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_and_keeps_what_follows() {
        let raw = b"GET /v1/clients?x=1 HTTP/1.1\r\nHost: gw\r\nX-Thing:  a b \r\n\r\nEXTRA";
        let (head, len) = parse_request(raw).expect("complete head");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/v1/clients?x=1");
        assert_eq!(head.path(), "/v1/clients");
        assert_eq!(head.header("x-thing"), Some("a b"));
        assert_eq!(&raw[len..], b"EXTRA");
    }

    #[test]
    fn incomplete_until_blank_line() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(HeadError::Incomplete)
        );
    }

    #[test]
    fn oversized_head_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(MAX_HEAD_BYTES + 10, b'a');
        let err = parse_request(&raw).unwrap_err();
        assert_eq!(err, HeadError::TooLarge);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let err = parse_request(&raw).unwrap_err();
        assert_eq!(err, HeadError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn garbage_is_400() {
        let err = parse_request(b"\x16\x03\x01garbage\r\n\r\n").unwrap_err();
        assert_eq!(err.status(), 400);
        let err = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap_err();
        assert_eq!(err, HeadError::Malformed("HTTP/1.1 required"));
        let err = parse_request(b"GET http://x/ HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn response_round_trips() {
        let bytes = error_response(404, &[], "no such client");
        let (head, len) = parse_response(&bytes).expect("complete");
        assert_eq!(head.status, 404);
        assert_eq!(head.header("content-length"), Some("15"));
        assert_eq!(&bytes[len..], b"no such client\n");
    }

    /// fuzz/corpus/response_head/crash-status-020: `HTTP/1.1 020 OK` was
    /// a response with status 20.
    #[test]
    fn status_code_020_is_refused() {
        for line in ["HTTP/1.1 020 OK", "HTTP/1.1 099 X", "HTTP/1.1 600 X", "HTTP/1.1 999 X"] {
            let raw = format!("{line}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(
                parse_response(raw.as_bytes()),
                Err(HeadError::Malformed("invalid status code")),
                "{line}"
            );
        }
        assert!(parse_response(b"HTTP/1.1 599 X\r\n\r\n").is_ok());
    }

    #[test]
    fn response_head_over_8_kib_is_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        raw.resize(MAX_HEAD_BYTES, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        // Whole, in one buffer, as a single large read or read_to_end gives it.
        assert_eq!(parse_response(&raw), Err(HeadError::TooLarge));
        raw.truncate(MAX_HEAD_BYTES - 4);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_response(&raw).map(|(_, len)| len), Ok(MAX_HEAD_BYTES));
    }

    /// fuzz/corpus/percent/crash-plus-in-escape: `%+A0` decoded (to a
    /// newline and `0`) through `u8::from_str_radix`'s sign.
    #[test]
    fn percent_escape_with_a_plus_sign_is_refused() {
        for s in ["%+A0", "%+4E", "a%+4", "%-1", "% 4"] {
            assert_eq!(pct_decode(s), None, "{s:?}");
        }
        assert_eq!(pct_decode("%4e%4E").as_deref(), Some("NN"));
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["pc1", "Reception desk", "Ünïcode, ok?", "a/b%c"] {
            let enc = pct_encode(s);
            assert!(enc.bytes().all(|b| b.is_ascii_graphic()));
            assert!(!enc.contains('/'));
            assert_eq!(pct_decode(&enc).as_deref(), Some(s));
        }
        assert_eq!(pct_decode("%zz"), None);
        assert_eq!(pct_decode("%4"), None);
    }
}
