//! Gateway keys and the proof that a peer holds one.
//!
//! A key never crosses the wire, not even over plain HTTP. A peer proves it
//! holds a key with an HMAC-SHA256 over the request's method, target, a
//! timestamp, a random nonce, the key's id and the peer's identity (its
//! agent or control name), bound to what carries it ([`Binding`]): over
//! TLS the connection's keying material, over plain HTTP the gateway's
//! boot id. So a proof moved to another TLS connection, or replayed to
//! the gateway after a restart, fails. The gateway accepts a proof once,
//! within [`REPLAY_WINDOW_SECS`] of its own clock, and compares in
//! constant time (ring's `hmac::verify`). The exact string signed is in
//! docs/PROTOCOL.md.
//!
//! Operator identity (user, password, TOTP) will travel in headers of its
//! own with proofs of their own, next to this one; nothing here changes
//! when it comes.

pub mod agentkey;
pub mod glob;
mod nonces;
pub mod scram;
pub mod ticket;
pub mod totp;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ring::{digest, hmac, rand::SecureRandom};
use subtle::ConstantTimeEq;

/// Shortest gateway key accepted. The seed product's rule (it used 5); we
/// lengthen it to 8 so a key is not trivially guessed online.
pub const MIN_KEY_LEN: usize = 8;

/// How far a proof's timestamp may be from the gateway's clock, either way.
/// Agents run on PCs whose clocks drift; five minutes is what Kerberos
/// allows and still bounds how long a nonce must be remembered.
pub const REPLAY_WINDOW_SECS: u64 = 300;

/// The authorization scheme name on the wire.
pub const SCHEME: &str = "Ringway-HMAC-SHA256";

/// The TLS exporter label (RFC 5705 / RFC 8446 section 7.5) both ends
/// derive a proof's binding with, no context, [`EXPORTER_LEN`] bytes.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-ringway-proof";

/// Bytes of exported keying material a TLS proof is bound to.
pub const EXPORTER_LEN: usize = 32;

/// The word that opens the body of the `401` for a proof signed with a
/// stale or missing boot id, so a client knows to sign again with the
/// answer's `Ringway-Boot` rather than give up.
pub const STALE_BOOT: &str = "stale_boot";

/// A gateway's boot id: 16 random bytes drawn at start, sent in every
/// answer as `Ringway-Boot`, and signed into every plain-HTTP proof, so a
/// proof made for one run of the gateway is worthless to the next.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// A fresh random id.
    pub fn random() -> Self {
        BootId(new_nonce())
    }

    /// Parses the 32 hex digits form.
    pub fn parse(s: &str) -> Option<Self> {
        decode_array(s).map(BootId)
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootId({self})")
    }
}

/// What a proof is bound to besides the request itself: the last line of
/// the string signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Plain HTTP: the boot id the client last heard from the gateway
    /// (`None` before it has heard one; such a proof never verifies).
    Boot(Option<BootId>),
    /// TLS: keying material exported from this connection
    /// ([`EXPORTER_LABEL`]), which no other connection shares.
    Tls([u8; EXPORTER_LEN]),
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Boot(Some(id)) => write!(f, "boot {id}"),
            Binding::Boot(None) => f.write_str("boot -"),
            Binding::Tls(material) => write!(f, "tls {}", hex::encode(material)),
        }
    }
}

/// The parts of a request a proof covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request target, exactly as sent.
    pub target: &'a str,
    /// The `Ringway-Identity` value, exactly as sent (percent-encoded).
    pub identity: &'a str,
    /// The connection or boot the proof is bound to.
    pub binding: Binding,
}

pub use nonces::{BUCKET_SECS, BUCKETS, KeyNonces, NonceCache};

/// A gateway key: the shared secret, the id that finds it in a proof, and
/// the name logs, the console and metrics show. `Debug` hides the secret so
/// it never reaches a log.
#[derive(Clone)]
pub struct GatewayKey {
    secret: String,
    id: KeyId,
    /// What people see. Never derived from the secret (a published hash of
    /// a weak key could be brute-forced offline); empty for a client's key,
    /// which has no name.
    name: std::sync::Arc<str>,
}

impl GatewayKey {
    /// Wraps a secret, as a client holds it: no name. Length rules are the
    /// config's job; this only hashes.
    pub fn new(secret: &str) -> Self {
        Self::named("", secret)
    }

    /// Wraps a secret the gateway knows as `name`.
    pub fn named(name: &str, secret: &str) -> Self {
        Self {
            secret: secret.to_string(),
            id: KeyId::of(secret),
            name: name.into(),
        }
    }

    /// The id a proof names the key by; on the wire only, never shown.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's name, as the configuration gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret, for the configuration's strength check.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.secret.as_bytes())
    }
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatewayKey({:?}, secret hidden)", self.name)
    }
}

/// A key's wire id: the first 8 bytes of SHA-256 over a fixed label and
/// the key. A proof names its key by it and workers hash agents by it, so
/// a client needs nothing but the secret. It is derived from the key, so it
/// is never shown (logs, the console, the API and metrics use the key's
/// name): it tells an eavesdropper on plain HTTP no more than the proof
/// beside it, but published it would let anyone test guesses offline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of `secret`.
    pub fn of(secret: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"ringway key id v1\0");
        ctx.update(secret.as_bytes());
        let d = ctx.finish();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        KeyId(id)
    }

    /// Parses the 16 hex digits form.
    pub fn parse(s: &str) -> Option<Self> {
        decode_array(s).map(KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a proof was refused. The gateway logs the kind; the peer only hears
/// 401, so it learns nothing about which part was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// The header is not our scheme or a field is broken.
    Malformed,
    /// No configured key has this id.
    UnknownKey,
    /// The timestamp is outside the replay window.
    Expired,
    /// This nonce was already used.
    Replayed,
    /// The HMAC does not match.
    BadSignature,
    /// The key already holds its quota of nonces (`[limits]
    /// nonces_per_key`): a flood by a holder of this key. Answered 503,
    /// for this key only.
    NonceQuota,
    /// A bearer key over plain HTTP, which would expose it.
    BearerOverPlain,
    /// A plain-HTTP proof signed with a boot id not this gateway run's
    /// (or none): made before a restart, or the client's first request.
    StaleBoot,
    /// A TLS connection that could not export keying material to bind
    /// the proof to.
    Unbound,
}

impl AuthError {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Expired => "expired",
            AuthError::Replayed => "replayed",
            AuthError::BadSignature => "bad_signature",
            AuthError::NonceQuota => "nonce_quota",
            AuthError::BearerOverPlain => "bearer_over_plain",
            AuthError::StaleBoot => STALE_BOOT,
            AuthError::Unbound => "unbound",
        }
    }
}

/// The parts of an `Authorization: Ringway-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Which key the peer claims to hold.
    pub kid: KeyId,
    /// Unix seconds when the proof was made.
    pub ts: u64,
    /// 16 random bytes, never reused.
    pub nonce: [u8; 16],
    /// HMAC-SHA256 over [`string_to_sign`].
    pub sig: [u8; 32],
}

/// Exactly what is signed. Newline-separated so no field can run into the
/// next (the target and identity cannot contain a raw newline: the target
/// is an HTTP request line and the identity is percent-encoded).
pub fn string_to_sign(req: &Signed<'_>, ts: u64, nonce: &[u8; 16], kid: KeyId) -> String {
    let Signed {
        method,
        target,
        identity,
        binding,
    } = req;
    format!(
        "{SCHEME}\n{method}\n{target}\n{ts}\n{}\n{kid}\n{identity}\n{binding}",
        hex::encode(nonce)
    )
}

/// Makes the `Authorization` header value for a request.
pub fn sign(key: &GatewayKey, req: &Signed<'_>, ts: u64, nonce: [u8; 16]) -> String {
    let msg = string_to_sign(req, ts, &nonce, key.id);
    let tag = hmac::sign(&key.hmac_key(), msg.as_bytes());
    format!(
        "{SCHEME} kid={}, ts={ts}, nonce={}, sig={}",
        key.id,
        hex::encode(nonce),
        hex::encode(tag.as_ref())
    )
}

/// Makes a fresh random nonce.
pub fn new_nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    // SystemRandom fails only if the OS has no entropy source at all, which
    // would leave no way to make any secret: nothing sensible to do but stop.
    ring::rand::SystemRandom::new()
        .fill(&mut n)
        .expect("the OS random source failed");
    n
}

/// What follows the scheme of an `Authorization` value, if its scheme is
/// `scheme`. Schemes are compared case-insensitively (RFC 9110, 11.1), so
/// `bearer KEY` is a bearer key as much as `Bearer KEY` is.
pub fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, rest) = value.trim().split_once([' ', '\t'])?;
    name.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

/// Parses an `Authorization` header value of our scheme.
pub fn parse_authorization(value: &str) -> Result<Proof, AuthError> {
    let rest = strip_scheme(value, SCHEME).ok_or(AuthError::Malformed)?;
    let (mut kid, mut ts, mut nonce, mut sig) = (None, None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(AuthError::Malformed)?;
        // A token or one quoted string (RFC 9110, 11.2), nothing between:
        // trimming every quote took `ts=1"` and `ts=""1` as `ts=1`.
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        if v.contains('"') {
            return Err(AuthError::Malformed);
        }
        let field = match k {
            "kid" => &mut kid,
            "ts" => &mut ts,
            "nonce" => &mut nonce,
            "sig" => &mut sig,
            // Unknown parameters are ignored so that later versions can add some.
            _ => continue,
        };
        // Given twice, which one counts would depend on who reads it.
        if field.replace(v).is_some() {
            return Err(AuthError::Malformed);
        }
    }
    let (kid, ts, nonce, sig) = (
        kid.and_then(KeyId::parse),
        // Digits as a client writes them: `parse` would take `+1` and `01`.
        ts.and_then(crate::proto::parse_decimal),
        nonce.and_then(decode_array),
        sig.and_then(decode_array),
    );
    Ok(Proof {
        kid: kid.ok_or(AuthError::Malformed)?,
        ts: ts.ok_or(AuthError::Malformed)?,
        nonce: nonce.ok_or(AuthError::Malformed)?,
        sig: sig.ok_or(AuthError::Malformed)?,
    })
}

/// The set of keys a gateway accepts, looked up by id, each with the set
/// of nonces its proofs have used.
#[derive(Clone, Default)]
pub struct KeyRing {
    by_id: HashMap<KeyId, (GatewayKey, Arc<KeyNonces>)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_id.keys()).finish()
    }
}

impl KeyRing {
    /// A ring holding `keys`, each with its nonce set from `nonces`
    /// (made for a key seen for the first time), so that every worker's
    /// ring, and the ring after a reload, refuse the same replays.
    pub fn new(keys: &[GatewayKey], nonces: &NonceCache, now: u64) -> Self {
        Self {
            by_id: nonces
                .sets_for(keys, now)
                .into_iter()
                .map(|(k, set)| (k.id, (k, set)))
                .collect(),
        }
    }

    /// Whether a key with this id is configured.
    pub fn contains(&self, kid: KeyId) -> bool {
        self.by_id.contains_key(&kid)
    }

    /// The key with this id, if it is configured (a cluster gateway
    /// relaying a control's connect proves the same key to the agent's).
    pub fn key_of(&self, kid: KeyId) -> Option<&GatewayKey> {
        self.by_id.get(&kid).map(|(k, _)| k)
    }

    /// The name of the key with this id, for what people see; `"?"` for
    /// one no longer configured (its agents are being dropped).
    pub fn name_of(&self, kid: KeyId) -> &str {
        self.by_id.get(&kid).map_or("?", |(k, _)| k.name())
    }

    /// Checks a bearer key (TLS only; the caller makes sure). The id finds
    /// the candidate and the secret is then compared in constant time.
    pub fn verify_bearer(&self, secret: &str) -> Result<KeyId, AuthError> {
        let kid = KeyId::of(secret);
        let (key, _) = self.by_id.get(&kid).ok_or(AuthError::UnknownKey)?;
        if bool::from(key.secret.as_bytes().ct_eq(secret.as_bytes())) {
            Ok(kid)
        } else {
            Err(AuthError::BadSignature)
        }
    }

    /// Checks a proof for a request (`req.binding` is what the gateway
    /// expects: its own boot id, or the connection's exporter) and, if it
    /// holds, remembers its nonce (within the key's `nonce_quota`) and
    /// returns the key id it proved.
    pub fn verify(
        &self,
        req: &Signed<'_>,
        authorization: Option<&str>,
        now: u64,
        nonce_quota: usize,
    ) -> Result<KeyId, AuthError> {
        let proof = parse_authorization(authorization.ok_or(AuthError::Missing)?)?;
        let (key, nonces) = self.by_id.get(&proof.kid).ok_or(AuthError::UnknownKey)?;
        if now.abs_diff(proof.ts) > REPLAY_WINDOW_SECS {
            return Err(AuthError::Expired);
        }
        let msg = string_to_sign(req, proof.ts, &proof.nonce, proof.kid);
        hmac::verify(&key.hmac_key(), msg.as_bytes(), &proof.sig).map_err(|_| AuthError::BadSignature)?;
        nonces.insert(proof.nonce, proof.ts, now, nonce_quota)?;
        Ok(proof.kid)
    }
}

/// `N` bytes from exactly `2 * N` hex digits (either case).
fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Seconds since the Unix epoch by the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quota no test here reaches.
    const QUOTA: usize = 100;

    const BOOT: Binding = Binding::Boot(Some(BootId([9; 16])));

    fn ring_of(keys: &[&str]) -> KeyRing {
        let keys: Vec<GatewayKey> = keys.iter().map(|k| GatewayKey::new(k)).collect();
        KeyRing::new(&keys, &NonceCache::default(), 1000)
    }

    fn req<'a>(method: &'a str, target: &'a str, identity: &'a str, binding: Binding) -> Signed<'a> {
        Signed {
            method,
            target,
            identity,
            binding,
        }
    }

    #[test]
    fn a_valid_proof_is_accepted_once() {
        let key = GatewayKey::new("Testing1");
        let ring = ring_of(&["Testing1", "Testing2"]);
        let r = req("GET", "/v1/clients", "ops", BOOT);
        let auth = sign(&key, &r, 1000, [7; 16]);
        assert_eq!(ring.verify(&r, Some(&auth), 1010, QUOTA), Ok(key.id()));
        assert_eq!(ring.verify(&r, Some(&auth), 1010, QUOTA), Err(AuthError::Replayed));
    }

    #[test]
    fn every_signed_field_matters() {
        let key = GatewayKey::new("Testing1");
        let ring = ring_of(&["Testing1"]);
        let auth = sign(&key, &req("GET", "/v1/connect/pc1", "ops", BOOT), 1000, [1; 16]);
        for r in [
            req("POST", "/v1/connect/pc1", "ops", BOOT),
            req("GET", "/v1/connect/pc2", "ops", BOOT),
            req("GET", "/v1/connect/pc1", "other", BOOT),
            req("GET", "/v1/connect/pc1", "ops", Binding::Boot(Some(BootId([8; 16])))),
            req("GET", "/v1/connect/pc1", "ops", Binding::Boot(None)),
            req("GET", "/v1/connect/pc1", "ops", Binding::Tls([9; 32])),
        ] {
            assert_eq!(
                ring.verify(&r, Some(&auth), 1000, QUOTA),
                Err(AuthError::BadSignature),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_tls_proof_holds_only_for_its_own_keying_material() {
        let key = GatewayKey::new("Testing1");
        let ring = ring_of(&["Testing1"]);
        let mine = req("GET", "/v1/clients", "ops", Binding::Tls([1; 32]));
        let other = req("GET", "/v1/clients", "ops", Binding::Tls([2; 32]));
        let auth = sign(&key, &mine, 1000, [4; 16]);
        assert_eq!(
            ring.verify(&other, Some(&auth), 1000, QUOTA),
            Err(AuthError::BadSignature)
        );
        assert_eq!(ring.verify(&mine, Some(&auth), 1000, QUOTA), Ok(key.id()));
    }

    #[test]
    fn the_string_signed_is_exactly_as_documented() {
        let r = req("GET", "/v1/agent/register", "pc%201", BOOT);
        let kid = KeyId([0xab; 8]);
        assert_eq!(
            string_to_sign(&r, 1700000000, &[0x01; 16], kid),
            "Ringway-HMAC-SHA256\nGET\n/v1/agent/register\n1700000000\n01010101010101010101010101010101\n\
             abababababababab\npc%201\nboot 09090909090909090909090909090909"
        );
        let r = req("GET", "/v1/clients", "ops", Binding::Tls([0xff; 32]));
        assert!(string_to_sign(&r, 1, &[0; 16], kid).ends_with(&format!("\nops\ntls {}", "ff".repeat(32))));
    }

    #[test]
    fn honest_clock_skew_is_accepted_up_to_the_window() {
        let key = GatewayKey::new("Testing1");
        let ring = ring_of(&["Testing1"]);
        for (i, skew) in [-(REPLAY_WINDOW_SECS as i64), -120, 120, REPLAY_WINDOW_SECS as i64]
            .into_iter()
            .enumerate()
        {
            let r = req("GET", "/", "x", BOOT);
            let auth = sign(&key, &r, 10_000u64.saturating_add_signed(skew), [i as u8; 16]);
            assert_eq!(ring.verify(&r, Some(&auth), 10_000, QUOTA), Ok(key.id()), "skew {skew}");
        }
    }

    #[test]
    fn unknown_key_expired_and_malformed_are_refused() {
        let ring = ring_of(&["Testing1"]);
        let r = req("GET", "/", "x", BOOT);
        let other = GatewayKey::new("Testing2");
        let auth = sign(&other, &r, 1000, [2; 16]);
        assert_eq!(ring.verify(&r, Some(&auth), 1000, QUOTA), Err(AuthError::UnknownKey));
        let key = GatewayKey::new("Testing1");
        let auth = sign(&key, &r, 1000, [3; 16]);
        assert_eq!(
            ring.verify(&r, Some(&auth), 1000 + REPLAY_WINDOW_SECS + 1, QUOTA),
            Err(AuthError::Expired)
        );
        assert_eq!(
            ring.verify(&r, Some("Bearer Testing1"), 1000, QUOTA),
            Err(AuthError::Malformed)
        );
        assert_eq!(ring.verify(&r, None, 1000, QUOTA), Err(AuthError::Missing));
    }

    #[test]
    fn schemes_match_case_insensitively() {
        assert_eq!(strip_scheme("Bearer abc", "Bearer"), Some("abc"));
        assert_eq!(strip_scheme("bEaReR   abc ", "Bearer"), Some("abc"));
        assert_eq!(strip_scheme("Bearerabc", "Bearer"), None);
        assert_eq!(strip_scheme("Basic abc", "Bearer"), None);
        let key = GatewayKey::new("Testing1");
        let r = req("GET", "/", "x", BOOT);
        let auth = sign(&key, &r, 1000, [5; 16]).replacen(SCHEME, "ringway-hmac-sha256", 1);
        assert_eq!(
            ring_of(&["Testing1"]).verify(&r, Some(&auth), 1000, QUOTA),
            Ok(key.id())
        );
    }

    fn proof_with(ts: &str) -> String {
        format!(
            "{SCHEME} kid=0011223344556677, ts={ts}, nonce={}, sig={}",
            "ab".repeat(16),
            "cd".repeat(32)
        )
    }

    #[test]
    fn a_proof_parses_bare_or_quoted() {
        for ts in ["1764600000", "\"1764600000\""] {
            assert_eq!(
                parse_authorization(&proof_with(ts)).map(|p| p.ts),
                Ok(1764600000),
                "{ts}"
            );
        }
    }

    /// fuzz/corpus/authorization/crash-unbalanced-quote: `ts=21764600000"`
    /// was read as `ts=21764600000`.
    #[test]
    fn an_unbalanced_quote_around_ts_is_refused() {
        for ts in ["21764600000\"", "\"1", "\"\"1\"\"", "1\"2", "\""] {
            assert_eq!(parse_authorization(&proof_with(ts)), Err(AuthError::Malformed), "{ts}");
        }
    }

    #[test]
    fn ts_with_a_plus_sign_or_leading_zero_is_refused() {
        for ts in ["+1764600000", "01764600000", "-1", "1e9", ""] {
            assert_eq!(parse_authorization(&proof_with(ts)), Err(AuthError::Malformed), "{ts}");
        }
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        let twice = format!("{}, ts=1764600001", proof_with("1764600000"));
        assert_eq!(parse_authorization(&twice), Err(AuthError::Malformed));
        let unknown_twice = format!("{}, v=1, v=2", proof_with("1764600000"));
        assert!(parse_authorization(&unknown_twice).is_ok());
    }

    #[test]
    fn the_scheme_without_a_space_after_it_is_refused() {
        let glued = proof_with("1764600000").replacen(' ', "", 1);
        assert!(glued.starts_with("Ringway-HMAC-SHA256kid="));
        assert_eq!(parse_authorization(&glued), Err(AuthError::Malformed));
        assert_eq!(
            parse_authorization(&proof_with("1").replacen(' ', ",", 1)),
            Err(AuthError::Malformed)
        );
        assert!(parse_authorization(&proof_with("1").replacen(' ', "\t", 1)).is_ok());
    }

    #[test]
    fn boot_ids_round_trip_as_32_hex_digits() {
        let id = BootId::random();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(BootId::parse(&id.to_string()), Some(id));
        assert_eq!(BootId::parse("abc"), None);
        assert_ne!(BootId::random(), id);
    }

    #[test]
    fn key_debug_hides_the_secret() {
        let key = GatewayKey::named("acme", "super-secret-key");
        let shown = format!("{key:?}");
        assert_eq!(shown, "GatewayKey(\"acme\", secret hidden)");
        assert!(
            !shown.contains(&key.id().to_string()),
            "the wire id is derived from the key"
        );
    }

    #[test]
    fn key_ids_parse_from_exactly_16_hex_digits() {
        let id = KeyId::of("Testing1");
        assert_eq!(KeyId::parse(&id.to_string()), Some(id));
        assert_eq!(KeyId::parse(&id.to_string().to_uppercase()), Some(id));
        assert_eq!(KeyId::parse("abc"), None);
        assert_eq!(KeyId::parse("zz00000000000000"), None);
        assert_eq!(KeyId::parse("000000000000000000"), None);
    }
}
