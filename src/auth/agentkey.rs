//! Agent identities: an Ed25519 key pair per agent machine, so that an
//! agent name cannot be taken over by another holder of the gateway key.
//!
//! A registration carries the agent's public key (`Ringway-Agent-Key`)
//! and an Ed25519 signature (`Ringway-Agent-Sig`) over
//! [`string_to_sign`]: a fixed context line, the public key, and the very
//! string the key proof signs (method, target, time, nonce, key id,
//! identity and binding: see docs/PROTOCOL.md). The nonce is accepted once
//! and the binding is this TLS connection or this gateway run, so a
//! captured key and signature cannot be replayed from another machine or
//! connection. No I/O: parsing and checking only.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Bytes of an Ed25519 public key.
pub const AGENT_KEY_LEN: usize = 32;

/// Bytes of an Ed25519 signature.
pub const AGENT_SIG_LEN: usize = 64;

/// The first line of what an agent key signs, so that a signature made
/// for anything else (another protocol using the same key) never counts.
pub const SIG_CONTEXT: &str = "ringway-agent-key-v1";

/// An agent's public key, as the gateway pins it to the agent's name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentPublicKey(pub [u8; AGENT_KEY_LEN]);

impl AgentPublicKey {
    /// Parses the base64url form (no padding, exactly 32 bytes).
    pub fn parse(text: &str) -> Result<AgentPublicKey, AgentKeyError> {
        decode_exact(text).map(AgentPublicKey).ok_or(AgentKeyError::BadKey)
    }
}

impl fmt::Display for AgentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64URL_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for AgentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentPublicKey({self})")
    }
}

/// Why a registration's agent key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKeyError {
    /// One of the two headers without the other.
    Incomplete,
    /// `Ringway-Agent-Key` is not base64url of 32 bytes.
    BadKey,
    /// `Ringway-Agent-Sig` is not base64url of 64 bytes.
    BadSig,
    /// The headers came with a bearer key, which has no signed string to
    /// bind the signature to.
    NeedsProof,
    /// The signature does not verify under the key for this request: made
    /// for another request, connection or gateway run, or by another key.
    Mismatch,
}

impl AgentKeyError {
    /// The HTTP status: a malformed request is a 400, a signature that
    /// does not hold a 403.
    pub fn status(self) -> u16 {
        match self {
            AgentKeyError::Mismatch => 403,
            _ => 400,
        }
    }

    /// The one-line reason the agent is told.
    pub fn reason(self) -> &'static str {
        match self {
            AgentKeyError::Incomplete => "Ringway-Agent-Key and Ringway-Agent-Sig go together",
            AgentKeyError::BadKey => "Ringway-Agent-Key must be base64url (no padding) of 32 bytes",
            AgentKeyError::BadSig => "Ringway-Agent-Sig must be base64url (no padding) of 64 bytes",
            AgentKeyError::NeedsProof => "an agent key needs a Ringway-HMAC-SHA256 key proof, not a bearer key",
            AgentKeyError::Mismatch => "the agent key signature does not match this request",
        }
    }

    /// A short label for logs.
    pub fn label(self) -> &'static str {
        match self {
            AgentKeyError::Incomplete => "incomplete",
            AgentKeyError::BadKey => "bad_key",
            AgentKeyError::BadSig => "bad_sig",
            AgentKeyError::NeedsProof => "needs_proof",
            AgentKeyError::Mismatch => "mismatch",
        }
    }
}

/// Exactly what an agent key signs: [`SIG_CONTEXT`], the public key in
/// base64url, and `proof_string` (the key proof's
/// [`string_to_sign`](crate::auth::string_to_sign)), joined by `\n`.
pub fn string_to_sign(key: &AgentPublicKey, proof_string: &str) -> String {
    format!("{SIG_CONTEXT}\n{key}\n{proof_string}")
}

/// The `Ringway-Agent-Key` and `Ringway-Agent-Sig` values for a request
/// whose key proof signs `proof_string`.
pub fn sign(pair: &Ed25519KeyPair, proof_string: &str) -> (String, String) {
    let mut public = [0u8; AGENT_KEY_LEN];
    // An Ed25519 public key is 32 bytes by definition.
    public.copy_from_slice(pair.public_key().as_ref());
    let key = AgentPublicKey(public);
    let sig = pair.sign(string_to_sign(&key, proof_string).as_bytes());
    (key.to_string(), BASE64URL_NOPAD.encode(sig.as_ref()))
}

/// Checks the two header values of a registration whose key proof signs
/// `proof_string` (`None` for a bearer key). Neither header: `Ok(None)`,
/// an agent that has no key (an old version).
pub fn check(
    key: Option<&str>,
    sig: Option<&str>,
    proof_string: Option<&str>,
) -> Result<Option<AgentPublicKey>, AgentKeyError> {
    let (key, sig) = match (key, sig) {
        (None, None) => return Ok(None),
        (Some(k), Some(s)) => (k, s),
        _ => return Err(AgentKeyError::Incomplete),
    };
    let key = AgentPublicKey::parse(key.trim())?;
    let sig: [u8; AGENT_SIG_LEN] = decode_exact(sig.trim()).ok_or(AgentKeyError::BadSig)?;
    let proof_string = proof_string.ok_or(AgentKeyError::NeedsProof)?;
    UnparsedPublicKey::new(&ED25519, &key.0)
        .verify(string_to_sign(&key, proof_string).as_bytes(), &sig)
        .map_err(|_| AgentKeyError::Mismatch)?;
    Ok(Some(key))
}

/// Decodes base64url without padding into exactly `N` bytes. The decoder
/// is strict (canonical trailing bits), so every value has one form.
fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    // A longer text cannot be N bytes; refuse it before decoding anything.
    if text.len() != BASE64URL_NOPAD.encode_len(N) {
        return None;
    }
    let bytes = BASE64URL_NOPAD.decode(text.as_bytes()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("random");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("just made")
    }

    #[test]
    fn a_signature_verifies_for_its_own_string_only() {
        let p = pair();
        let (key, sig) = sign(&p, "S for this request");
        let got = check(Some(&key), Some(&sig), Some("S for this request")).expect("valid");
        assert_eq!(got.map(|k| k.to_string()), Some(key.clone()));
        assert_eq!(
            check(Some(&key), Some(&sig), Some("S for another binding")),
            Err(AgentKeyError::Mismatch)
        );
        // Another machine's key with this signature: refused too.
        let (other, _) = sign(&pair(), "S for this request");
        assert_eq!(
            check(Some(&other), Some(&sig), Some("S for this request")),
            Err(AgentKeyError::Mismatch)
        );
    }

    #[test]
    fn no_headers_is_an_agent_without_a_key() {
        assert_eq!(check(None, None, Some("S")), Ok(None));
        assert_eq!(check(None, None, None), Ok(None));
    }

    #[test]
    fn one_header_without_the_other_is_refused() {
        let (key, sig) = sign(&pair(), "S");
        assert_eq!(check(Some(&key), None, Some("S")), Err(AgentKeyError::Incomplete));
        assert_eq!(check(None, Some(&sig), Some("S")), Err(AgentKeyError::Incomplete));
    }

    #[test]
    fn a_key_or_signature_of_the_wrong_length_is_refused() {
        let (key, sig) = sign(&pair(), "S");
        let short_key = BASE64URL_NOPAD.encode(&[1u8; 31]);
        let long_key = BASE64URL_NOPAD.encode(&[1u8; 33]);
        for bad in [short_key.as_str(), long_key.as_str(), "", "!!!!", &format!("{key}=")] {
            assert_eq!(
                check(Some(bad), Some(&sig), Some("S")),
                Err(AgentKeyError::BadKey),
                "{bad:?}"
            );
        }
        let short_sig = BASE64URL_NOPAD.encode(&[1u8; 63]);
        let padded = data_encoding::BASE64URL.encode(&[1u8; 64]);
        for bad in [short_sig.as_str(), padded.as_str(), &"A".repeat(4096)] {
            assert_eq!(
                check(Some(&key), Some(bad), Some("S")),
                Err(AgentKeyError::BadSig),
                "{bad:?}"
            );
        }
        assert_eq!(AgentKeyError::BadKey.status(), 400);
        assert_eq!(AgentKeyError::Mismatch.status(), 403);
    }

    #[test]
    fn a_non_canonical_key_text_is_refused() {
        // 32 bytes take 43 characters; the last carries 4 unused bits,
        // which must be zero.
        let key = BASE64URL_NOPAD.encode(&[0u8; 32]);
        let mut bent = key.clone();
        bent.pop();
        bent.push('B');
        assert_eq!(AgentPublicKey::parse(&key).map(|k| k.0), Ok([0u8; 32]));
        assert_eq!(AgentPublicKey::parse(&bent), Err(AgentKeyError::BadKey));
    }

    #[test]
    fn a_bearer_key_cannot_carry_an_agent_key() {
        let (key, sig) = sign(&pair(), "S");
        assert_eq!(check(Some(&key), Some(&sig), None), Err(AgentKeyError::NeedsProof));
    }
}
