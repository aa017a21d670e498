//! Byte streams both ends can produce from a seed, and their SHA-256.

use std::io::{self, Read, Write};

use ring::digest;

/// Read and write size of the generated streams and the echo service.
pub const CHUNK: usize = 64 * 1024;

/// A seeded xorshift64* generator: both ends of a test can produce the
/// same stream without storing it.
pub struct Prng(u64);

impl Prng {
    /// A generator for `seed` (any value; zero is mapped away).
    pub fn new(seed: u64) -> Prng {
        Prng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// The next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// Writes `len` bytes of `Prng::new(seed)` to `w`; returns their SHA-256.
pub fn send_generated(w: &mut impl Write, seed: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut prng = Prng::new(seed);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        prng.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(ctx.finish().as_ref().to_vec())
}

/// Reads `r` to EOF after `early`; returns the byte count and SHA-256.
pub fn read_hashed(r: &mut impl Read, early: &[u8]) -> io::Result<(usize, Vec<u8>)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(early);
    let mut total = early.len();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((total, ctx.finish().as_ref().to_vec()));
        }
        ctx.update(&buf[..n]);
        total += n;
    }
}
