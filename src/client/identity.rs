//! The agent's own key pair, kept in its state folder: made on the first
//! registration, then the same for every later one, so the gateway can
//! tell this machine from another that uses the same name.
//!
//! The key is stored as PKCS#8 (what ring makes and reads), mode 0600 in
//! a folder made mode 0700, written with `O_EXCL` and synced before use.
//! A file that is not a whole key, or that group or others may read, is
//! refused with its path and the reason, never replaced: a new key would
//! make the gateway refuse this machine's name (it is pinned to the old
//! key) until an administrator releases it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::auth::agentkey::{AGENT_KEY_LEN, AgentPublicKey};

/// The key's file name in the agent's state folder.
pub const AGENT_KEY_FILE: &str = "agent.key";

/// Largest key file read. An Ed25519 PKCS#8 document is 83 bytes; a
/// larger file is not ours and is refused unread.
const MAX_KEY_FILE: u64 = 256;

/// An agent's key pair.
pub struct AgentIdentity {
    /// Signs each registration.
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentIdentity({}, private key hidden)", self.public())
    }
}

impl AgentIdentity {
    /// A fresh key pair held in memory only (load generators, tests).
    pub fn generate() -> AgentIdentity {
        let pkcs8 = generate_pkcs8();
        AgentIdentity {
            // Made by ring a line above: always a valid document.
            pair: Ed25519KeyPair::from_pkcs8(&pkcs8).expect("ring reads the key it made"),
        }
    }

    /// Reads the key in `state_dir`, making the folder and a new key first
    /// if there is none. The error names the path and the reason.
    pub fn load_or_create(state_dir: &Path) -> Result<AgentIdentity, String> {
        let path = state_dir.join(AGENT_KEY_FILE);
        match read_key(&path) {
            Ok(pair) => return Ok(AgentIdentity { pair }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot use the agent key {}: {e}", path.display())),
        }
        make_private_dir(state_dir)
            .map_err(|e| format!("cannot make the state folder {}: {e}", state_dir.display()))?;
        let pkcs8 = generate_pkcs8();
        match write_new(&path, &pkcs8) {
            Ok(()) => {}
            // Made by another agent on this machine in between: theirs it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot write the agent key {}: {e}", path.display())),
        }
        read_key(&path)
            .map(|pair| AgentIdentity { pair })
            .map_err(|e| format!("cannot use the agent key {}: {e}", path.display()))
    }

    /// The public key the gateway pins.
    pub fn public(&self) -> AgentPublicKey {
        let mut key = [0u8; AGENT_KEY_LEN];
        // An Ed25519 public key is 32 bytes by definition.
        key.copy_from_slice(self.pair.public_key().as_ref());
        AgentPublicKey(key)
    }

    /// The key pair, to sign with.
    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }
}

/// The agent's state folder when `--state-dir` is not given:
/// `$XDG_STATE_HOME/ringway`, else `~/.local/state/ringway` (on Windows
/// `%LOCALAPPDATA%\ringway`); `None` when none of these is set.
pub fn default_state_dir() -> Option<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = from("XDG_STATE_HOME") {
        return Some(dir.join("ringway"));
    }
    if cfg!(windows) {
        return from("LOCALAPPDATA").map(|d| d.join("ringway"));
    }
    from("HOME").map(|home| home.join(".local").join("state").join("ringway"))
}

fn generate_pkcs8() -> Vec<u8> {
    // Fails only if the OS has no entropy source at all, which leaves no
    // way to make any key: nothing sensible to do but stop.
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("the OS random source failed")
        .as_ref()
        .to_vec()
}

fn make_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a key file: a whole Ed25519 PKCS#8 document, not readable by
/// group or others.
fn read_key(path: &Path) -> io::Result<Ed25519KeyPair> {
    let meta = fs::metadata(path)?;
    if meta.len() > MAX_KEY_FILE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than a key"));
    }
    #[cfg(unix)]
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "readable by others than its owner: chmod 600 it",
        ));
    }
    let bytes = fs::read(path)?;
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not an Ed25519 key (PKCS#8); move it away to make a new one, and have the gateway forget this name",
        )
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringway-agent-id-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_key_is_made_once_private_and_then_kept() {
        let dir = scratch("make").join("nested");
        let first = AgentIdentity::load_or_create(&dir).expect("made");
        let path = dir.join(AGENT_KEY_FILE);
        let mode = fs::metadata(&path).expect("a file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&dir).expect("a folder").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let again = AgentIdentity::load_or_create(&dir).expect("read back");
        assert_eq!(again.public(), first.public());
        assert_ne!(AgentIdentity::generate().public(), first.public());
        let _ = fs::remove_dir_all(dir.parent().expect("a parent"));
    }

    #[test]
    fn a_broken_or_open_key_file_is_refused_never_replaced() {
        let dir = scratch("broken");
        make_private_dir(&dir).expect("a folder");
        let path = dir.join(AGENT_KEY_FILE);
        write_new(&path, b"not a key").expect("write");
        let e = AgentIdentity::load_or_create(&dir).expect_err("refused");
        assert!(
            e.starts_with(&format!(
                "cannot use the agent key {}: not an Ed25519 key",
                path.display()
            )),
            "{e}"
        );
        assert_eq!(fs::read(&path).expect("kept"), b"not a key");

        fs::remove_file(&path).expect("remove");
        let made = AgentIdentity::load_or_create(&dir).expect("made");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = AgentIdentity::load_or_create(&dir).expect_err("refused");
        assert_eq!(
            e,
            format!(
                "cannot use the agent key {}: readable by others than its owner: chmod 600 it",
                path.display()
            )
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            AgentIdentity::load_or_create(&dir).expect("whole again").public(),
            made.public()
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
