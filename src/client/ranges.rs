//! The ranges that numbers from the gateway must fall in, and what a
//! client does with one outside them (docs/PROTOCOL.md, "Numbers from the
//! wire"). No number the gateway sends is trusted: the poll interval is
//! clamped, because a gateway that asks for too much or too little should
//! still get polls; a body length over the cap is refused, because reading
//! it would hold as much memory as the gateway chose.
//!
//! Pure functions, no I/O, so each rule has a unit test.

use std::time::Duration;

use crate::config::{HEARTBEAT_GRACE, MAX_CMPI_SECS};
use crate::http::ResponseHead;
use crate::proto::parse_decimal;

/// Shortest poll interval a client keeps: the gateway's own lower bound
/// for `cmpi_secs`. A `0` would make the agent poll in a busy loop.
pub const MIN_CMPI: Duration = Duration::from_secs(1);

/// Longest poll interval a client keeps: the gateway's own upper bound for
/// `cmpi_secs` (a day). Anything longer cannot be a setting of a gateway
/// that follows this protocol.
pub const MAX_CMPI: Duration = Duration::from_secs(MAX_CMPI_SECS);

/// The poll interval for a CMPI of `secs` seconds from the gateway (the
/// `Ringway-Cmpi` header or a `CMPI` frame), clamped to
/// [`MIN_CMPI`]..=[`MAX_CMPI`].
pub fn clamp_cmpi(secs: u64) -> Duration {
    Duration::from_secs(secs).clamp(MIN_CMPI, MAX_CMPI)
}

/// Parses a `Ringway-Cmpi` header value: a decimal number of seconds,
/// clamped as [`clamp_cmpi`] says. `None` if it is not a number that fits
/// 64 bits as the protocol writes numbers ([`parse_decimal`]), the same
/// rule the channel's `CMPI` frame follows.
pub fn parse_cmpi(value: &str) -> Option<Duration> {
    parse_decimal::<u64>(value.trim()).map(clamp_cmpi)
}

/// Shortest `--dead-after` an agent accepts: it polls every half of it,
/// so below two seconds it would poll more than once a second.
pub const MIN_DEAD_AFTER: Duration = Duration::from_secs(2);

/// Longest `--dead-after` an agent accepts: as long as the longest CMPI.
pub const MAX_DEAD_AFTER: Duration = MAX_CMPI;

/// How long an agent waits without hearing from the gateway before it
/// treats the gateway as gone (a silent gateway: host down, network cut,
/// process stopped). The agent polls every CMPI and the gateway answers
/// each poll at once, so by default the deadline is CMPI +
/// [`HEARTBEAT_GRACE`]: an answer 10 s late. `dead_after` replaces it
/// (see [`poll_interval`] for how the polls keep up with a short one).
/// Saturating, so that no interval can overflow it.
pub fn silence_deadline(cmpi: Duration, dead_after: Option<Duration>) -> Duration {
    dead_after.unwrap_or_else(|| cmpi.saturating_add(HEARTBEAT_GRACE))
}

/// How often an agent polls: every CMPI, or every half of a `dead_after`
/// shorter than that, so that a healthy gateway's answers arrive well
/// within the deadline (and a lost one alone does not end the channel).
pub fn poll_interval(cmpi: Duration, dead_after: Option<Duration>) -> Duration {
    match dead_after {
        Some(d) => cmpi.min(d / 2).max(MIN_DEAD_AFTER / 2),
        None => cmpi,
    }
}

/// The length of a response body, from its head's `Content-Length`, if it
/// is at most `cap` bytes. Refused (an error naming the length) when it is
/// missing, not a decimal number, sent twice with different values, or
/// over `cap`: a length too large even for 64 bits is over any cap, and is
/// named as sent.
pub fn body_length(head: &ResponseHead, cap: usize) -> Result<usize, String> {
    let mut values = head
        .headers
        .iter()
        .filter(|(name, _)| name == "content-length")
        .map(|(_, value)| value.trim());
    let value = values.next().ok_or("the gateway's answer has no Content-Length")?;
    if values.any(|other| other != value) {
        return Err("the gateway's answer has two different Content-Lengths".into());
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the gateway's answer has a Content-Length that is not a number: {:?}",
            crate::eventlog::sanitize(value)
        ));
    }
    match value.parse::<usize>() {
        Ok(len) if len <= cap => Ok(len),
        // Digits only, so a failed parse can only be an overflow.
        _ => Err(format!(
            "the gateway's answer has a body of {value} bytes, over the {cap}-byte limit"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(lengths: &[&str]) -> ResponseHead {
        ResponseHead {
            status: 200,
            reason: "OK".into(),
            headers: lengths
                .iter()
                .map(|v| ("content-length".to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn cmpi_is_clamped_to_one_second_and_one_day() {
        assert_eq!(clamp_cmpi(0), Duration::from_secs(1));
        assert_eq!(clamp_cmpi(1), Duration::from_secs(1));
        assert_eq!(clamp_cmpi(60), Duration::from_secs(60));
        assert_eq!(clamp_cmpi(86_400), Duration::from_secs(86_400));
        assert_eq!(clamp_cmpi(86_401), Duration::from_secs(86_400));
        assert_eq!(clamp_cmpi(u64::MAX), Duration::from_secs(86_400));
    }

    #[test]
    fn cmpi_headers_parse_as_clamped_numbers() {
        assert_eq!(parse_cmpi("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_cmpi(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_cmpi("0"), Some(Duration::from_secs(1)));
        assert_eq!(parse_cmpi("18446744073709551615"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_cmpi("18446744073709551616"), None);
        assert_eq!(parse_cmpi("-1"), None);
        assert_eq!(parse_cmpi("1.5"), None);
        assert_eq!(parse_cmpi(""), None);
        assert_eq!(parse_cmpi("+60"), None, "the CMPI frame's rule: no sign");
        assert_eq!(parse_cmpi("060"), None, "the CMPI frame's rule: no leading zero");
    }

    #[test]
    fn silence_deadline_is_a_poll_and_the_grace_and_never_overflows() {
        assert_eq!(silence_deadline(Duration::from_secs(60), None), Duration::from_secs(70));
        assert_eq!(silence_deadline(MAX_CMPI, None), Duration::from_secs(86_400 + 10));
        assert_eq!(silence_deadline(Duration::MAX, None), Duration::MAX);
        let five = Some(Duration::from_secs(5));
        assert_eq!(silence_deadline(Duration::from_secs(60), five), Duration::from_secs(5));
    }

    #[test]
    fn a_short_dead_after_polls_twice_within_it() {
        let secs = Duration::from_secs;
        assert_eq!(poll_interval(secs(60), None), secs(60));
        assert_eq!(poll_interval(secs(60), Some(secs(5))), Duration::from_millis(2500));
        assert_eq!(poll_interval(secs(2), Some(secs(70))), secs(2));
        assert_eq!(poll_interval(secs(60), Some(Duration::ZERO)), secs(1));
    }

    #[test]
    fn body_lengths_within_the_cap_are_taken() {
        assert_eq!(body_length(&head_with(&["0"]), 16), Ok(0));
        assert_eq!(body_length(&head_with(&["16"]), 16), Ok(16));
        assert_eq!(body_length(&head_with(&["7", "7"]), 16), Ok(7));
    }

    #[test]
    fn body_lengths_over_the_cap_or_malformed_are_refused() {
        let over = |len: &str| format!("the gateway's answer has a body of {len} bytes, over the 16-byte limit");
        let not_a_number =
            |len: &str| format!("the gateway's answer has a Content-Length that is not a number: \"{len}\"");
        let cases: [(&[&str], String); 7] = [
            (&["17"], over("17")),
            (&["18446744073709551615"], over("18446744073709551615")),
            (&["99999999999999999999999999"], over("99999999999999999999999999")),
            (&[], "the gateway's answer has no Content-Length".into()),
            (&["-1"], not_a_number("-1")),
            (&["+5"], not_a_number("+5")),
            (
                &["5", "6"],
                "the gateway's answer has two different Content-Lengths".into(),
            ),
        ];
        for (lengths, why) in cases {
            assert_eq!(body_length(&head_with(lengths), 16), Err(why), "{lengths:?}");
        }
    }
}
