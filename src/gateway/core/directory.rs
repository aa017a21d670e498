//! The agents one worker owns: a slab of records and an index by
//! (key id, name), which worker owns which agent, the licence, and
//! replacement. A name is unique per key; two keys may each have a "pc1".
//! No I/O: the flows above do the reading and writing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use slab::Slab;

use super::cluster::MirrorShare;
use super::flaps::Flaps;
use super::outbox::Outbox;
use super::permit::{Licence, Permit};
use crate::auth::KeyId;
use crate::proto::AgentSummary;
use crate::timefmt::rfc3339;

/// One connected agent.
pub(crate) struct AgentRecord {
    /// Unique per registration, so a replaced agent's task can tell that
    /// the slot it left now belongs to its successor.
    pub id: u64,
    /// The key it proved.
    pub kid: KeyId,
    /// Its name (checked by `proto::valid_name`).
    pub name: String,
    /// MAC address it reported (sanitised), for the console.
    pub mac: String,
    /// Its own IP address as it reported it, for the console and log.
    pub local_ip: String,
    /// Its OS as it reported it, for the console.
    pub os: String,
    /// The address its channel comes from.
    pub external: SocketAddr,
    /// When it registered.
    pub connected_since: SystemTime,
    /// When it last polled, for the console.
    pub last_poll: SystemTime,
    /// When anything last arrived from it, for the heartbeat deadline.
    pub last_seen: Instant,
    /// Frames to push down its channel. Dropping the record drops this,
    /// the only sender, which ends the agent's channel task.
    pub outbox: Outbox,
    /// Its shares of the licence (`max_clients`) and of its key's quota
    /// (`max_agents_per_key`), set by [`Directory::admit`]; a replacement
    /// inherits its predecessor's.
    pub licence: Option<AgentShares>,
    /// How this name's replacements are logged; the flow hands it from a
    /// replaced record to its successor.
    pub flaps: Flaps,
    /// In a cluster, its place in the mirror of this gateway's agents;
    /// dropped with the record, so its Redis entry goes on every path.
    pub cluster: Option<MirrorShare>,
}

/// What an admitted agent holds until its record goes.
#[derive(Debug)]
pub(crate) struct AgentShares {
    /// Its share of the licence, all keys together.
    _licence: Permit,
    /// Its share of its key's quota.
    _key: Permit,
}

/// Why a registration was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdmitError {
    /// The licensed maximum of agents is connected.
    Licence,
    /// The agent's key has its quota of agents connected.
    KeyQuota,
}

/// The worker that owns an agent: FNV-1a over key id and name, modulo the
/// worker count. Every worker computes the same answer with no lookup.
pub(crate) fn owner_of(kid: KeyId, name: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in kid.0.iter().chain(name.as_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// A worker's agents.
#[derive(Default)]
pub(crate) struct Directory {
    slab: Slab<AgentRecord>,
    index: HashMap<(KeyId, String), usize>,
}

impl Directory {
    /// The agent (kid, name), if this worker has it.
    pub fn find(&self, kid: KeyId, name: &str) -> Option<&AgentRecord> {
        // The index holds (KeyId, String); building the key costs one small
        // allocation per lookup, which happens per session, not per byte.
        self.index
            .get(&(kid, name.to_string()))
            .and_then(|&slot| self.slab.get(slot))
    }

    /// The record in `slot` if it is still registration `id`.
    pub fn find_slot(&self, slot: usize, id: u64) -> Option<&AgentRecord> {
        self.slab.get(slot).filter(|r| r.id == id)
    }

    /// Admits a registration: a new name takes a share of the licence (at
    /// most `max_clients`, 0 for no limit) and of its key's quota (at most
    /// `max_per_key`, 0 for none); a name already here replaces its record
    /// and inherits its shares, so a reconnecting agent is never refused by
    /// the shares it already holds. Returns the slot and the record it
    /// replaced.
    pub fn admit(
        &mut self,
        mut rec: AgentRecord,
        licence: &Licence,
        max_clients: usize,
        max_per_key: usize,
    ) -> Result<(usize, Option<AgentRecord>), AdmitError> {
        let key = (rec.kid, rec.name.clone());
        let old_slot = self.index.get(&key).copied();
        let inherited = old_slot
            .and_then(|s| self.slab.get_mut(s))
            .and_then(|o| o.licence.take());
        rec.licence = match inherited {
            Some(shares) => Some(shares),
            None => {
                let max = if max_clients == 0 { usize::MAX } else { max_clients };
                let all = licence.agents.take(max).ok_or(AdmitError::Licence)?;
                let own = licence.per_key.take(rec.kid, max_per_key).ok_or(AdmitError::KeyQuota)?;
                Some(AgentShares {
                    _licence: all,
                    _key: own,
                })
            }
        };
        let old = old_slot.map(|s| self.slab.remove(s));
        let slot = self.slab.insert(rec);
        self.index.insert(key, slot);
        Ok((slot, old))
    }

    /// Removes agent (kid, name) if its cluster registration is `reg`:
    /// a newer registration elsewhere took its name.
    pub fn remove_cluster_reg(&mut self, kid: KeyId, name: &str, reg: u64) -> Option<AgentRecord> {
        let slot = *self.index.get(&(kid, name.to_string()))?;
        let rec = self.slab.get(slot)?;
        if rec.cluster.as_ref().map(MirrorShare::reg) != Some(reg) {
            return None;
        }
        let id = rec.id;
        self.remove_if(slot, id)
    }

    /// Removes the record in `slot` if it is still registration `id`.
    pub fn remove_if(&mut self, slot: usize, id: u64) -> Option<AgentRecord> {
        if self.slab.get(slot).is_some_and(|r| r.id == id) {
            let rec = self.slab.remove(slot);
            self.index.remove(&(rec.kid, rec.name.clone()));
            Some(rec)
        } else {
            None
        }
    }

    /// Notes that registration `id` in `slot` was heard from; `poll` if it
    /// was a poll (shown in the console).
    pub fn touch(&mut self, slot: usize, id: u64, poll: bool) {
        if let Some(rec) = self.slab.get_mut(slot).filter(|r| r.id == id) {
            rec.last_seen = Instant::now();
            if poll {
                rec.last_poll = SystemTime::now();
            }
        }
    }

    /// The agents of key `kid`, as controls see them.
    pub fn list(&self, kid: KeyId) -> Vec<AgentSummary> {
        self.slab
            .iter()
            .filter(|(_, r)| r.kid == kid)
            .map(|(_, r)| AgentSummary {
                name: r.name.clone(),
                external_addr: r.external.to_string(),
                connected_since: rfc3339(r.connected_since),
                last_poll: rfc3339(r.last_poll),
                mac: r.mac.clone(),
                local_ip: r.local_ip.clone(),
                os: r.os.clone(),
                gateway: None,
            })
            .collect()
    }

    /// Removes and returns every record `doomed` picks.
    pub fn remove_where(&mut self, doomed: impl Fn(&AgentRecord) -> bool) -> Vec<AgentRecord> {
        let slots: Vec<usize> = self.slab.iter().filter(|(_, r)| doomed(r)).map(|(s, _)| s).collect();
        slots
            .into_iter()
            .map(|slot| {
                let rec = self.slab.remove(slot);
                self.index.remove(&(rec.kid, rec.name.clone()));
                rec
            })
            .collect()
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = &AgentRecord> {
        self.slab.iter().map(|(_, r)| r)
    }

    /// How many agents this worker owns.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slab.len()
    }
}

#[cfg(test)]
mod tests;
