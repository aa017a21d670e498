//! Text lines over a connection, as the sign-in exchange speaks them:
//! each ends with `\n` (a `\r` before it is dropped), at most a given
//! length, printable ASCII. Shared by the gateway's login flow and the
//! client's, so both read the same way.

use std::io;

use compio::BufResult;

use crate::relay::Duplex;

/// Why no line came.
#[derive(Debug)]
pub enum LineError {
    /// Longer than allowed, newline included.
    TooLong,
    /// Not printable ASCII.
    NotText,
    /// The peer closed before a whole line.
    Closed,
    /// The connection failed.
    Io(io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => f.write_str("line too long"),
            LineError::NotText => f.write_str("line is not printable ASCII"),
            LineError::Closed => f.write_str("the peer closed the connection"),
            LineError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Takes the first whole line off `pending`, if there is one; refuses a
/// line (or a partial one) past `max` bytes, newline included.
pub fn take_line(pending: &mut Vec<u8>, max: usize) -> Result<Option<String>, LineError> {
    let Some(end) = pending.iter().position(|&b| b == b'\n') else {
        return if pending.len() >= max {
            Err(LineError::TooLong)
        } else {
            Ok(None)
        };
    };
    if end + 1 > max {
        return Err(LineError::TooLong);
    }
    let mut line: Vec<u8> = pending.drain(..=end).collect();
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(LineError::NotText);
    }
    // Printable ASCII is UTF-8.
    Ok(Some(String::from_utf8(line).map_err(|_| LineError::NotText)?))
}

/// Reads until a whole line is in `pending` and takes it. No deadline of
/// its own: the caller bounds the wait.
pub async fn read_line(conn: &impl Duplex, pending: &mut Vec<u8>, max: usize) -> Result<String, LineError> {
    loop {
        if let Some(line) = take_line(pending, max)? {
            return Ok(line);
        }
        let mut buf = std::mem::take(pending);
        buf.reserve(max.saturating_sub(buf.len()).max(64));
        let BufResult(res, b) = conn.read_into(buf).await;
        *pending = b;
        match res {
            Ok(0) => return Err(LineError::Closed),
            Ok(_) => {}
            Err(e) => return Err(LineError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_bounded_and_checked() {
        let mut p = b"SCRAM n,,n=a\r\nCODE 123".to_vec();
        assert_eq!(take_line(&mut p, 64).expect("fine").as_deref(), Some("SCRAM n,,n=a"));
        assert_eq!(take_line(&mut p, 64).expect("fine"), None, "a partial line waits");
        assert_eq!(p, b"CODE 123");
        assert!(matches!(take_line(&mut p, 8), Err(LineError::TooLong)));
        let mut p = b"0123456789\n".to_vec();
        assert!(
            matches!(take_line(&mut p, 10), Err(LineError::TooLong)),
            "the newline counts"
        );
        let mut p = b"0123456789\n".to_vec();
        assert_eq!(take_line(&mut p, 11).expect("fine").as_deref(), Some("0123456789"));
        let mut p = b"a\x1b[2Jb\n".to_vec();
        assert!(matches!(take_line(&mut p, 64), Err(LineError::NotText)));
    }
}
