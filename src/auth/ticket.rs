//! Sign-in tickets: what a control carries after an operator signed in,
//! so browse and connect need neither the password nor a code again.
//!
//! A ticket is signed by the gateway with HMAC-SHA-256 under its ticket
//! key and binds the operator's name and generation, the gateway key's
//! name, the client (the control's host name), when it was issued and
//! when it expires. The generation changes whenever the operator is
//! changed in the config, so a ticket dies with the definition it was
//! issued under; a removed operator has none, so its tickets die at once.
//!
//! Text form, for a header (every character is URL- and header-safe):
//!
//! ```text
//! rwt1.<base64url(payload)>.<base64url(HMAC-SHA-256(key, "ringway ticket v1\0" || payload))>
//! payload = version (1 byte, 1) | generation (u64) | issued_at (u64) | expires_at (u64)
//!           | operator | key name | client        (each: u16 length, then UTF-8)
//! ```
//!
//! Integers are big-endian, times Unix seconds, base64url without padding.
//! [`check`] bounds the text before decoding it, verifies the signature in
//! constant time (ring's `hmac::verify`) before reading any field, and
//! only then looks at times and bindings.

use std::fmt;
use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// What every ticket's text starts with: the format's name and version.
pub const TICKET_PREFIX: &str = "rwt1.";

/// Longest ticket text accepted: the longest one [`Ticket::mint`] makes
/// (names at their bounds, all four-byte characters) is about 860.
pub const MAX_TICKET_CHARS: usize = 1024;

/// Bytes of a ticket key: HMAC-SHA-256's block is 64, its output 32; 256
/// bits is all the strength the MAC has.
pub const TICKET_KEY_BYTES: usize = 32;

/// How long a ticket lasts unless `[auth] ticket_hours` says: a working
/// day, so an operator signs in once a shift.
pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How far in the future a ticket's issue time may be: the gateway minted
/// it, so only its own clock stepping back (NTP) makes it so.
pub const CLOCK_SLACK_SECS: u64 = 60;

/// Domain separation: no other HMAC under this key can pass for a ticket.
const MAC_LABEL: &[u8] = b"ringway ticket v1\0";

/// The payload's version byte.
const VERSION: u8 = 1;

/// The per-gateway key tickets are signed with. `Debug` hides it.
pub struct TicketKey {
    key: hmac::Key,
}

impl TicketKey {
    /// The key from its bytes (which the gateway keeps, so tickets outlive
    /// restarts).
    pub fn new(bytes: &[u8; TICKET_KEY_BYTES]) -> TicketKey {
        TicketKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// Fresh random key bytes from the OS, for a gateway's first start.
    pub fn generate_bytes() -> [u8; TICKET_KEY_BYTES] {
        let mut bytes = [0u8; TICKET_KEY_BYTES];
        // SystemRandom fails only if the OS has no entropy source at all.
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the OS random source failed");
        bytes
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(hidden)")
    }
}

/// What a ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The operator who signed in.
    pub operator: String,
    /// The operator's generation when it did (see the module docs).
    pub generation: u64,
    /// The gateway key's name the sign-in proved.
    pub key: String,
    /// The control's name (its host name) that signed in.
    pub client: String,
    /// Unix seconds it was issued.
    pub issued_at: u64,
    /// Unix seconds from which it is no longer accepted.
    pub expires_at: u64,
}

/// Who a ticket must be for, as the request presenting it shows: the key
/// its proof holds and the control's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The gateway key's name the request proved.
    pub key: &'a str,
    /// The control's name the request gave.
    pub client: &'a str,
}

/// Why a ticket was not minted or not accepted. The peer hears one
/// answer for all ("sign in again"); the gateway's log says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// Longer than [`MAX_TICKET_CHARS`]: refused unread.
    Oversize,
    /// Not `rwt1.<payload>.<tag>`, or a field that does not decode.
    Malformed,
    /// The signature does not match: another gateway's key, or a field
    /// changed.
    BadSignature,
    /// Past its expiry.
    Expired,
    /// Issued later than now (more than [`CLOCK_SLACK_SECS`] ahead).
    NotYetValid,
    /// The operator is no longer configured.
    OperatorGone,
    /// The operator was changed since (another generation).
    OperatorChanged,
    /// Issued for another gateway key.
    WrongKey,
    /// Issued to another client.
    WrongClient,
    /// Minting: a name out of its bounds, or a lifetime of zero.
    BadField,
}

impl TicketError {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            TicketError::Oversize => "oversize",
            TicketError::Malformed => "malformed",
            TicketError::BadSignature => "bad_signature",
            TicketError::Expired => "expired",
            TicketError::NotYetValid => "not_yet_valid",
            TicketError::OperatorGone => "operator_gone",
            TicketError::OperatorChanged => "operator_changed",
            TicketError::WrongKey => "wrong_key",
            TicketError::WrongClient => "wrong_client",
            TicketError::BadField => "bad_field",
        }
    }
}

impl Ticket {
    /// A ticket for `operator` (of `generation`) proving gateway key `key`
    /// from `client`, issued at `now` for `lifetime`. Names are checked
    /// against the rules they were checked by when they came in.
    pub fn new(
        operator: &str,
        generation: u64,
        key: &str,
        client: &str,
        now: u64,
        lifetime: Duration,
    ) -> Result<Ticket, TicketError> {
        let names_ok =
            super::scram::valid_user(operator) && crate::proto::valid_name(key) && crate::proto::valid_name(client);
        if !names_ok || lifetime.as_secs() == 0 {
            return Err(TicketError::BadField);
        }
        Ok(Ticket {
            operator: operator.to_string(),
            generation,
            key: key.to_string(),
            client: client.to_string(),
            issued_at: now,
            expires_at: now.saturating_add(lifetime.as_secs()),
        })
    }

    /// The signed text form.
    pub fn mint(&self, key: &TicketKey) -> String {
        let payload = self.payload();
        let tag = hmac::sign(&key.key, &[MAC_LABEL, &payload].concat());
        format!(
            "{TICKET_PREFIX}{}.{}",
            BASE64URL_NOPAD.encode(&payload),
            BASE64URL_NOPAD.encode(tag.as_ref())
        )
    }

    fn payload(&self) -> Vec<u8> {
        let mut p = vec![VERSION];
        for n in [self.generation, self.issued_at, self.expires_at] {
            p.extend_from_slice(&n.to_be_bytes());
        }
        for s in [&self.operator, &self.key, &self.client] {
            // Names are at most 64 characters, 256 bytes: the length fits.
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        }
        p
    }

    /// Reads a payload whose signature was verified; still bounds-checked
    /// at every step, since a key could be misused elsewhere.
    fn from_payload(p: &[u8]) -> Option<Ticket> {
        let mut rest = p.strip_prefix(&[VERSION])?;
        let mut number = || {
            let (head, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            Some(u64::from_be_bytes(*head))
        };
        let (generation, issued_at, expires_at) = (number()?, number()?, number()?);
        let mut text = || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let (s, tail) = (tail.get(..len)?, tail.get(len..)?);
            rest = tail;
            String::from_utf8(s.to_vec()).ok()
        };
        let (operator, key, client) = (text()?, text()?, text()?);
        rest.is_empty().then_some(Ticket {
            operator,
            generation,
            key,
            client,
            issued_at,
            expires_at,
        })
    }
}

/// Checks a ticket's text at `now` for a request that proved `expected`;
/// `generation_of` gives a configured operator's current generation (or
/// `None` if there is no such operator). The ticket on success.
pub fn check(
    key: &TicketKey,
    text: &str,
    now: u64,
    expected: &Expected,
    generation_of: impl FnOnce(&str) -> Option<u64>,
) -> Result<Ticket, TicketError> {
    if text.len() > MAX_TICKET_CHARS {
        return Err(TicketError::Oversize);
    }
    let body = text.strip_prefix(TICKET_PREFIX).ok_or(TicketError::Malformed)?;
    let (payload, tag) = body.split_once('.').ok_or(TicketError::Malformed)?;
    let decode = |s: &str| BASE64URL_NOPAD.decode(s.as_bytes()).map_err(|_| TicketError::Malformed);
    let (payload, tag) = (decode(payload)?, decode(tag)?);
    hmac::verify(&key.key, &[MAC_LABEL, &payload].concat(), &tag).map_err(|_| TicketError::BadSignature)?;
    let ticket = Ticket::from_payload(&payload).ok_or(TicketError::Malformed)?;
    if now >= ticket.expires_at {
        return Err(TicketError::Expired);
    }
    if ticket.issued_at > now.saturating_add(CLOCK_SLACK_SECS) {
        return Err(TicketError::NotYetValid);
    }
    match generation_of(&ticket.operator) {
        None => return Err(TicketError::OperatorGone),
        Some(g) if g != ticket.generation => return Err(TicketError::OperatorChanged),
        Some(_) => {}
    }
    if ticket.key != expected.key {
        return Err(TicketError::WrongKey);
    }
    if ticket.client != expected.client {
        return Err(TicketError::WrongClient);
    }
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const EXPECTED: Expected<'static> = Expected {
        key: "acme",
        client: "ops-laptop",
    };

    fn key() -> TicketKey {
        TicketKey::new(&[9; TICKET_KEY_BYTES])
    }

    fn ticket() -> Ticket {
        Ticket::new("alice", 7, "acme", "ops-laptop", NOW, DEFAULT_TICKET_LIFETIME).expect("valid fields")
    }

    /// alice at generation 7, as the config says.
    fn alice(name: &str) -> Option<u64> {
        (name == "alice").then_some(7)
    }

    #[test]
    fn a_valid_ticket_checks_out_until_it_expires() {
        let text = ticket().mint(&key());
        assert!(text.starts_with("rwt1."), "{text}");
        assert!(text.len() < 150, "{} characters", text.len());
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
            "{text}"
        );
        assert_eq!(check(&key(), &text, NOW, &EXPECTED, alice), Ok(ticket()));
        let last = NOW + 12 * 3600 - 1;
        assert_eq!(
            check(&key(), &text, last, &EXPECTED, alice).map(|t| t.expires_at),
            Ok(last + 1)
        );
    }

    #[test]
    fn an_expired_or_future_ticket_is_refused() {
        let text = ticket().mint(&key());
        assert_eq!(
            check(&key(), &text, NOW + 12 * 3600, &EXPECTED, alice),
            Err(TicketError::Expired)
        );
        assert_eq!(
            check(&key(), &text, u64::MAX, &EXPECTED, alice),
            Err(TicketError::Expired)
        );
        assert_eq!(
            check(&key(), &text, NOW - CLOCK_SLACK_SECS, &EXPECTED, alice).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            check(&key(), &text, NOW - CLOCK_SLACK_SECS - 1, &EXPECTED, alice),
            Err(TicketError::NotYetValid)
        );
    }

    #[test]
    fn a_ticket_from_another_key_is_refused() {
        let text = ticket().mint(&TicketKey::new(&[8; TICKET_KEY_BYTES]));
        assert_eq!(
            check(&key(), &text, NOW, &EXPECTED, alice),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_field_or_tag_is_refused() {
        let text = ticket().mint(&key());
        let body = text.strip_prefix(TICKET_PREFIX).expect("prefix");
        let (payload, tag) = body.split_once('.').expect("two parts");
        let payload = BASE64URL_NOPAD.decode(payload.as_bytes()).expect("payload");
        // Every byte of the payload matters: generation, times, names.
        for i in 0..payload.len() {
            let mut changed = payload.clone();
            changed[i] ^= 1;
            let forged = format!("{TICKET_PREFIX}{}.{tag}", BASE64URL_NOPAD.encode(&changed));
            assert_eq!(
                check(&key(), &forged, NOW, &EXPECTED, alice),
                Err(TicketError::BadSignature),
                "byte {i}"
            );
        }
        // A longer expiry, re-encoded properly, is still unsigned.
        let longer = Ticket {
            expires_at: u64::MAX,
            ..ticket()
        };
        let forged = format!("{TICKET_PREFIX}{}.{tag}", BASE64URL_NOPAD.encode(&longer.payload()));
        assert_eq!(
            check(&key(), &forged, NOW, &EXPECTED, alice),
            Err(TicketError::BadSignature)
        );
        let mut tag = BASE64URL_NOPAD.decode(tag.as_bytes()).expect("tag");
        tag[31] ^= 0x80;
        let forged = format!(
            "{TICKET_PREFIX}{}.{}",
            BASE64URL_NOPAD.encode(&payload),
            BASE64URL_NOPAD.encode(&tag)
        );
        assert_eq!(
            check(&key(), &forged, NOW, &EXPECTED, alice),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn another_operator_generation_or_a_removed_operator_is_refused() {
        let text = ticket().mint(&key());
        assert_eq!(
            check(&key(), &text, NOW, &EXPECTED, |_| Some(8)),
            Err(TicketError::OperatorChanged)
        );
        assert_eq!(
            check(&key(), &text, NOW, &EXPECTED, |_| None),
            Err(TicketError::OperatorGone)
        );
    }

    #[test]
    fn a_ticket_for_another_key_or_client_is_refused() {
        let text = ticket().mint(&key());
        let other_key = Expected {
            key: "beta",
            ..EXPECTED
        };
        assert_eq!(check(&key(), &text, NOW, &other_key, alice), Err(TicketError::WrongKey));
        let other_client = Expected {
            client: "elsewhere",
            ..EXPECTED
        };
        assert_eq!(
            check(&key(), &text, NOW, &other_client, alice),
            Err(TicketError::WrongClient)
        );
    }

    #[test]
    fn oversize_and_malformed_input_is_refused_unread() {
        let huge = format!("{TICKET_PREFIX}{}", "A".repeat(MAX_TICKET_CHARS));
        assert_eq!(check(&key(), &huge, NOW, &EXPECTED, alice), Err(TicketError::Oversize));
        for bad in [
            "",
            "rwt1.",
            "rwt1.AAAA",
            "rwt2.AAAA.AAAA",
            "rwt1.!!!.AAAA",
            "rwt1.AAAA.AAAA.AAAA",
        ] {
            assert_eq!(
                check(&key(), bad, NOW, &EXPECTED, alice),
                Err(TicketError::Malformed),
                "{bad}"
            );
        }
        // Signed but not a payload (a key misused elsewhere): still refused.
        let junk = b"\x01short";
        let tag = hmac::sign(&key().key, &[MAC_LABEL, junk.as_slice()].concat());
        let text = format!(
            "{TICKET_PREFIX}{}.{}",
            BASE64URL_NOPAD.encode(junk),
            BASE64URL_NOPAD.encode(tag.as_ref())
        );
        assert_eq!(check(&key(), &text, NOW, &EXPECTED, alice), Err(TicketError::Malformed));
    }

    #[test]
    fn fields_are_bounded_when_minting() {
        let long = "x".repeat(65);
        let life = DEFAULT_TICKET_LIFETIME;
        for (operator, key, client, lifetime) in [
            ("bad name", "acme", "pc", life),
            ("alice", long.as_str(), "pc", life),
            ("alice", "acme", long.as_str(), life),
            ("alice", "acme", "", life),
            ("alice", "acme", "pc", Duration::ZERO),
        ] {
            assert_eq!(
                Ticket::new(operator, 1, key, client, NOW, lifetime),
                Err(TicketError::BadField),
                "{operator:?} {key:?} {client:?} {lifetime:?}"
            );
        }
        // The longest names there are, in four-byte characters, still fit.
        let widest = "𝄞".repeat(64);
        let t = Ticket::new(&"a".repeat(64), u64::MAX, &widest, &widest, NOW, life).expect("bounds");
        let text = t.mint(&key());
        assert!(text.len() <= MAX_TICKET_CHARS, "{}", text.len());
        let expected = Expected {
            key: &widest,
            client: &widest,
        };
        assert_eq!(check(&key(), &text, NOW, &expected, |_| Some(u64::MAX)), Ok(t));
    }

    #[test]
    fn the_key_is_hidden_from_debug() {
        assert_eq!(format!("{:?}", key()), "TicketKey(hidden)");
        assert_ne!(TicketKey::generate_bytes(), TicketKey::generate_bytes());
    }
}
