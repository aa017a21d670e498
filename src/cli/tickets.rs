//! Where `ringway control login` keeps tickets, one file per gateway,
//! like `tsh login` does: `$XDG_CONFIG_HOME/ringway/tickets/` (else
//! `~/.config/ringway/tickets/`), folders mode 0700 and files mode 0600.
//! A file holds the ticket and its possession key, never the password;
//! `ringway control logout` removes it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::OperatorTicket;

/// Largest ticket file read: a ticket is at most 1 KiB.
const MAX_TICKET_FILE_BYTES: u64 = 8 * 1024;

/// A ticket as stored.
#[derive(Serialize, Deserialize)]
pub(super) struct Stored {
    /// The gateway as given to `--gateway`.
    pub gateway: String,
    /// The control name the ticket is bound to (`--as`).
    pub control: String,
    /// The operator signed in.
    pub operator: String,
    /// The ticket.
    pub ticket: String,
    /// Its possession key, hex.
    pub possession: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Stored {
    /// From a fresh sign-in.
    pub fn new(gateway: &str, control: &str, t: &OperatorTicket) -> Stored {
        Stored {
            gateway: gateway.to_string(),
            control: control.to_string(),
            operator: t.operator.clone(),
            ticket: t.ticket.clone(),
            possession: hex::encode(t.possession),
            expires_at: t.expires_at,
        }
    }

    /// As the client library takes it.
    pub fn ticket(&self) -> Option<OperatorTicket> {
        let mut possession = [0u8; 32];
        hex::decode_to_slice(&self.possession, &mut possession).ok()?;
        Some(OperatorTicket {
            operator: self.operator.clone(),
            ticket: self.ticket.clone(),
            possession,
            expires_at: self.expires_at,
        })
    }
}

/// The folder tickets live in.
fn folder() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the ticket".into()),
        },
    };
    Ok(base.join("ringway").join("tickets"))
}

/// The name of a gateway's files (its ticket, its boot id): the gateway
/// as given, with anything but letters, digits, `.` and `-` made `_`.
pub(super) fn file_stem(gateway: &str) -> String {
    gateway
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file of `gateway`'s ticket.
pub(super) fn path_for(gateway: &str) -> Result<PathBuf, String> {
    Ok(folder()?.join(format!("{}.json", file_stem(gateway))))
}

/// Stores `t` for its gateway, replacing any older one.
pub(super) fn save(t: &Stored) -> Result<PathBuf, String> {
    let path = path_for(&t.gateway)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    make_private_dir(dir)?;
    let text = serde_json::to_string_pretty(t).map_err(|e| e.to_string())?;
    // Written beside and renamed over, so a crash leaves the old ticket
    // or the new one, never half of one.
    let tmp = path.with_extension("json.tmp");
    let _ = fs::remove_file(&tmp);
    write_private(&tmp, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The stored ticket of `gateway`, if there is one.
pub(super) fn load(gateway: &str) -> Result<Option<Stored>, String> {
    let path = path_for(gateway)?;
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if meta.len() > MAX_TICKET_FILE_BYTES {
        return Err(format!("{} is not a ticket file (too large)", path.display()));
    }
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{} is not a ticket file ({e}): ringway control login again",
            path.display()
        )
    })
}

/// Removes `gateway`'s ticket; whether there was one.
pub(super) fn remove(gateway: &str) -> Result<bool, String> {
    let path = path_for(gateway)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

#[cfg(unix)]
fn make_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))
}

#[cfg(not(unix))]
fn make_private_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
