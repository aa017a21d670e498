//! Time-based one-time passwords (RFC 6238) for operators' second factor.
//!
//! Pure: the caller passes the time and the step of the last code it
//! accepted for this operator, and stores the step [`verify`] returns, so
//! "a code that was accepted is never accepted again" holds wherever that
//! state lives (one table all workers share, later a store). Codes are
//! compared in constant time.
//!
//! The defaults are what every authenticator app speaks: HMAC-SHA-1, six
//! digits, a 30-second step, one step of clock skew either way. Digits,
//! step and hash are parameters so RFC 6238's Appendix B vectors (eight
//! digits, SHA-1, SHA-256 and SHA-512) run as tests.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Bytes in a secret `ringway operator add` makes: 160 bits, the length
/// RFC 4226 (section 4, R6) recommends and HMAC-SHA-1's output size.
pub const GENERATED_SECRET_BYTES: usize = 20;

/// Shortest secret accepted: RFC 4226's floor of 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest secret accepted: SHA-512's block, past which HMAC hashes the
/// key first and length adds nothing; it also bounds what a config holds.
pub const MAX_SECRET_BYTES: usize = 64;

/// Fewest digits in a code: RFC 4226 (section 5.3) requires at least six.
pub const MIN_DIGITS: u32 = 6;

/// Most digits in a code: eight, what RFC 6238's vectors use; more would
/// reach past the 31 bits dynamic truncation gives.
pub const MAX_DIGITS: u32 = 8;

/// Most steps of skew either way: each costs one HMAC per check, and ten
/// steps of 30 s is already five minutes of clock drift forgiven.
pub const MAX_SKEW_STEPS: u64 = 10;

/// The label that names the gateway in authenticator apps and URIs.
pub const ISSUER: &str = "ringway";

/// The hash under the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-1: what authenticator apps assume. SHA-1's collision
    /// weakness does not touch HMAC, and ring offers it for such legacy use.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// Its name in an `otpauth://` URI.
    pub fn uri_name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// How codes are made and how much skew is forgiven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The hash under the HMAC.
    pub algorithm: Algorithm,
    /// Digits per code, [`MIN_DIGITS`] to [`MAX_DIGITS`].
    pub digits: u32,
    /// Seconds per step (RFC 6238's X); at least 1.
    pub step_secs: u64,
    /// Steps either side of now that are accepted (at most [`MAX_SKEW_STEPS`]).
    pub skew_steps: u64,
}

impl Params {
    /// What authenticator apps speak: SHA-1, 6 digits, 30 s, ±1 step.
    pub const DEFAULT: Params = Params {
        algorithm: Algorithm::Sha1,
        digits: 6,
        step_secs: 30,
        skew_steps: 1,
    };

    /// The step (RFC 6238's T) that `unix` seconds fall in.
    pub fn step_of(&self, unix: u64) -> u64 {
        unix / self.step_secs.max(1)
    }

    /// Digits and skew clamped into their bounds, so no caller's slip can
    /// make a 31-bit modulus overflow or a check loop run long.
    fn clamped(self) -> Params {
        Params {
            digits: self.digits.clamp(MIN_DIGITS, MAX_DIGITS),
            step_secs: self.step_secs.max(1),
            skew_steps: self.skew_steps.min(MAX_SKEW_STEPS),
            ..self
        }
    }
}

impl Default for Params {
    fn default() -> Params {
        Params::DEFAULT
    }
}

/// A shared TOTP secret. `Debug` hides it; equality is constant-time.
#[derive(Clone)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// A new random secret of [`GENERATED_SECRET_BYTES`] from the OS.
    pub fn generate() -> TotpSecret {
        let mut bytes = vec![0u8; GENERATED_SECRET_BYTES];
        // SystemRandom fails only if the OS has no entropy source at all,
        // which would leave no way to make any secret.
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the OS random source failed");
        TotpSecret(bytes)
    }

    /// Wraps raw bytes, refusing a length outside the bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<TotpSecret, SecretError> {
        match bytes.len() {
            n if n < MIN_SECRET_BYTES => Err(SecretError::TooShort(n)),
            n if n > MAX_SECRET_BYTES => Err(SecretError::TooLong(n)),
            _ => Ok(TotpSecret(bytes.to_vec())),
        }
    }

    /// Parses RFC 4648 base32 without padding, as authenticator apps show
    /// it; lower case is accepted too. Nothing else (no spaces, no `=`).
    pub fn from_base32(text: &str) -> Result<TotpSecret, SecretError> {
        // Room for the longest secret; checked before decoding, so a huge
        // string is refused without a copy of it.
        if text.len() > MAX_SECRET_BYTES.div_ceil(5) * 8 {
            return Err(SecretError::TooLong(text.len() * 5 / 8));
        }
        let bytes = BASE32_NOPAD
            .decode(text.to_ascii_uppercase().as_bytes())
            .map_err(|_| SecretError::NotBase32)?;
        TotpSecret::from_bytes(&bytes)
    }

    /// The secret in upper-case base32 without padding.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// The raw bytes, for a fingerprint of the operator that holds it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for TotpSecret {
    fn eq(&self, other: &TotpSecret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TotpSecret {}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(hidden)")
    }
}

/// Why a secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    /// Not RFC 4648 base32 without padding.
    NotBase32,
    /// Fewer than [`MIN_SECRET_BYTES`] bytes (the count given).
    TooShort(usize),
    /// More than [`MAX_SECRET_BYTES`] bytes (about the count given).
    TooLong(usize),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::NotBase32 => f.write_str("is not base32 (RFC 4648, A-Z and 2-7, no padding)"),
            SecretError::TooShort(n) => write!(f, "is {n} bytes; at least {MIN_SECRET_BYTES} (128 bits)"),
            SecretError::TooLong(n) => write!(f, "is {n} bytes; at most {MAX_SECRET_BYTES}"),
        }
    }
}

/// Why a code was refused. The peer hears the same answer for each; the
/// gateway's log may say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpError {
    /// Not exactly `digits` ASCII digits.
    Malformed,
    /// No step within the skew gives this code.
    Wrong,
    /// The code is right but its step is not after the last one accepted.
    Replayed,
}

impl TotpError {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            TotpError::Malformed => "malformed",
            TotpError::Wrong => "wrong",
            TotpError::Replayed => "replayed",
        }
    }
}

/// The code of `step` (RFC 4226's HOTP with RFC 6238's T as the counter).
pub fn code_at_step(secret: &TotpSecret, params: &Params, step: u64) -> u32 {
    let params = params.clamped();
    let key = hmac::Key::new(params.algorithm.hmac(), &secret.0);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    // Dynamic truncation (RFC 4226 section 5.3): the last nibble picks
    // four bytes; every hash here is at least 20 bytes, so offset + 3 fits.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    bin % 10u32.pow(params.digits)
}

/// The code at `unix` seconds, zero-padded to `digits`, as apps show it.
pub fn code_at(secret: &TotpSecret, params: &Params, unix: u64) -> String {
    let params = params.clamped();
    let code = code_at_step(secret, &params, params.step_of(unix));
    format!("{code:0width$}", width = params.digits as usize)
}

/// Checks `code` at `unix_now`. `last_accepted_step` is the step of the
/// last code accepted for this operator (`None` if none): a code of that
/// step or an earlier one is [`TotpError::Replayed`]. On success, the
/// step to store as the new last accepted one.
///
/// Every step in the window is computed and compared in constant time,
/// so the time taken does not say how close a guess was.
pub fn verify(
    secret: &TotpSecret,
    params: &Params,
    code: &str,
    unix_now: u64,
    last_accepted_step: Option<u64>,
) -> Result<u64, TotpError> {
    let params = params.clamped();
    let given = code.as_bytes();
    if given.len() != params.digits as usize || !given.iter().all(u8::is_ascii_digit) {
        return Err(TotpError::Malformed);
    }
    let now = params.step_of(unix_now);
    let mut matched: Option<u64> = None;
    for step in now.saturating_sub(params.skew_steps)..=now.saturating_add(params.skew_steps) {
        let want = format!(
            "{:0width$}",
            code_at_step(secret, &params, step),
            width = params.digits as usize
        );
        if bool::from(want.as_bytes().ct_eq(given)) {
            // Steps rise, so the last match is the latest step.
            matched = Some(step);
        }
    }
    match (matched, last_accepted_step) {
        (None, _) => Err(TotpError::Wrong),
        (Some(step), Some(last)) if step <= last => Err(TotpError::Replayed),
        (Some(step), _) => Ok(step),
    }
}

/// The `otpauth://totp/` URI authenticator apps scan (Google's Key Uri
/// Format), labelled `ringway:<account>`.
pub fn otpauth_uri(account: &str, secret: &TotpSecret, params: &Params) -> String {
    let params = params.clamped();
    format!(
        "otpauth://totp/{ISSUER}:{}?secret={}&issuer={ISSUER}&algorithm={}&digits={}&period={}",
        crate::http::pct_encode(account),
        secret.to_base32(),
        params.algorithm.uri_name(),
        params.digits,
        params.step_secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ascii: &str) -> TotpSecret {
        TotpSecret::from_bytes(ascii.as_bytes()).expect("a valid test secret")
    }

    /// RFC 6238 Appendix B: the seeds are the ASCII digits repeated to the
    /// hash's output size; eight digits, 30-second steps.
    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let seeds = [
            (Algorithm::Sha1, "12345678901234567890"),
            (Algorithm::Sha256, "12345678901234567890123456789012"),
            (
                Algorithm::Sha512,
                "1234567890123456789012345678901234567890123456789012345678901234",
            ),
        ];
        let table: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1_111_111_109, ["07081804", "68084774", "25091201"]),
            (1_111_111_111, ["14050471", "67062674", "99943326"]),
            (1_234_567_890, ["89005924", "91819424", "93441116"]),
            (2_000_000_000, ["69279037", "90698825", "38618901"]),
            (20_000_000_000, ["65353130", "77737706", "47863826"]),
        ];
        for (unix, codes) in table {
            for ((algorithm, seed), want) in seeds.iter().zip(codes) {
                let params = Params {
                    algorithm: *algorithm,
                    digits: 8,
                    ..Params::DEFAULT
                };
                assert_eq!(code_at(&secret(seed), &params, unix), want, "{algorithm:?} at {unix}");
                assert_eq!(
                    verify(&secret(seed), &params, want, unix, None),
                    Ok(unix / 30),
                    "{algorithm:?} at {unix}"
                );
            }
        }
    }

    #[test]
    fn six_digits_are_the_last_six_of_the_eight() {
        // Truncation keeps the low digits: 94287082 at 59 s -> 287082.
        let s = secret("12345678901234567890");
        assert_eq!(code_at(&s, &Params::DEFAULT, 59), "287082");
        assert_eq!(code_at(&s, &Params::DEFAULT, 1_111_111_109), "081804");
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let s = secret("12345678901234567890");
        let p = Params::DEFAULT;
        let now = 1_111_111_111; // step 37037037
        let step = now / 30;
        for (at, want) in [
            (now - 30, Ok(step - 1)),
            (now, Ok(step)),
            (now + 30, Ok(step + 1)),
            (now - 60, Err(TotpError::Wrong)),
            (now + 60, Err(TotpError::Wrong)),
        ] {
            let code = code_at(&s, &p, at);
            assert_eq!(verify(&s, &p, &code, now, None), want, "code of {at}");
        }
        let none = Params { skew_steps: 0, ..p };
        assert_eq!(
            verify(&s, &none, &code_at(&s, &p, now - 30), now, None),
            Err(TotpError::Wrong)
        );
    }

    #[test]
    fn a_code_accepted_once_is_never_accepted_again() {
        let s = secret("12345678901234567890");
        let p = Params::DEFAULT;
        let now = 1_234_567_890;
        let code = code_at(&s, &p, now);
        let step = verify(&s, &p, &code, now, None).expect("first use");
        assert_eq!(verify(&s, &p, &code, now, Some(step)), Err(TotpError::Replayed));
        // Still within the skew 30 s later: still a replay.
        assert_eq!(verify(&s, &p, &code, now + 30, Some(step)), Err(TotpError::Replayed));
        // An older code inside the window is refused once a newer one was taken.
        let older = code_at(&s, &p, now - 30);
        assert_eq!(verify(&s, &p, &older, now, Some(step)), Err(TotpError::Replayed));
        // The next step's code is fresh.
        let next = code_at(&s, &p, now + 30);
        assert_eq!(verify(&s, &p, &next, now + 30, Some(step)), Ok(step + 1));
    }

    #[test]
    fn malformed_codes_are_refused_before_any_hmac() {
        let s = secret("12345678901234567890");
        for bad in ["", "12345", "1234567", "12345a", " 12345", "１２３４５６", "123 456"] {
            assert_eq!(
                verify(&s, &Params::DEFAULT, bad, 59, None),
                Err(TotpError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(verify(&s, &Params::DEFAULT, "000000", 59, None), Err(TotpError::Wrong));
    }

    #[test]
    fn clock_at_zero_and_at_the_end_of_time_do_not_overflow() {
        let s = secret("12345678901234567890");
        let p = Params::DEFAULT;
        assert_eq!(verify(&s, &p, &code_at(&s, &p, 0), 0, None), Ok(0));
        assert_eq!(
            verify(&s, &p, &code_at(&s, &p, u64::MAX), u64::MAX, None),
            Ok(u64::MAX / 30)
        );
    }

    #[test]
    fn base32_secrets_round_trip_and_are_checked() {
        let s = TotpSecret::generate();
        assert_eq!(s.as_bytes().len(), GENERATED_SECRET_BYTES);
        let text = s.to_base32();
        assert_eq!(text.len(), 32);
        assert_eq!(TotpSecret::from_base32(&text), Ok(s.clone()));
        assert_eq!(TotpSecret::from_base32(&text.to_ascii_lowercase()), Ok(s));
        // RFC 4648's own vector: "foobar" is MZXW6YTBOI.
        assert_eq!(
            BASE32_NOPAD.encode(b"foobar"),
            "MZXW6YTBOI",
            "the encoding is RFC 4648 base32"
        );
        assert_eq!(
            TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").map(|s| s.as_bytes().to_vec()),
            Ok(b"12345678901234567890".to_vec())
        );
        for (bad, want) in [
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====", SecretError::NotBase32),
            ("GEZDGNBV GY3TQOJQ", SecretError::NotBase32),
            ("GEZDGNBVGY3TQOJ1", SecretError::NotBase32),
            ("MZXW6YTBOI", SecretError::TooShort(6)),
            ("", SecretError::TooShort(0)),
        ] {
            assert_eq!(TotpSecret::from_base32(bad), Err(want), "{bad:?}");
        }
        assert_eq!(
            TotpSecret::from_base32(&"A".repeat(10_000)),
            Err(SecretError::TooLong(6250))
        );
        assert_eq!(
            TotpSecret::from_bytes(&[0; 65]).map(|_| ()),
            Err(SecretError::TooLong(65))
        );
    }

    #[test]
    fn the_secret_is_hidden_from_debug() {
        let s = secret("12345678901234567890");
        assert_eq!(format!("{s:?}"), "TotpSecret(hidden)");
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_parameters() {
        let s = secret("12345678901234567890");
        assert_eq!(
            otpauth_uri("alice", &s, &Params::DEFAULT),
            "otpauth://totp/ringway:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ringway&algorithm=SHA1&digits=6&period=30"
        );
        assert!(otpauth_uri("bob@ops", &s, &Params::DEFAULT).starts_with("otpauth://totp/ringway:bob%40ops?"));
    }
}
