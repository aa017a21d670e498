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
//! One store serves every worker. A pin is checked and entered in memory
//! under one lock, so no two workers can ever pin one name to two keys
//! (a reload that changes a key's secret moves its names to another
//! owner). The disk is written by a thread of the store's own, never on a
//! worker's event loop: a durable commit costs milliseconds (an fsync),
//! so the thread commits every write queued meanwhile in one transaction
//! (group commit), and a registration waits for its own pin's commit
//! without holding up anything else. 100,000 agents pinning their names
//! at once thus cost a few hundred commits, not 100,000.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

use futures_channel::oneshot;
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

/// Writes that may wait for the writer thread. Only first pins and
/// releases are written; 4,096 is seconds of a mass first deployment's
/// registrations, and past it a registration is refused (503, try again)
/// rather than queued without bound.
const WRITE_QUEUE: usize = 4096;

/// Most writes committed in one transaction: all that queued during the
/// last commit, up to the whole queue.
const MAX_BATCH: usize = WRITE_QUEUE;

/// The outcome of a write, to whoever waits for it.
type WriteResult = Result<(), String>;

/// Who waits for a write: a registration on a worker (async) or the admin
/// thread (blocking).
enum Done {
    Async(oneshot::Sender<WriteResult>),
    Blocking(mpsc::Sender<WriteResult>),
}

/// One write for the writer thread.
struct Write {
    key: String,
    name: String,
    /// The pin's bytes, or `None` to remove it.
    value: Option<Vec<u8>>,
    done: Done,
}

/// A first pin on its way to disk: await it with [`PinStore::settle`].
pub(crate) struct Pending(oneshot::Receiver<WriteResult>);

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
pub(crate) enum Checked {
    /// The name was free: it is pinned to this agent key in memory, and
    /// on disk once the write is settled.
    Pinning(Pending),
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
    /// The writer thread has [`WRITE_QUEUE`] writes waiting.
    Busy,
    /// The store could not be written: the name is not pinned.
    Store(String),
}

/// The pin store of a gateway.
pub(crate) struct PinStore {
    /// Every pin, in memory.
    pins: Mutex<Pins>,
    /// The writer thread's queue; taken on drop so the thread ends.
    writes: Option<SyncSender<Write>>,
    /// The writer thread, which owns the file; joined on drop, so the
    /// file is closed (and may be opened again) once the store is gone.
    writer: Option<JoinHandle<()>>,
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
        let (writes, queue) = mpsc::sync_channel(WRITE_QUEUE);
        let writer = std::thread::Builder::new()
            .name("ringway-pins".into())
            .spawn(move || write_all(db, path, queue))
            .map_err(|e| format!("cannot start the name pins' writer thread: {e}"))?;
        Ok(PinStore {
            pins: Mutex::new(Pins { map, max }),
            writes: Some(writes),
            writer: Some(writer),
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
        let (done, pending) = oneshot::channel();
        self.queue(key, name, Some(encode(&pin)), Done::Async(done))?;
        pins.map.insert(id, pin);
        Ok(Checked::Pinning(Pending(pending)))
    }

    /// Waits until a first pin is on disk. If it could not be written the
    /// pin is taken back (unless released or replaced meanwhile), so the
    /// name is free again and nothing in memory claims what the disk lacks.
    pub async fn settle(
        &self,
        key: &str,
        name: &str,
        agent_key: AgentPublicKey,
        pending: Pending,
    ) -> Result<(), String> {
        let res = match pending.0.await {
            Ok(res) => res,
            Err(_) => Err("the name pins' writer thread is gone".to_string()),
        };
        if res.is_err() {
            let mut pins = self.lock();
            let id: (Box<str>, Box<str>) = (key.into(), name.into());
            if pins.map.get(&id).is_some_and(|p| p.agent_key == agent_key) {
                pins.map.remove(&id);
            }
        }
        res
    }

    /// Queues a write without waiting; refused when the queue is full.
    fn queue(&self, key: &str, name: &str, value: Option<Vec<u8>>, done: Done) -> Result<(), PinError> {
        let write = Write {
            key: key.to_string(),
            name: name.to_string(),
            value,
            done,
        };
        // Invariant: `writes` is only taken by drop.
        let writes = self
            .writes
            .as_ref()
            .expect("the writer's queue lives as long as the store");
        writes.try_send(write).map_err(|e| match e {
            TrySendError::Full(_) => PinError::Busy,
            TrySendError::Disconnected(_) => PinError::Store("the name pins' writer thread is gone".into()),
        })
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
        // Queued under the lock, so a first pin of the name queued later
        // is also written later: the disk ends as memory does.
        let mut waits = Vec::with_capacity(keys.len());
        for k in &keys {
            let (done, wait) = mpsc::channel();
            self.queue(k, name, None, Done::Blocking(done)).map_err(|e| match e {
                PinError::Store(e) => e,
                _ => "the name pins' writer is busy; try again".to_string(),
            })?;
            pins.map.remove(&(k.as_str().into(), name.into()));
            waits.push(wait);
        }
        drop(pins);
        for wait in waits {
            wait.recv()
                .unwrap_or_else(|_| Err("the name pins' writer thread is gone".into()))?;
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
}

impl Drop for PinStore {
    fn drop(&mut self) {
        // The writer finishes what is queued, then sees the queue close.
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: commits what is queued, as many writes per durable
/// transaction as arrived meanwhile, and tells each waiter the outcome.
fn write_all(db: Database, path: PathBuf, queue: Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let res = commit(&db, &batch).map_err(|e| format!("cannot write the name pins {}: {e}", path.display()));
        for w in batch {
            match w.done {
                Done::Async(tx) => drop(tx.send(res.clone())),
                Done::Blocking(tx) => drop(tx.send(res.clone())),
            }
        }
    }
}

/// One durable transaction holding every write of `batch`, in order;
/// the error as text (redb's error type is large, and only shown).
fn commit(db: &Database, batch: &[Write]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(PINS).map_err(|e| e.to_string())?;
        for w in batch {
            let id = (w.key.as_str(), w.name.as_str());
            match &w.value {
                Some(v) => table.insert(id, v.as_slice()).map(drop),
                None => table.remove(id).map(drop),
            }
            .map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
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

    /// Checks a registration and, for a first pin, waits until it is on
    /// disk: `"pinned"` or `"same"`.
    fn pin(
        store: &PinStore,
        key: &str,
        name: &str,
        k: AgentPublicKey,
        port: u16,
        now: Instant,
    ) -> Result<&'static str, PinError> {
        match store.check(key, name, k, addr(port), now)? {
            Checked::Same => Ok("same"),
            Checked::Pinning(p) => {
                let settled = compio::runtime::Runtime::new()
                    .expect("a runtime")
                    .block_on(store.settle(key, name, k, p));
                settled.map(|()| "pinned").map_err(PinError::Store)
            }
        }
    }

    #[test]
    fn pins_queued_together_are_all_committed() {
        let dir = scratch("group");
        {
            let store = PinStore::open(&dir, 10_000).expect("open");
            let now = Instant::now();
            let pending: Vec<(String, Pending)> = (0..1000)
                .map(|i| {
                    let name = format!("pc{i}");
                    match store.check("k", &name, A, addr(1), now) {
                        Ok(Checked::Pinning(p)) => (name, p),
                        _ => panic!("{name} was free"),
                    }
                })
                .collect();
            // Pinned in memory at once: a second machine is refused even
            // before the commit.
            assert!(matches!(
                store.check("k", "pc7", B, addr(2), now),
                Err(PinError::Taken { .. })
            ));
            let rt = compio::runtime::Runtime::new().expect("a runtime");
            for (name, p) in pending {
                assert_eq!(rt.block_on(store.settle("k", &name, A, p)), Ok(()), "{name}");
            }
        }
        let store = PinStore::open(&dir, 10_000).expect("reopen");
        assert_eq!(store.len(), 1000);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_first_key_pins_a_name_per_gateway_key() {
        let dir = scratch("first");
        let store = PinStore::open(&dir, 10).expect("open");
        let now = Instant::now();
        assert_eq!(pin(&store, "acme", "pc1", A, 1, now), Ok("pinned"));
        assert_eq!(pin(&store, "acme", "pc1", A, 2, now), Ok("same"));
        assert_eq!(
            pin(&store, "acme", "pc1", B, 3, now),
            Err(PinError::Taken {
                pinned_from: "10.0.0.1:1".into(),
                log: Some(0)
            })
        );
        // The same name under another gateway key is another name.
        assert_eq!(pin(&store, "other", "pc1", B, 3, now), Ok("pinned"));
        let mode = fs::metadata(dir.join(PINS_FILE)).expect("a file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn pins_survive_a_reopen_after_drop() {
        let dir = scratch("reopen");
        {
            let store = PinStore::open(&dir, 10).expect("open");
            pin(&store, "acme", "pc1", A, 1, Instant::now()).expect("pinned");
            pin(&store, "acme", "pc2", B, 2, Instant::now()).expect("pinned");
            assert_eq!(store.forget("pc2", None), Ok(vec!["acme".to_string()]));
        }
        let store = PinStore::open(&dir, 10).expect("reopen");
        assert_eq!(store.len(), 1);
        assert!(matches!(
            pin(&store, "acme", "pc1", B, 9, Instant::now()),
            Err(PinError::Taken { pinned_from, .. }) if pinned_from == "10.0.0.1:1"
        ));
        assert_eq!(pin(&store, "acme", "pc2", A, 9, Instant::now()), Ok("pinned"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_is_bounded_by_max_pins() {
        let dir = scratch("bound");
        let store = PinStore::open(&dir, 2).expect("open");
        let now = Instant::now();
        pin(&store, "k", "a", A, 1, now).expect("pinned");
        pin(&store, "k", "b", A, 1, now).expect("pinned");
        assert_eq!(pin(&store, "k", "c", A, 1, now), Err(PinError::Full));
        // Pinned names still work when full.
        assert_eq!(pin(&store, "k", "a", A, 1, now), Ok("same"));
        store.set_max(3);
        assert_eq!(pin(&store, "k", "c", A, 1, now), Ok("pinned"));
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
        pin(&store, "acme", "pc1", A, 1, now).expect("pinned");
        pin(&store, "beta", "pc1", A, 1, now).expect("pinned");
        pin(&store, "beta", "pc2", A, 1, now).expect("pinned");
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
        pin(&store, "k", "pc1", A, 1, now).expect("pinned");
        let logs: Vec<Option<u32>> = [0u64, 1, 2, 61]
            .iter()
            .map(
                |&s| match pin(&store, "k", "pc1", B, 2, now + std::time::Duration::from_secs(s)) {
                    Err(PinError::Taken { log, .. }) => log,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(logs, vec![Some(0), None, None, Some(2)]);
        let _ = fs::remove_dir_all(&dir);
    }
}
