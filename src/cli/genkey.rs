//! `ringway gen-key`: a new random gateway key, printed once on stdout
//! and kept nowhere, so `ringway gen-key > key` is the only copy.

use data_encoding::HEXLOWER;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bits in a key: 128, past any online or offline guessing (a key
/// proof is an HMAC, so a captured one can be attacked offline).
pub const KEY_BYTES: usize = 16;

/// A new key: [`KEY_BYTES`] from the OS as lower-case hex (32 characters,
/// well over the 8-character minimum, and safe in TOML, shells and files).
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the OS random source failed".to_string())?;
    Ok(HEXLOWER.encode(&bytes))
}

/// Prints a new key and a newline on stdout.
pub fn run() -> Result<(), String> {
    println!("{}", new_key()?);
    Ok(())
}
