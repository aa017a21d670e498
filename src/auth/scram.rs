//! Operator passwords: a SCRAM-SHA-256 exchange (RFC 5802, RFC 7677)
//! whose salted hash is argon2id instead of PBKDF2. We call the mechanism
//! `SCRAM-ARGON2ID-SHA-256`; it is shaped like SCRAM but is not
//! interoperable with it (the server-first message carries argon2's
//! parameters instead of an iteration count).
//!
//! Why this shape:
//! - the password never crosses the wire, not even over plain HTTP: the
//!   client proves it knows `ClientKey` with a proof bound to both sides'
//!   nonces, so a captured exchange cannot be replayed;
//! - the gateway stores a [`Verifier`] (salt, argon2 parameters,
//!   `StoredKey = SHA-256(ClientKey)`, `ServerKey`), from which no proof
//!   can be made: `ClientKey` is a SHA-256 preimage of `StoredKey`;
//! - the gateway only computes HMAC-SHA-256 and SHA-256, a few
//!   microseconds; the client pays for argon2. So a flood of sign-ins
//!   cannot burn a worker's event loop, and the argon2 cost protects a
//!   leaked verifier against offline guessing.
//!
//! Both sides are pure state machines. Randomness (nonces) comes in as
//! arguments, the channel binding is what the caller's connection gives,
//! and every message is bounded ([`MAX_MESSAGE_BYTES`]), parsed without
//! panicking, and refused with a typed [`ScramError`].
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt>,m=<KiB>,t=<passes>,p=<lanes>
//! client-final  c=<base64(gs2 header + binding data)>,r=<nonce>,p=<base64(ClientProof)>
//! server-final  v=<base64(ServerSignature)>     or  e=<error>
//! ```
//!
//! Unknown users and locked operators must look exactly like wrong
//! passwords: the caller answers a name it does not know with
//! [`MockVerifiers`]' verifier for that name (a stable salt, a `StoredKey`
//! no password gives), and a locked operator with its real verifier,
//! throwing away a success. Both then take the same path and time.

use std::fmt;

use data_encoding::{BASE64, BASE64_NOPAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use subtle::ConstantTimeEq;

/// The mechanism's name, for the login flow to announce.
pub const MECHANISM: &str = "SCRAM-ARGON2ID-SHA-256";

/// Longest message either side accepts. The longest valid one is a
/// client-final over TLS, about 170 bytes; the rest is slack.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Longest operator name: the protocol's name bound.
pub const MAX_USER_CHARS: usize = crate::proto::MAX_NAME_CHARS;

/// Shortest nonce part each side may contribute, in characters. Our own
/// nonces are 24 base64 characters (144 bits); 16 printable characters is
/// still over 100 bits.
pub const MIN_NONCE_CHARS: usize = 16;

/// Longest nonce part each side may contribute: bounds the messages that
/// carry it and the memory a pending exchange holds.
pub const MAX_NONCE_CHARS: usize = 64;

/// Random bytes in the nonces [`random_nonce`] makes (24 base64 characters).
pub const NONCE_BYTES: usize = 18;

/// Salt bytes `ringway operator add` draws: argon2's recommended 16.
pub const SALT_BYTES: usize = 16;

/// Shortest salt accepted: argon2's recommended length.
pub const MIN_SALT_BYTES: usize = 16;

/// Longest salt accepted: plenty; bounds the verifier and the message.
pub const MAX_SALT_BYTES: usize = 64;

/// Longest password a client hashes. A typed or generated password is
/// far shorter; the bound only stops a runaway file or variable.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Longest verifier text accepted, checked before any decoding.
pub const MAX_VERIFIER_CHARS: usize = 256;

/// The TLS exporter label for channel binding (RFC 9266), 32 bytes, no
/// context: what the login flow exports over TLS for [`ChannelBinding`].
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// Length of the keys, proofs and signatures: SHA-256's output.
const KEY_BYTES: usize = 32;

/// The verifier text's first field.
const VERIFIER_PREFIX: &str = "$scram-argon2id$v=19$";

/// Domain separation for [`Verifier::possession_key`].
const POSSESSION_LABEL: &[u8] = b"ringway ticket possession v1\0";

/// argon2id's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB (argon2's `m`).
    pub m_kib: u32,
    /// Passes over the memory (`t`).
    pub t: u32,
    /// Lanes (`p`).
    pub p: u32,
}

impl Argon2Params {
    /// What `ringway operator add` uses: 64 MiB, 3 passes, 1 lane (RFC
    /// 9106's second recommended option, with one lane since the client's
    /// argon2 runs its lanes one after another anyway). About a quarter
    /// second on a laptop, once per sign-in.
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_kib: 65_536,
        t: 3,
        p: 1,
    };
}

/// The argon2 parameters a side accepts from the other (a client from a
/// gateway it may not trust yet, a gateway from its config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamPolicy {
    /// Each parameter's floor.
    pub min: Argon2Params,
    /// Each parameter's ceiling.
    pub max: Argon2Params,
}

impl ParamPolicy {
    /// The floor is OWASP's smallest argon2id setting (19 MiB, 2 passes):
    /// a fake gateway offering weaker parameters would get a proof cheap
    /// to guess the password from offline, and a leaked verifier with them
    /// would be cheap to attack. The ceiling (1 GiB, 10 passes, 16 lanes)
    /// keeps a hostile gateway from making a client hash for minutes.
    pub const STRONG: ParamPolicy = ParamPolicy {
        min: Argon2Params {
            m_kib: 19_456,
            t: 2,
            p: 1,
        },
        max: Argon2Params {
            m_kib: 1 << 20,
            t: 10,
            p: 16,
        },
    };

    /// Whether `params` lies within the policy (and argon2's own rule of
    /// at least 8 KiB per lane).
    pub fn allows(&self, params: &Argon2Params) -> bool {
        let within = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        within(params.m_kib, self.min.m_kib, self.max.m_kib)
            && within(params.t, self.min.t, self.max.t)
            && within(params.p, self.min.p, self.max.p)
            && u64::from(params.m_kib) >= 8 * u64::from(params.p)
    }
}

/// What ties an exchange to the connection it runs on, so a proof made on
/// one connection cannot be relayed onto another by a man in the middle.
///
/// Over TLS the login flow exports [`TLS_EXPORTER_LABEL`] (RFC 9266) from
/// the connection and both sides bind to it. Over plain HTTP there is
/// nothing to bind to; the boot id the gateway sends (`Ringway-Boot`) is
/// not needed here, since the server nonce already makes every exchange
/// fresh and no exchange survives a restart.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    /// No binding: gs2 header `n,,`.
    None,
    /// The TLS exporter's 32 bytes: gs2 header `p=tls-exporter,,`.
    TlsExporter([u8; 32]),
}

impl ChannelBinding {
    fn gs2_header(&self) -> &'static str {
        match self {
            ChannelBinding::None => "n,,",
            ChannelBinding::TlsExporter(_) => "p=tls-exporter,,",
        }
    }

    /// `gs2 header + binding data`, what `c=` carries in base64.
    fn input(&self, gs2_header: &str) -> Vec<u8> {
        let mut input = gs2_header.as_bytes().to_vec();
        if let ChannelBinding::TlsExporter(data) = self {
            input.extend_from_slice(data);
        }
        input
    }
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelBinding::None => "ChannelBinding::None",
            ChannelBinding::TlsExporter(_) => "ChannelBinding::TlsExporter(..)",
        })
    }
}

/// Which part of a message was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The message as a whole: a byte outside printable ASCII, or the
    /// wrong attributes or order.
    Message,
    /// The gs2 header (binding flag and authorisation identity).
    Gs2Header,
    /// A nonce: its length or characters.
    Nonce,
    /// The salt: not base64, or its length.
    Salt,
    /// argon2's parameters: not decimal numbers.
    Params,
    /// The channel binding field: not base64.
    Binding,
    /// The client proof: not base64 of 32 bytes.
    Proof,
    /// The server signature or error: not base64 of 32 bytes, or an error
    /// value that is not a short token.
    ServerFinal,
}

/// Why an exchange failed. Callers branch on it (which answer, which log
/// line); the peer hears [`ScramError::wire_value`] at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message longer than [`MAX_MESSAGE_BYTES`].
    TooLong,
    /// A message that does not follow the grammar.
    Malformed(Part),
    /// The user name breaks the operator-name rule ([`valid_user`]).
    BadUser,
    /// The binding flag or data do not match this connection (including a
    /// client that asks for none over TLS, or names a binding type we do
    /// not know).
    ChannelBinding,
    /// A nonce that is not this exchange's.
    NonceMismatch,
    /// The server's argon2 parameters lie outside the client's policy.
    Params,
    /// Server: the proof is wrong (wrong password, unknown user, a stolen
    /// verifier's attempt).
    InvalidProof,
    /// Client: the server's signature is wrong; it does not hold this
    /// operator's verifier, so it is not the gateway it claims to be.
    BadServerSignature,
    /// Client: the server answered `e=` with this value.
    Refused(String),
    /// argon2 refused its inputs (a password past [`MAX_PASSWORD_BYTES`],
    /// or parameters that slipped past every check).
    Argon2(String),
}

impl ScramError {
    /// The RFC 5802 `server-error-value` a gateway may send for this
    /// failure. Everything that could tell a prober more than "no" (wrong
    /// password, unknown user, locked) is `invalid-proof`.
    pub fn wire_value(&self) -> &'static str {
        match self {
            ScramError::TooLong | ScramError::Malformed(_) => "invalid-encoding",
            ScramError::BadUser => "invalid-username-encoding",
            ScramError::ChannelBinding => "channel-bindings-dont-match",
            ScramError::NonceMismatch | ScramError::InvalidProof => "invalid-proof",
            _ => "other-error",
        }
    }
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::TooLong => write!(f, "message longer than {MAX_MESSAGE_BYTES} bytes"),
            ScramError::Malformed(part) => write!(f, "malformed message ({part:?})"),
            ScramError::BadUser => f.write_str("the user name is not a valid operator name"),
            ScramError::ChannelBinding => f.write_str("the channel binding does not match this connection"),
            ScramError::NonceMismatch => f.write_str("the nonce is not this exchange's"),
            ScramError::Params => f.write_str("the gateway's argon2 parameters are outside what this client accepts"),
            ScramError::InvalidProof => f.write_str("invalid proof"),
            ScramError::BadServerSignature => {
                f.write_str("the gateway's signature is wrong: it does not hold this operator's verifier")
            }
            ScramError::Refused(value) => write!(f, "the gateway refused the sign-in ({value})"),
            ScramError::Argon2(why) => write!(f, "argon2: {why}"),
        }
    }
}

impl std::error::Error for ScramError {}

/// Checks an operator name: 1 to [`MAX_USER_CHARS`] of `A-Z a-z 0-9 . _ @
/// -`, starting with a letter or digit. Stricter than agent names: it
/// needs no escaping in SCRAM (no `,` or `=`), headers, URIs or TOML, and
/// cannot be taken for a command-line option.
pub fn valid_user(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-');
    name.len() <= MAX_USER_CHARS
        && name.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && name.bytes().all(ok)
}

/// Fresh random bytes for a nonce, from the OS.
pub fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    // SystemRandom fails only if the OS has no entropy source at all.
    SystemRandom::new().fill(&mut n).expect("the OS random source failed");
    n
}

/// argon2id of the password: SCRAM's `SaltedPassword`. The expensive
/// step (about a quarter second at [`Argon2Params::DEFAULT`]): clients
/// call it off any event loop; the gateway never calls it.
pub fn salted_password(password: &[u8], salt: &[u8], params: &Argon2Params) -> Result<[u8; 32], ScramError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ScramError::Argon2(format!(
            "password longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let argon_params = argon2::Params::new(params.m_kib, params.t, params.p, Some(KEY_BYTES))
        .map_err(|e| ScramError::Argon2(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = [0u8; KEY_BYTES];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| ScramError::Argon2(e.to_string()))?;
    Ok(out)
}

/// `HMAC-SHA-256(key, msg)`.
fn hmac256(key: &[u8], msg: &[u8]) -> [u8; KEY_BYTES] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn xor(a: &[u8; KEY_BYTES], b: &[u8; KEY_BYTES]) -> [u8; KEY_BYTES] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// RFC 5802's key schedule from `SaltedPassword`: (ClientKey, StoredKey,
/// ServerKey).
fn keys(salted: &[u8; KEY_BYTES]) -> ([u8; KEY_BYTES], [u8; KEY_BYTES], [u8; KEY_BYTES]) {
    let client_key = hmac256(salted, b"Client Key");
    (client_key, sha256(&client_key), hmac256(salted, b"Server Key"))
}

/// What the gateway stores for an operator's password. It signs the
/// gateway's side of an exchange and checks the client's, but cannot make
/// a client proof. `Debug` hides the keys; the text form is
/// `$scram-argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<StoredKey>$<ServerKey>`,
/// base64 without padding, as [`Verifier::to_text`] writes it.
#[derive(Clone)]
pub struct Verifier {
    salt: Vec<u8>,
    params: Argon2Params,
    stored_key: [u8; KEY_BYTES],
    server_key: [u8; KEY_BYTES],
}

/// Why a verifier's text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierError {
    /// Longer than [`MAX_VERIFIER_CHARS`].
    TooLong,
    /// Does not start `$scram-argon2id$v=19$` or has the wrong fields.
    Format,
    /// The `m=,t=,p=` field is not three decimal numbers in that order.
    ParamsFormat,
    /// The parameters lie outside [`ParamPolicy::STRONG`].
    Weak,
    /// The salt is not base64 of [`MIN_SALT_BYTES`] to [`MAX_SALT_BYTES`].
    Salt,
    /// A key is not base64 of 32 bytes.
    Key,
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = ParamPolicy::STRONG;
        match self {
            VerifierError::TooLong => write!(f, "is longer than {MAX_VERIFIER_CHARS} characters"),
            VerifierError::Format => f.write_str(
                "is not $scram-argon2id$v=19$m=...,t=...,p=...$SALT$STOREDKEY$SERVERKEY (make one with `ringway operator add`)",
            ),
            VerifierError::ParamsFormat => f.write_str("has argon2 parameters that are not m=<KiB>,t=<passes>,p=<lanes>"),
            VerifierError::Weak => write!(
                f,
                "has argon2 parameters outside m={}..{}, t={}..{}, p={}..{}",
                p.min.m_kib, p.max.m_kib, p.min.t, p.max.t, p.min.p, p.max.p
            ),
            VerifierError::Salt => write!(
                f,
                "has a salt that is not base64 of {MIN_SALT_BYTES} to {MAX_SALT_BYTES} bytes"
            ),
            VerifierError::Key => f.write_str("has a key that is not base64 of 32 bytes"),
        }
    }
}

impl Verifier {
    /// The verifier of `password` with this salt and these parameters
    /// (runs argon2: expensive).
    pub fn derive(password: &[u8], salt: &[u8], params: &Argon2Params) -> Result<Verifier, ScramError> {
        let salted = salted_password(password, salt, params)?;
        let (_, stored_key, server_key) = keys(&salted);
        Ok(Verifier {
            salt: salt.to_vec(),
            params: *params,
            stored_key,
            server_key,
        })
    }

    /// [`Verifier::derive`] with a fresh random salt of [`SALT_BYTES`].
    pub fn generate(password: &[u8], params: &Argon2Params) -> Result<Verifier, ScramError> {
        let mut salt = [0u8; SALT_BYTES];
        // SystemRandom fails only if the OS has no entropy source at all.
        SystemRandom::new()
            .fill(&mut salt)
            .expect("the OS random source failed");
        Verifier::derive(password, &salt, params)
    }

    /// Parses the text form strictly: every field present, in order,
    /// canonical base64 and decimal, parameters within
    /// [`ParamPolicy::STRONG`].
    pub fn parse(text: &str) -> Result<Verifier, VerifierError> {
        if text.len() > MAX_VERIFIER_CHARS {
            return Err(VerifierError::TooLong);
        }
        let rest = text.strip_prefix(VERIFIER_PREFIX).ok_or(VerifierError::Format)?;
        let fields: Vec<&str> = rest.split('$').collect();
        let [params, salt, stored, server] = fields[..] else {
            return Err(VerifierError::Format);
        };
        let params = match params.split(',').collect::<Vec<_>>()[..] {
            [m, t, p] => Argon2Params {
                m_kib: number_after(m, "m=").ok_or(VerifierError::ParamsFormat)?,
                t: number_after(t, "t=").ok_or(VerifierError::ParamsFormat)?,
                p: number_after(p, "p=").ok_or(VerifierError::ParamsFormat)?,
            },
            _ => return Err(VerifierError::ParamsFormat),
        };
        if !ParamPolicy::STRONG.allows(&params) {
            return Err(VerifierError::Weak);
        }
        let salt = BASE64_NOPAD
            .decode(salt.as_bytes())
            .ok()
            .filter(|s| (MIN_SALT_BYTES..=MAX_SALT_BYTES).contains(&s.len()))
            .ok_or(VerifierError::Salt)?;
        let key = |text: &str| {
            BASE64_NOPAD
                .decode(text.as_bytes())
                .ok()
                .and_then(|k| <[u8; KEY_BYTES]>::try_from(k).ok())
                .ok_or(VerifierError::Key)
        };
        Ok(Verifier {
            salt,
            params,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// The text form, for a config file. It is secret: a leaked verifier
    /// can be attacked offline at argon2's cost per guess, and its
    /// ServerKey can impersonate the gateway to this operator.
    pub fn to_text(&self) -> String {
        let p = &self.params;
        format!(
            "{VERIFIER_PREFIX}m={},t={},p={}${}${}${}",
            p.m_kib,
            p.t,
            p.p,
            BASE64_NOPAD.encode(&self.salt),
            BASE64_NOPAD.encode(&self.stored_key),
            BASE64_NOPAD.encode(&self.server_key)
        )
    }

    /// The salt, sent in server-first.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// argon2's parameters, sent in server-first.
    pub fn params(&self) -> Argon2Params {
        self.params
    }

    /// The key that proves a request holds `ticket` (the ticket's text):
    /// `HMAC-SHA-256(StoredKey, label || ticket)`. The client that signed
    /// in computes the same ([`SignedIn::possession_key`]); someone who
    /// only copied the ticket off the wire cannot, since StoredKey never
    /// crosses it. So a ticket is no bearer token, even on plain HTTP.
    pub fn possession_key(&self, ticket: &str) -> [u8; 32] {
        possession_key(&self.stored_key, ticket)
    }
}

fn possession_key(stored_key: &[u8; KEY_BYTES], ticket: &str) -> [u8; KEY_BYTES] {
    hmac256(stored_key, &[POSSESSION_LABEL, ticket.as_bytes()].concat())
}

impl PartialEq for Verifier {
    fn eq(&self, other: &Verifier) -> bool {
        self.params == other.params
            && self.salt == other.salt
            && bool::from(self.stored_key.ct_eq(&other.stored_key) & self.server_key.ct_eq(&other.server_key))
    }
}

impl Eq for Verifier {}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?}, keys hidden)", self.params)
    }
}

/// `text` after `prefix`, as a canonical decimal `u32` (no sign, no
/// leading zero, at most ten digits).
fn number_after(text: &str, prefix: &str) -> Option<u32> {
    let digits = text.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// Verifiers for names no operator has, so that an unknown name gets the
/// same kind of answer, with a salt as stable as a real one's, as a known
/// name with a wrong password. Keyed by a gateway secret that must
/// outlive restarts (the ticket key), or the salt of an unknown name
/// would change across a restart while a real one's stays.
pub struct MockVerifiers {
    key: hmac::Key,
}

impl MockVerifiers {
    /// Mock verifiers keyed by `secret`.
    pub fn new(secret: &[u8]) -> MockVerifiers {
        MockVerifiers {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The mock verifier for `user`: [`Argon2Params::DEFAULT`], a salt
    /// and keys derived from the secret and the name. No password gives
    /// its StoredKey (that would be a SHA-256 preimage).
    pub fn verifier_for(&self, user: &str) -> Verifier {
        let derive = |label: &str| {
            let mut ctx = hmac::Context::with_key(&self.key);
            ctx.update(b"ringway scram mock v1\0");
            ctx.update(label.as_bytes());
            ctx.update(b"\0");
            ctx.update(user.as_bytes());
            let mut out = [0u8; KEY_BYTES];
            out.copy_from_slice(ctx.sign().as_ref());
            out
        };
        Verifier {
            salt: derive("salt")[..SALT_BYTES].to_vec(),
            params: Argon2Params::DEFAULT,
            stored_key: derive("stored"),
            server_key: derive("server"),
        }
    }
}

impl fmt::Debug for MockVerifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MockVerifiers(key hidden)")
    }
}

/// The checks every incoming message gets first: its length, and that it
/// is printable ASCII (which also makes every later slice a char boundary).
fn check_message(msg: &str) -> Result<(), ScramError> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(ScramError::TooLong);
    }
    if !msg.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ScramError::Malformed(Part::Message));
    }
    Ok(())
}

/// The value of attribute `name` in `field` (`name=value`).
fn attr<'a>(field: &'a str, name: &str, part: Part) -> Result<&'a str, ScramError> {
    field
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(ScramError::Malformed(part))
}

/// Whether `nonce` is a nonce part: printable ASCII but `,` (the message
/// check already refused the rest), of a bounded length.
fn nonce_ok(nonce: &str) -> bool {
    (MIN_NONCE_CHARS..=MAX_NONCE_CHARS).contains(&nonce.len()) && !nonce.contains([',', ' '])
}

/// Decodes canonical padded base64 of exactly 32 bytes.
fn key_b64(text: &str, part: Part) -> Result<[u8; KEY_BYTES], ScramError> {
    BASE64
        .decode(text.as_bytes())
        .ok()
        .and_then(|k| <[u8; KEY_BYTES]>::try_from(k).ok())
        .ok_or(ScramError::Malformed(part))
}

/// The client's gs2 binding flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    /// `n`: the client does not bind.
    No,
    /// `y`: the client could bind but thinks the server cannot.
    Could,
    /// `p=tls-exporter`.
    TlsExporter,
}

/// A client-first message, parsed by the gateway, so the caller can look
/// up [`ClientFirst::user`]'s verifier before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    flag: Flag,
    gs2_header: String,
    bare: String,
    user: String,
    nonce: String,
}

impl ClientFirst {
    /// Parses `n,,n=<user>,r=<nonce>` (or `y,,` / `p=tls-exporter,,`). An
    /// authorisation identity (`a=`) and extensions are refused.
    pub fn parse(msg: &str) -> Result<ClientFirst, ScramError> {
        check_message(msg)?;
        let mut parts = msg.splitn(3, ',');
        let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Err(ScramError::Malformed(Part::Gs2Header)),
        };
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(Part::Gs2Header));
        }
        let flag = match flag {
            "n" => Flag::No,
            "y" => Flag::Could,
            "p=tls-exporter" => Flag::TlsExporter,
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed(Part::Gs2Header)),
        };
        let [user, nonce] = bare.split(',').collect::<Vec<_>>()[..] else {
            return Err(ScramError::Malformed(Part::Message));
        };
        let user = attr(user, "n", Part::Message)?;
        let nonce = attr(nonce, "r", Part::Message)?;
        if !valid_user(user) {
            return Err(ScramError::BadUser);
        }
        if !nonce_ok(nonce) {
            return Err(ScramError::Malformed(Part::Nonce));
        }
        Ok(ClientFirst {
            flag,
            gs2_header: msg[..msg.len() - bare.len()].to_string(),
            bare: bare.to_string(),
            user: user.to_string(),
            nonce: nonce.to_string(),
        })
    }

    /// The operator name the client signs in as.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// The gateway's side of an exchange, waiting for the client-final.
#[derive(Debug)]
pub struct ServerExchange {
    first: ClientFirst,
    verifier: Verifier,
    binding: ChannelBinding,
    server_first: String,
    nonce: String,
}

/// A finished, successful exchange on the gateway's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSuccess {
    /// The operator who proved the password.
    pub user: String,
    /// The server-final message to send (`v=...`).
    pub server_final: String,
}

impl ServerExchange {
    /// Answers a client-first with `verifier` (the operator's, or a
    /// [`MockVerifiers`] one for an unknown name) on a connection whose
    /// binding is `binding`; gives the exchange and the server-first
    /// message. `server_nonce` comes from [`random_nonce`].
    ///
    /// A client that binds differently from this connection is refused
    /// here, before it spends an argon2 run: over TLS it must bind to the
    /// exporter (a `y` or `n` there may be a downgrade by a man in the
    /// middle); over plain HTTP it must not ask to bind.
    pub fn start(
        first: ClientFirst,
        verifier: Verifier,
        binding: ChannelBinding,
        server_nonce: &[u8; NONCE_BYTES],
    ) -> Result<(ServerExchange, String), ScramError> {
        let fits = match binding {
            ChannelBinding::None => matches!(first.flag, Flag::No | Flag::Could),
            ChannelBinding::TlsExporter(_) => first.flag == Flag::TlsExporter,
        };
        if !fits {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = format!("{}{}", first.nonce, BASE64.encode(server_nonce));
        let p = verifier.params;
        let server_first = format!(
            "r={nonce},s={},m={},t={},p={}",
            BASE64.encode(&verifier.salt),
            p.m_kib,
            p.t,
            p.p
        );
        let exchange = ServerExchange {
            first,
            verifier,
            binding,
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final `c=...,r=...,p=...`: the binding, the
    /// nonce, then the proof (in constant time). The same work is done
    /// for a mock verifier as for a real one.
    pub fn finish(self, client_final: &str) -> Result<ServerSuccess, ScramError> {
        check_message(client_final)?;
        let [c, r, p] = client_final.split(',').collect::<Vec<_>>()[..] else {
            return Err(ScramError::Malformed(Part::Message));
        };
        let binding = BASE64
            .decode(attr(c, "c", Part::Message)?.as_bytes())
            .map_err(|_| ScramError::Malformed(Part::Binding))?;
        let proof = key_b64(attr(p, "p", Part::Message)?, Part::Proof)?;
        if binding != self.binding.input(&self.first.gs2_header) {
            return Err(ScramError::ChannelBinding);
        }
        if attr(r, "r", Part::Message)? != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let without_proof = &client_final[..c.len() + 1 + r.len()];
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let signature = hmac256(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(ServerSuccess {
            user: self.first.user,
            server_final: format!("v={}", BASE64.encode(&server_signature)),
        })
    }
}

/// The client's side of an exchange, before the server-first arrives.
#[derive(Debug, Clone)]
pub struct Client {
    binding: ChannelBinding,
    bare: String,
    nonce: String,
}

impl Client {
    /// Starts an exchange as `user` with a fresh `nonce` (from
    /// [`random_nonce`]) over a connection bound by `binding`; gives the
    /// state and the client-first message.
    pub fn start(
        user: &str,
        nonce: &[u8; NONCE_BYTES],
        binding: ChannelBinding,
    ) -> Result<(Client, String), ScramError> {
        if !valid_user(user) {
            return Err(ScramError::BadUser);
        }
        let nonce = BASE64.encode(nonce);
        let bare = format!("n={user},r={nonce}");
        let message = format!("{}{bare}", binding.gs2_header());
        Ok((Client { binding, bare, nonce }, message))
    }

    /// Reads the server-first: the nonce must extend ours, the salt and
    /// parameters must be well formed and the parameters within `policy`
    /// (use [`ParamPolicy::STRONG`]), before any hashing is done.
    pub fn receive(self, server_first: &str, policy: &ParamPolicy) -> Result<ClientChallenge, ScramError> {
        check_message(server_first)?;
        let [r, s, m, t, p] = server_first.split(',').collect::<Vec<_>>()[..] else {
            return Err(ScramError::Malformed(Part::Message));
        };
        let nonce = attr(r, "r", Part::Message)?;
        let theirs = nonce.strip_prefix(&self.nonce).ok_or(ScramError::NonceMismatch)?;
        if !nonce_ok(theirs) {
            return Err(ScramError::Malformed(Part::Nonce));
        }
        let salt = BASE64
            .decode(attr(s, "s", Part::Message)?.as_bytes())
            .ok()
            .filter(|s| (MIN_SALT_BYTES..=MAX_SALT_BYTES).contains(&s.len()))
            .ok_or(ScramError::Malformed(Part::Salt))?;
        let params = Argon2Params {
            m_kib: number_after(m, "m=").ok_or(ScramError::Malformed(Part::Params))?,
            t: number_after(t, "t=").ok_or(ScramError::Malformed(Part::Params))?,
            p: number_after(p, "p=").ok_or(ScramError::Malformed(Part::Params))?,
        };
        if !policy.allows(&params) {
            return Err(ScramError::Params);
        }
        Ok(ClientChallenge {
            nonce: nonce.to_string(),
            auth_prefix: format!("{},{server_first}", self.bare),
            client: self,
            salt,
            params,
        })
    }
}

/// The client's side once the server-first was accepted: the salt and
/// parameters to hash the password with.
#[derive(Debug, Clone)]
pub struct ClientChallenge {
    client: Client,
    nonce: String,
    /// `client-first-bare "," server-first`, the start of AuthMessage.
    auth_prefix: String,
    salt: Vec<u8>,
    params: Argon2Params,
}

impl ClientChallenge {
    /// The salt the gateway sent.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The argon2 parameters the gateway sent (within the policy).
    pub fn params(&self) -> Argon2Params {
        self.params
    }

    /// Hashes the password (argon2: expensive, keep it off event loops)
    /// and gives the state and the client-final message.
    pub fn respond(self, password: &[u8]) -> Result<(ClientFinal, String), ScramError> {
        let salted = salted_password(password, &self.salt, &self.params)?;
        Ok(self.respond_salted(&salted))
    }

    /// As [`ClientChallenge::respond`], from a `SaltedPassword` already
    /// computed (by [`salted_password`] on another thread, say).
    pub fn respond_salted(self, salted: &[u8; 32]) -> (ClientFinal, String) {
        let (client_key, stored_key, server_key) = keys(salted);
        let c = BASE64.encode(&self.client.binding.input(self.client.binding.gs2_header()));
        let without_proof = format!("c={c},r={}", self.nonce);
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let proof = xor(&client_key, &hmac256(&stored_key, auth_message.as_bytes()));
        let expected = hmac256(&server_key, auth_message.as_bytes());
        (
            ClientFinal { expected, stored_key },
            format!("{without_proof},p={}", BASE64.encode(&proof)),
        )
    }
}

/// The client's side waiting for the server-final.
#[derive(Clone)]
pub struct ClientFinal {
    expected: [u8; KEY_BYTES],
    stored_key: [u8; KEY_BYTES],
}

impl fmt::Debug for ClientFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientFinal(keys hidden)")
    }
}

/// The client's side once the gateway proved it holds the verifier: what
/// the client keeps to prove it holds the tickets this sign-in earns.
pub struct SignedIn {
    stored_key: [u8; KEY_BYTES],
}

impl SignedIn {
    /// The key proving possession of `ticket`, as the gateway computes it
    /// ([`Verifier::possession_key`]). Store it with the ticket, never the
    /// password.
    pub fn possession_key(&self, ticket: &str) -> [u8; 32] {
        possession_key(&self.stored_key, ticket)
    }
}

impl fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignedIn(key hidden)")
    }
}

impl ClientFinal {
    /// Checks the server-final: `v=` must be the signature only a holder
    /// of this operator's verifier can make (compared in constant time);
    /// `e=` is the gateway's refusal.
    pub fn verify(self, server_final: &str) -> Result<SignedIn, ScramError> {
        check_message(server_final)?;
        if let Some(value) = server_final.strip_prefix("e=") {
            let token =
                !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
            return Err(if token {
                ScramError::Refused(value.to_string())
            } else {
                ScramError::Malformed(Part::ServerFinal)
            });
        }
        let signature = key_b64(attr(server_final, "v", Part::ServerFinal)?, Part::ServerFinal)?;
        if bool::from(signature.ct_eq(&self.expected)) {
            Ok(SignedIn {
                stored_key: self.stored_key,
            })
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests;
