//! The TLS record layer for a connection whose handshake rustls finished
//! and whose traffic secrets it handed over (its secret-extraction API,
//! made for kernel TLS). No I/O: records in, plaintext out, and back.
//!
//! Why: an idle agent channel over rustls holds rustls's 4 KiB receive
//! buffer, two expanded AEAD keys (1.1 KiB), its state machine and
//! buffers: about 10 KiB per agent that does nothing but poll once a
//! minute. A [`RecordLayer`] holds the raw keys, IVs and sequence numbers
//! (about 140 bytes) and expands a key per record, which costs well under
//! a microsecond, next to a poll a minute.
//!
//! What it speaks: TLS 1.3 (RFC 8446 section 5) and TLS 1.2 AEAD records
//! (AES-GCM, RFC 5288, with the explicit nonce; ChaCha20-Poly1305,
//! RFC 7905), the suites the gateway's config offers. Application data
//! and alerts only: a post-handshake handshake message (a TLS 1.3
//! KeyUpdate, a TLS 1.2 renegotiation) is refused, since the secrets to
//! follow a key update are not handed over; an agent whose channel ends
//! that way registers again. The sequence number never wraps: a
//! connection that would reuse a nonce is refused instead.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// Bytes of a record header: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Largest plaintext one record carries (RFC 8446 section 5.1).
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest ciphertext a peer may send in one record: TLS 1.3 allows
/// 2^14 + 256 (section 5.2); TLS 1.2's 2^14 + 2048 is never needed by an
/// AEAD suite, whose expansion is at most 24 bytes.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// The AEAD tag of every suite here.
const TAG_LEN: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce, sent before the ciphertext.
const EXPLICIT_NONCE_LEN: usize = 8;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// `legacy_record_version` on the wire, TLS 1.2's number for both versions.
const RECORD_VERSION: [u8; 2] = [0x03, 0x03];
/// Alert level warning and description close_notify.
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// Which record format the handshake agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2: AAD from the sequence number, GCM's nonce partly explicit.
    Tls12,
    /// TLS 1.3: AAD is the header, the real type hides in the plaintext.
    Tls13,
}

/// Why a record was refused; every one of them ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// A header or length no peer of these suites would send.
    Malformed(&'static str),
    /// The tag did not verify: the record was forged, damaged or replayed.
    BadRecord,
    /// The peer sent an alert other than close_notify (level, description).
    Alert(u8, u8),
    /// A post-handshake handshake message (key update, renegotiation).
    Handshake,
    /// 2^64 records in one direction: the nonce would repeat.
    SequenceExhausted,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Malformed(why) => write!(f, "malformed TLS record: {why}"),
            RecordError::BadRecord => f.write_str("TLS record failed its integrity check"),
            RecordError::Alert(level, desc) => write!(f, "peer sent TLS alert {desc} (level {level})"),
            RecordError::Handshake => f.write_str("post-handshake TLS message (key update or renegotiation) refused"),
            RecordError::SequenceExhausted => f.write_str("TLS sequence numbers exhausted"),
        }
    }
}

impl std::error::Error for RecordError {}

/// What one opened record held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data: this many bytes, at the start of the record's
    /// buffer after [`RecordLayer::open`] returned.
    Data(usize),
    /// The peer's close_notify: its stream has ended.
    Closed,
}

/// One direction's key, IV and sequence number.
struct Direction {
    algorithm: &'static aead::Algorithm,
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Option<Direction> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return None,
        };
        let key = key.as_ref();
        if key.len() != algorithm.key_len() || iv.as_ref().len() != aead::NONCE_LEN {
            return None;
        }
        let mut raw = [0u8; 32];
        raw[..key.len()].copy_from_slice(key);
        let mut fixed = [0u8; aead::NONCE_LEN];
        fixed.copy_from_slice(iv.as_ref());
        Some(Direction {
            algorithm,
            key: raw,
            iv: fixed,
            seq,
        })
    }

    fn key(&self) -> LessSafeKey {
        let len = self.algorithm.key_len();
        // The length was checked when the direction was made.
        LessSafeKey::new(UnboundKey::new(self.algorithm, &self.key[..len]).expect("key length checked at setup"))
    }

    /// The IV with the sequence number xored into its last 8 bytes.
    fn nonce_bytes(&self) -> [u8; aead::NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// Whether TLS 1.2 records of this direction carry an explicit nonce
    /// (AES-GCM; ChaCha20 derives it as TLS 1.3 does).
    fn explicit_nonce(&self, version: Version) -> bool {
        version == Version::Tls12 && !std::ptr::eq(self.algorithm, &aead::CHACHA20_POLY1305)
    }

    fn advance(&mut self) -> Result<(), RecordError> {
        self.seq = self.seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        Ok(())
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        // Do not leave traffic keys in freed memory.
        self.key.fill(0);
        self.iv.fill(0);
    }
}

/// Both directions of a TLS connection's record protection.
pub struct RecordLayer {
    version: Version,
    rx: Direction,
    tx: Direction,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("version", &self.version)
            .field("rx_seq", &self.rx.seq)
            .field("tx_seq", &self.tx.seq)
            .finish_non_exhaustive()
    }
}

/// The length of the first record in `buf` (header included), once its
/// header is there: `Ok(None)` while fewer than 5 bytes are. A header no
/// peer may send is refused at once.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if !matches!(header[0], ALERT | HANDSHAKE | APPLICATION_DATA) {
        return Err(RecordError::Malformed("unknown record type"));
    }
    if header[1] != 3 {
        return Err(RecordError::Malformed("not a TLS record version"));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_CIPHERTEXT {
        return Err(RecordError::Malformed("record longer than the protocol allows"));
    }
    if len < TAG_LEN {
        return Err(RecordError::Malformed("record shorter than its tag"));
    }
    Ok(Some(HEADER_LEN + len))
}

impl RecordLayer {
    /// Record protection from secrets rustls extracted (each with the
    /// sequence number of its direction's next record). `None` for a
    /// cipher this layer does not speak.
    pub fn new(
        version: Version,
        rx: (u64, &ConnectionTrafficSecrets),
        tx: (u64, &ConnectionTrafficSecrets),
    ) -> Option<RecordLayer> {
        Some(RecordLayer {
            version,
            rx: Direction::new(rx.0, rx.1)?,
            tx: Direction::new(tx.0, tx.1)?,
        })
    }

    /// Opens the record that is exactly `record` (header included, as
    /// [`record_len`] measured it), decrypting in place: the plaintext is
    /// left at the start of `record`.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        if record_len(record)? != Some(record.len()) {
            return Err(RecordError::Malformed("not one whole record"));
        }
        let outer_type = record[0];
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&record[..HEADER_LEN]);
        let key = self.rx.key();
        let (inner_type, len) = match self.version {
            Version::Tls13 => {
                if outer_type != APPLICATION_DATA {
                    // Only a plaintext alert could come unprotected, and
                    // after the handshake none may.
                    return Err(RecordError::Malformed("unprotected record after the handshake"));
                }
                let nonce = Nonce::assume_unique_for_key(self.rx.nonce_bytes());
                let body = &mut record[HEADER_LEN..];
                let plain = key
                    .open_in_place(nonce, Aad::from(header), body)
                    .map_err(|_| RecordError::BadRecord)?;
                // The real type is the last non-zero byte; zeros after it
                // are padding (section 5.4).
                let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                    return Err(RecordError::Malformed("record without a content type"));
                };
                let inner = plain[end];
                let len = end;
                record.copy_within(HEADER_LEN..HEADER_LEN + len, 0);
                (inner, len)
            }
            Version::Tls12 => {
                let explicit = self.rx.explicit_nonce(self.version);
                let skip = if explicit { EXPLICIT_NONCE_LEN } else { 0 };
                let body_len = record.len() - HEADER_LEN;
                if body_len < skip + TAG_LEN {
                    return Err(RecordError::Malformed("record shorter than its nonce and tag"));
                }
                let nonce = if explicit {
                    let mut n = [0u8; aead::NONCE_LEN];
                    n[..4].copy_from_slice(&self.rx.iv[..4]);
                    n[4..].copy_from_slice(&record[HEADER_LEN..HEADER_LEN + EXPLICIT_NONCE_LEN]);
                    n
                } else {
                    self.rx.nonce_bytes()
                };
                let plain_len = body_len - skip - TAG_LEN;
                let aad = tls12_aad(self.rx.seq, outer_type, plain_len);
                let body = &mut record[HEADER_LEN + skip..];
                key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
                    .map_err(|_| RecordError::BadRecord)?;
                record.copy_within(HEADER_LEN + skip..HEADER_LEN + skip + plain_len, 0);
                (outer_type, plain_len)
            }
        };
        self.rx.advance()?;
        match inner_type {
            APPLICATION_DATA => Ok(Opened::Data(len)),
            ALERT if len == 2 && record[..2] == CLOSE_NOTIFY => Ok(Opened::Closed),
            ALERT if len == 2 => Err(RecordError::Alert(record[0], record[1])),
            ALERT => Err(RecordError::Malformed("alert of the wrong length")),
            HANDSHAKE => Err(RecordError::Handshake),
            _ => Err(RecordError::Malformed("unknown inner content type")),
        }
    }

    /// Appends to `out` the records carrying `data` (one per 16 KiB).
    pub fn seal_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in data.chunks(MAX_PLAINTEXT) {
            self.seal(APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Appends to `out` the close_notify alert record.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal(ALERT, &CLOSE_NOTIFY, out)
    }

    fn seal(&mut self, content_type: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        debug_assert!(data.len() <= MAX_PLAINTEXT);
        // The nonce of this sequence number is used once: the number is
        // advanced before anything can fail after the seal.
        let seq = self.tx.seq;
        if seq == u64::MAX {
            return Err(RecordError::SequenceExhausted);
        }
        let key = self.tx.key();
        let start = out.len();
        match self.version {
            Version::Tls13 => {
                let len = data.len() + 1 + TAG_LEN;
                let header = [
                    APPLICATION_DATA,
                    RECORD_VERSION[0],
                    RECORD_VERSION[1],
                    (len >> 8) as u8,
                    len as u8,
                ];
                out.extend_from_slice(&header);
                out.extend_from_slice(data);
                out.push(content_type);
                let nonce = Nonce::assume_unique_for_key(self.tx.nonce_bytes());
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER_LEN..])
                    .map_err(|_| RecordError::Malformed("record too long to seal"))?;
                out.extend_from_slice(tag.as_ref());
            }
            Version::Tls12 => {
                let explicit = self.tx.explicit_nonce(self.version);
                let nonce = self.tx.nonce_bytes();
                let skip = if explicit { EXPLICIT_NONCE_LEN } else { 0 };
                let len = skip + data.len() + TAG_LEN;
                out.extend_from_slice(&[
                    content_type,
                    RECORD_VERSION[0],
                    RECORD_VERSION[1],
                    (len >> 8) as u8,
                    len as u8,
                ]);
                if explicit {
                    out.extend_from_slice(&nonce[4..]);
                }
                out.extend_from_slice(data);
                let aad = tls12_aad(seq, content_type, data.len());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut out[start + HEADER_LEN + skip..],
                    )
                    .map_err(|_| RecordError::Malformed("record too long to seal"))?;
                out.extend_from_slice(tag.as_ref());
            }
        }
        self.tx.advance()
    }
}

/// TLS 1.2's additional data (RFC 5246 section 6.2.3.3).
fn tls12_aad(seq: u64, content_type: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&RECORD_VERSION);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

#[cfg(test)]
mod tests;
