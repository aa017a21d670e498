//! The boot id each gateway last gave `ringway control`, kept between
//! runs in `$XDG_CACHE_HOME/ringway/boots/` (else `~/.cache/ringway/boots/`),
//! one small file per gateway. Over plain HTTP a proof is bound to the
//! gateway's boot id; a control that knows none is answered `401
//! stale_boot` with it and signs again, one round trip more. Each
//! `control connect --stdio` (ssh's ProxyCommand) is a new process, so
//! without this every session paid that round trip. A boot id is no
//! secret (every answer carries it); a stale one costs what no file
//! costs, and is replaced.

use std::fs;
use std::path::PathBuf;

use crate::auth::BootId;
use crate::client::{BootCache, Endpoint};

/// Largest file read: 32 hex digits and a newline.
const MAX_BOOT_FILE_BYTES: u64 = 64;

/// The folder, if the environment names one.
fn folder() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("ringway").join("boots"))
}

/// The file of `gateway` (`host:port`): anything but letters, digits,
/// `.` and `-` made `_`.
fn path_for(gateway: &str) -> Option<PathBuf> {
    let name: String = gateway
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(folder()?.join(format!("{name}.boot")))
}

/// The boot id stored for `gateway`, if a whole one is.
fn load(gateway: &str) -> Option<BootId> {
    let path = path_for(gateway)?;
    if fs::metadata(&path).ok()?.len() > MAX_BOOT_FILE_BYTES {
        return None;
    }
    BootId::parse(fs::read_to_string(&path).ok()?.trim())
}

/// Gives each plain-HTTP endpoint the boot id stored for its gateway.
pub(super) fn preload(eps: &mut [Endpoint]) {
    for ep in eps.iter_mut().filter(|ep| ep.tls.is_none()) {
        if let Some(id) = load(&ep.gateway) {
            ep.boot = BootCache::known(id);
        }
    }
}

/// Stores each endpoint's boot id that differs from its file's. Failing
/// to write costs a round trip next time, nothing else: said at debug.
pub(super) fn remember(eps: &[Endpoint]) {
    for ep in eps.iter().filter(|ep| ep.tls.is_none()) {
        let Some(id) = ep.boot.get() else { continue };
        if load(&ep.gateway) == Some(id) {
            continue;
        }
        let Some(path) = path_for(&ep.gateway) else { continue };
        let written = path.parent().map_or(Ok(()), fs::create_dir_all).and_then(|()| {
            // Beside and renamed over: a reader sees the old id or the new.
            let tmp = path.with_extension(format!("boot.{}", std::process::id()));
            fs::write(&tmp, format!("{id}\n"))?;
            fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            log::debug!("cannot keep the boot id of {} in {}: {e}", ep.gateway, path.display());
        }
    }
}
