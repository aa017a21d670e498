//! Agent name pins: which agent key (an Ed25519 public key) may register
//! each name, per gateway key (by the key's configured name), kept in
//! `state_dir/pins.redb` so they outlive restarts.
//!
//! The store is redb: an embedded B-tree whose commits are copy-on-write
//! with a checksummed, fsynced root switch, so a crash (even `kill -9` or a
//! power cut) leaves the last committed pins whole, and a restart repairs
//! nothing by hand. Every pin is also held in memory, bounded by
//! `[limits] max_pins`, so a registration of a pinned name reads no disk;
//! the disk is written only when a name is pinned for the first time (or
//! released), never per poll or per reconnect.
//!
//! One store serves every worker. A name's registrations all run on its
//! owner worker, but a pin is checked and written under one lock so that
//! no two workers can ever pin one name to two keys (a reload that
//! renames a key's secret moves its names to another owner).

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use redb::{Database, ReadableTable, TableDefinition};

use crate::auth::agentkey::{AGENT_KEY_LEN, AgentPublicKey};
use crate::gateway::core::flaps::Flaps;

/// The store's file name in the state folder.
pub(crate) const PINS_FILE: &str = "pins.redb";

/// The one table: (gateway key name, agent name) -> the agent key's 32
/// bytes followed by the address (UTF-8) it was pinned from.
const PINS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pins");

/// Longest address kept with a pin (an IPv6 address with scope and
/// port is under 64); a longer value read back is cut.
const MAX_FROM_LEN: usize = 64;

/// One pin as held in memory.
struct Pin {
    /// The only agent key that may register the name.
    agent_key: AgentPublicKey,
    /// Where the pinning registration came from, for the refusal line
    /// when the pinned agent is not connected.
    pinned_from: String,
    /// How often refusals of this name were logged: a refused machine
    /// retrying (or one of many) is one line a minute, with a count.
    refusals: Flaps,
}

/// The pins in memory and their bound.
struct Pins {
    /// By (gateway key name, agent name).
    map: HashMap<(Box<str>, Box<str>), Pin>,
    /// `[limits] max_pins` now (reload may change it).
    max: usize,
}

/// What a registration's check found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The name was free: it is now pinned to this agent key (on disk).
    Pinned,
    /// The name is pinned to this agent key already.
    Same,
}

/// Why a registration may not have the name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PinError {
    /// The name is pinned to another agent key.
    Taken {
        /// Where the pinning registration came from.
        pinned_from: String,
        /// `Some(n)` when this refusal is to be logged, `n` being the
        /// refusals not logged since the last line; `None` to only count.
        log: Option<u32>,
    },
    /// `max_pins` names are pinned: no new name can be.
    Full,
    /// The store could not be written: the name is not pinned.
    Store(String),
}

/// The pin store of a gateway.
pub(crate) struct PinStore {
    /// Where it is, for errors.
    path: PathBuf,
    /// The file; redb serialises write transactions itself.
    db: Database,
    /// Every pin, in memory.
    pins: Mutex<Pins>,
}

impl PinStore {
    /// Opens (or makes) the store in `state_dir` and reads every pin. A
    /// store holding more than `max` pins is refused: silently keeping
    /// only some would let the others be taken.
    pub fn open(state_dir: &Path, max: usize) -> Result<PinStore, String> {
        let path = state_dir.join(PINS_FILE);
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("cannot {what} the name pins {}: {e}", path.display());
        let mut dir = fs::DirBuilder::new();
        dir.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(state_dir)
            .map_err(|e| format!("cannot make the state folder {}: {e}", state_dir.display()))?;
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| fail("open", &e))?;
        let db = Database::builder().create_file(file).map_err(|e| fail("open", &e))?;
        let mut map = HashMap::new();
        {
            let txn = db.begin_read().map_err(|e| fail("read", &e))?;
            match txn.open_table(PINS) {
                Ok(table) => {
                    for row in table.iter().map_err(|e| fail("read", &e))? {
                        let (k, v) = row.map_err(|e| fail("read", &e))?;
                        let (key, name) = k.value();
                        let Some(pin) = decode(v.value()) else {
                            return Err(fail("read", &format!("the pin of {name:?} (key {key}) is damaged")));
                        };
                        if map.len() == max {
                            return Err(format!(
                                "the name pins {} hold more than [limits] max_pins = {max}; raise max_pins",
                                path.display()
                            ));
                        }
                        map.insert((key.into(), name.into()), pin);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(fail("read", &e)),
            }
        }
        Ok(PinStore {
            path,
            db,
            pins: Mutex::new(Pins { map, max }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pins> {
        // Poisoned only if a thread panicked between two map operations,
        // each of which leaves the map whole.
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a registration of `name` under gateway key `key` by
    /// `agent_key` from `from`; a free name is pinned to it, on disk
    /// before this returns.
    pub fn check(
        &self,
        key: &str,
        name: &str,
        agent_key: AgentPublicKey,
        from: SocketAddr,
        now: Instant,
    ) -> Result<Checked, PinError> {
        let mut pins = self.lock();
        let id: (Box<str>, Box<str>) = (key.into(), name.into());
        if let Some(pin) = pins.map.get_mut(&id) {
            if pin.agent_key == agent_key {
                return Ok(Checked::Same);
            }
            return Err(PinError::Taken {
                pinned_from: pin.pinned_from.clone(),
                log: pin.refusals.replaced(now),
            });
        }
        if pins.map.len() >= pins.max {
            return Err(PinError::Full);
        }
        let pin = Pin {
            agent_key,
            pinned_from: from.to_string(),
            refusals: Flaps::default(),
        };
        self.write(key, name, Some(&encode(&pin))).map_err(PinError::Store)?;
        pins.map.insert(id, pin);
        Ok(Checked::Pinned)
    }

    /// Releases `name`'s pin under gateway key `key`, or under every key
    /// if `key` is `None`: the names of the keys whose pin was released.
    pub fn forget(&self, name: &str, key: Option<&str>) -> Result<Vec<String>, String> {
        let mut pins = self.lock();
        let mut keys: Vec<String> = pins
            .map
            .keys()
            .filter(|(k, n)| &**n == name && key.is_none_or(|want| &**k == want))
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort();
        for k in &keys {
            self.write(k, name, None)?;
            pins.map.remove(&(k.as_str().into(), name.into()));
        }
        Ok(keys)
    }

    /// Applies a reloaded `max_pins`. Pins past a lowered bound stay (they
    /// are on disk and were allowed); only new names are refused.
    pub fn set_max(&self, max: usize) {
        self.lock().max = max;
    }

    /// Pins held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Writes (`Some`) or removes (`None`) one pin in its own committed,
    /// durable transaction.
    fn write(&self, key: &str, name: &str, value: Option<&[u8]>) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot write the name pins {}: {e}", self.path.display());
        let txn = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = txn.open_table(PINS).map_err(|e| fail(&e))?;
            match value {
                Some(v) => table.insert((key, name), v).map(drop),
                None => table.remove((key, name)).map(drop),
            }
            .map_err(|e| fail(&e))?;
        }
        txn.commit().map_err(|e| fail(&e))
    }
}

fn encode(pin: &Pin) -> Vec<u8> {
    let mut v = pin.agent_key.0.to_vec();
    v.extend_from_slice(pin.pinned_from.as_bytes());
    v
}

fn decode(v: &[u8]) -> Option<Pin> {
    let (key, from) = (v.get(..AGENT_KEY_LEN)?, v.get(AGENT_KEY_LEN..)?);
    let from = String::from_utf8_lossy(&from[..from.len().min(MAX_FROM_LEN)]).into_owned();
    Some(Pin {
        agent_key: AgentPublicKey(key.try_into().ok()?),
        pinned_from: from,
        refusals: Flaps::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringway-pins-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    const A: AgentPublicKey = AgentPublicKey([1; 32]);
    const B: AgentPublicKey = AgentPublicKey([2; 32]);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn the_first_key_pins_a_name_per_gateway_key() {
        let dir = scratch("first");
        let store = PinStore::open(&dir, 10).expect("open");
        let now = Instant::now();
        assert_eq!(store.check("acme", "pc1", A, addr(1), now), Ok(Checked::Pinned));
        assert_eq!(store.check("acme", "pc1", A, addr(2), now), Ok(Checked::Same));
        assert_eq!(
            store.check("acme", "pc1", B, addr(3), now),
            Err(PinError::Taken {
                pinned_from: "10.0.0.1:1".into(),
                log: Some(0)
            })
        );
        // The same name under another gateway key is another name.
        assert_eq!(store.check("other", "pc1", B, addr(3), now), Ok(Checked::Pinned));
        let mode = fs::metadata(dir.join(PINS_FILE)).expect("a file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn pins_survive_a_reopen_after_drop() {
        let dir = scratch("reopen");
        {
            let store = PinStore::open(&dir, 10).expect("open");
            store.check("acme", "pc1", A, addr(1), Instant::now()).expect("pinned");
            store.check("acme", "pc2", B, addr(2), Instant::now()).expect("pinned");
            assert_eq!(store.forget("pc2", None), Ok(vec!["acme".to_string()]));
        }
        let store = PinStore::open(&dir, 10).expect("reopen");
        assert_eq!(store.len(), 1);
        assert!(matches!(
            store.check("acme", "pc1", B, addr(9), Instant::now()),
            Err(PinError::Taken { pinned_from, .. }) if pinned_from == "10.0.0.1:1"
        ));
        assert_eq!(
            store.check("acme", "pc2", A, addr(9), Instant::now()),
            Ok(Checked::Pinned)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_is_bounded_by_max_pins() {
        let dir = scratch("bound");
        let store = PinStore::open(&dir, 2).expect("open");
        let now = Instant::now();
        store.check("k", "a", A, addr(1), now).expect("pinned");
        store.check("k", "b", A, addr(1), now).expect("pinned");
        assert_eq!(store.check("k", "c", A, addr(1), now), Err(PinError::Full));
        // Pinned names still work when full.
        assert_eq!(store.check("k", "a", A, addr(1), now), Ok(Checked::Same));
        store.set_max(3);
        assert_eq!(store.check("k", "c", A, addr(1), now), Ok(Checked::Pinned));
        drop(store);
        let e = PinStore::open(&dir, 2).err().expect("more pins than the bound");
        assert!(
            e.ends_with("hold more than [limits] max_pins = 2; raise max_pins"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn forget_releases_one_key_or_every_key() {
        let dir = scratch("forget");
        let store = PinStore::open(&dir, 10).expect("open");
        let now = Instant::now();
        store.check("acme", "pc1", A, addr(1), now).expect("pinned");
        store.check("beta", "pc1", A, addr(1), now).expect("pinned");
        store.check("beta", "pc2", A, addr(1), now).expect("pinned");
        assert_eq!(store.forget("pc1", Some("beta")), Ok(vec!["beta".to_string()]));
        assert_eq!(store.forget("pc1", Some("beta")), Ok(vec![]));
        assert_eq!(store.forget("pc9", None), Ok(vec![]));
        assert_eq!(store.forget("pc1", None), Ok(vec!["acme".to_string()]));
        assert_eq!(store.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refusals_of_one_name_are_logged_once_a_minute() {
        let dir = scratch("refusals");
        let store = PinStore::open(&dir, 10).expect("open");
        let now = Instant::now();
        store.check("k", "pc1", A, addr(1), now).expect("pinned");
        let logs: Vec<Option<u32>> = [0u64, 1, 2, 61]
            .iter()
            .map(
                |&s| match store.check("k", "pc1", B, addr(2), now + std::time::Duration::from_secs(s)) {
                    Err(PinError::Taken { log, .. }) => log,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(logs, vec![Some(0), None, None, Some(2)]);
        let _ = fs::remove_dir_all(&dir);
    }
}
