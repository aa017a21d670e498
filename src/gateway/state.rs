//! What the gateway keeps on disk under `[gateway] state_dir`: for now the
//! ticket key, 32 random bytes made on the first start that needs them
//! (the first with operators), so tickets and the mock salts of unknown
//! names outlive restarts.
//!
//! The file holds the key as 64 hex digits and a newline, mode 0600, in a
//! folder made mode 0700. It is made with `O_EXCL` and synced before use,
//! so a crash leaves either no key or a whole one; a file that is not a
//! whole key is refused with its path, never replaced (that would end
//! every ticket and change every mock salt without a word).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::auth::ticket::{TICKET_KEY_BYTES, TicketKey};

/// The ticket key's file name in the state folder.
pub(crate) const TICKET_KEY_FILE: &str = "ticket.key";

/// The path of the ticket key in `state_dir`.
pub(crate) fn ticket_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TICKET_KEY_FILE)
}

/// Reads the ticket key in `state_dir`, making the folder and the key
/// first if there is none. The error names the path and the reason.
pub(crate) fn ticket_key(state_dir: &Path) -> Result<[u8; TICKET_KEY_BYTES], String> {
    let path = ticket_key_path(state_dir);
    match read_key(&path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read the ticket key {}: {e}", path.display())),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| format!("cannot make the state folder {}: {e}", state_dir.display()))?;
    let key = TicketKey::generate_bytes();
    let made = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
            f.sync_all()
        });
    match made {
        Ok(()) => Ok(key),
        // Made by someone else in between: theirs is the key.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(&path).map_err(|e| format!("cannot read the ticket key {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot write the ticket key {}: {e}", path.display())),
    }
}

/// Reads a key file: exactly 64 hex digits and an optional newline, and
/// not readable by group or others.
fn read_key(path: &Path) -> io::Result<[u8; TICKET_KEY_BYTES]> {
    let meta = fs::metadata(path)?;
    if meta.len() > 2 * TICKET_KEY_BYTES as u64 + 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than a key"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "readable by others than its owner: chmod 600 it",
        ));
    }
    let text = fs::read_to_string(path)?;
    let mut key = [0u8; TICKET_KEY_BYTES];
    hex::decode_to_slice(text.trim_end_matches(['\r', '\n']), &mut key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not 64 hex digits"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringway-state-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_key_is_made_once_private_and_then_kept() {
        let dir = scratch("make").join("nested");
        let first = ticket_key(&dir).expect("made");
        let mode = fs::metadata(ticket_key_path(&dir))
            .expect("a file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&dir).expect("a folder").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(ticket_key(&dir).expect("read back"), first);
        let _ = fs::remove_dir_all(dir.parent().expect("a parent"));
    }

    #[test]
    fn a_broken_or_open_key_file_is_refused_never_replaced() {
        let dir = scratch("broken");
        fs::create_dir_all(&dir).expect("a folder");
        let path = ticket_key_path(&dir);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(b"not hex\n"))
            .expect("write");
        let e = ticket_key(&dir).expect_err("refused");
        assert_eq!(
            e,
            format!("cannot read the ticket key {}: not 64 hex digits", path.display())
        );
        assert_eq!(fs::read(&path).expect("kept"), b"not hex\n");
        fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = ticket_key(&dir).expect_err("refused");
        assert!(e.ends_with("readable by others than its owner: chmod 600 it"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(ticket_key(&dir), Ok([0xab; 32]));
        let _ = fs::remove_dir_all(&dir);
    }
}
