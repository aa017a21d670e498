//! The relay sessions running on one worker: a slab of records for the
//! console, and the kill switch that lets a reload end a session.

use std::rc::Rc;
use std::time::SystemTime;

use futures_channel::oneshot;
use slab::Slab;

use crate::auth::KeyId;
use crate::relay::Counters;

/// A relaying session.
pub(crate) struct SessionInfo {
    /// The control's name.
    pub control: String,
    /// The agent's name.
    pub agent: String,
    /// The key both proved.
    pub kid: KeyId,
    /// The operator signed in on the control, and its generation then
    /// (none without operators).
    pub operator: Option<(String, u64)>,
    /// When the relay started.
    pub started: SystemTime,
    /// Bytes each way so far (control→agent is `a_to_b`).
    pub counters: Rc<Counters>,
    /// Dropping this (with the record) ends the relay: how a reload that
    /// removes a key closes that key's sessions.
    pub _kill: oneshot::Sender<()>,
}

/// A worker's running sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    slab: Slab<SessionInfo>,
}

impl Sessions {
    /// Records a session; the key removes it again.
    pub fn insert(&mut self, s: SessionInfo) -> usize {
        self.slab.insert(s)
    }

    /// Forgets session `key` (its relay has ended).
    pub fn remove(&mut self, key: usize) {
        self.slab.try_remove(key);
    }

    /// Ends every session `doomed` picks, by dropping its record and
    /// with it the kill switch; returns how many.
    pub fn end_where(&mut self, doomed: impl Fn(&SessionInfo) -> bool) -> usize {
        let before = self.slab.len();
        self.slab.retain(|_, s| !doomed(s));
        before - self.slab.len()
    }

    /// How many sessions are running.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Every running session.
    pub fn iter(&self) -> impl Iterator<Item = &SessionInfo> {
        self.slab.iter().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(kid: u8) -> (SessionInfo, oneshot::Receiver<()>) {
        let (kill, killed) = oneshot::channel();
        let info = SessionInfo {
            control: "ops".into(),
            agent: "pc1".into(),
            kid: KeyId([kid; 8]),
            operator: None,
            started: SystemTime::now(),
            counters: Rc::new(Counters::default()),
            _kill: kill,
        };
        (info, killed)
    }

    #[test]
    fn ending_a_key_fires_exactly_its_kill_switches() {
        let mut s = Sessions::default();
        let (a, mut ka) = session(1);
        let (b, mut kb) = session(2);
        s.insert(a);
        let kb_slot = s.insert(b);
        assert_eq!(s.end_where(|s| s.kid == KeyId([1; 8])), 1);
        assert_eq!(ka.try_recv(), Err(oneshot::Canceled), "key 1's relay is told to end");
        assert_eq!(kb.try_recv(), Ok(None), "key 2's relay runs on");
        assert_eq!(s.iter().count(), 1);
        s.remove(kb_slot);
        assert_eq!(s.iter().count(), 0);
    }
}
