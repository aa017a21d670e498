//! The agents one worker owns: a slab of records and an index by
//! (key id, name). A name is unique per key; two keys may each have a "pc1".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use slab::Slab;

use super::outbox::Outbox;
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

    /// Whether (kid, name) is connected here.
    pub fn contains(&self, kid: KeyId, name: &str) -> bool {
        self.find(kid, name).is_some()
    }

    /// Adds a record, returning its slot and the record it replaced (same
    /// key and name), if any.
    pub fn insert(&mut self, rec: AgentRecord) -> (usize, Option<AgentRecord>) {
        let key = (rec.kid, rec.name.clone());
        let old = self.index.remove(&key).map(|slot| self.slab.remove(slot));
        let slot = self.slab.insert(rec);
        self.index.insert(key, slot);
        (slot, old)
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
}
