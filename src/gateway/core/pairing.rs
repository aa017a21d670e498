//! Sessions waiting for their agent: the control has asked, the agent has
//! been told `OPEN <sid>`, and its data connection has not arrived yet.
//!
//! Every waiting session holds a slot here until its control stops
//! waiting. Slots are shared out: at most `total` on a worker, at most
//! `per_key` for one gateway key, at most `per_control` for one control
//! name of a key, so a key flooding connects to an agent that never joins
//! fills its own share, never another key's. Time is an input
//! (`deadline`, `expire(now)`); the waiter type is generic so the rules
//! are tested without sockets.

use std::collections::HashMap;
use std::time::Instant;

use slab::Slab;

use crate::auth::KeyId;

/// How many sessions may wait at once, in all and per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PairingLimits {
    /// On this worker, all keys together.
    pub total: usize,
    /// For one gateway key.
    pub per_key: usize,
    /// For one control (key and control name).
    pub per_control: usize,
}

/// Why a session could not start waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairError {
    /// The worker's table is full.
    Full,
    /// This key has its whole share waiting.
    KeyFull,
    /// This control has its whole share waiting.
    ControlFull,
}

impl PairError {
    /// Who ran out, for the 503's reason and the log.
    pub fn scope(self) -> &'static str {
        match self {
            PairError::Full => "on this gateway",
            PairError::KeyFull => "for this gateway key",
            PairError::ControlFull => "for this control",
        }
    }
}

/// One waiting session.
struct Pending<W> {
    /// Must match the sid's token: ids cannot be guessed.
    token: [u8; 16],
    /// The control's key: only an agent with the same key may join.
    kid: KeyId,
    /// The control's name, for its share.
    control: String,
    /// The agent asked for: only that agent may join.
    agent: String,
    /// When the control stops waiting; past it the slot is reclaimed.
    deadline: Instant,
    /// Delivers the data connection; `None` once taken or cancelled.
    waiter: Option<W>,
}

/// A worker's waiting sessions.
pub(crate) struct Pairing<W> {
    slab: Slab<Pending<W>>,
    per_key: HashMap<KeyId, usize>,
    per_control: HashMap<(KeyId, String), usize>,
    limits: PairingLimits,
}

impl<W> Pairing<W> {
    /// An empty table with these limits.
    pub fn new(limits: PairingLimits) -> Self {
        Self {
            slab: Slab::new(),
            per_key: HashMap::new(),
            per_control: HashMap::new(),
            limits,
        }
    }

    /// New limits (a reload); sessions already waiting keep their slots.
    pub fn set_limits(&mut self, limits: PairingLimits) {
        self.limits = limits;
    }

    /// Starts a session waiting, if the worker, the key and the control
    /// each have room; returns its slot.
    pub fn open(
        &mut self,
        kid: KeyId,
        control: &str,
        agent: &str,
        token: [u8; 16],
        deadline: Instant,
        waiter: W,
    ) -> Result<usize, PairError> {
        if self.slab.len() >= self.limits.total {
            return Err(PairError::Full);
        }
        if self.per_key.get(&kid).copied().unwrap_or(0) >= self.limits.per_key {
            return Err(PairError::KeyFull);
        }
        let ckey = (kid, control.to_string());
        if self.per_control.get(&ckey).copied().unwrap_or(0) >= self.limits.per_control {
            return Err(PairError::ControlFull);
        }
        *self.per_key.entry(kid).or_insert(0) += 1;
        *self.per_control.entry(ckey).or_insert(0) += 1;
        Ok(self.slab.insert(Pending {
            token,
            kid,
            control: control.to_string(),
            agent: agent.to_string(),
            deadline,
            waiter: Some(waiter),
        }))
    }

    /// Takes the waiter of session (`slot`, `token`) for the agent that
    /// joins or fails it: only the agent the control asked for, with the
    /// control's key, gets it, and only once. The slot stays until
    /// [`close`](Self::close).
    pub fn take_waiter(&mut self, slot: usize, token: &[u8; 16], kid: KeyId, agent: &str) -> Option<W> {
        self.slab
            .get_mut(slot)
            .filter(|p| &p.token == token && p.kid == kid && p.agent == agent)
            .and_then(|p| p.waiter.take())
    }

    /// The control stopped waiting: frees the slot and its shares. False
    /// if the slot is not (or no longer) this session's.
    pub fn close(&mut self, slot: usize, token: &[u8; 16]) -> bool {
        if self.slab.get(slot).is_none_or(|p| &p.token != token) {
            return false;
        }
        let p = self.slab.remove(slot);
        self.release(p.kid, p.control);
        true
    }

    /// Drops the waiters of sessions whose key `keep` refuses (a reload
    /// removed it): their controls wake with a failure and close.
    pub fn cancel_where(&mut self, doomed: impl Fn(KeyId) -> bool) -> usize {
        let mut n = 0;
        for (_, p) in self.slab.iter_mut().filter(|(_, p)| doomed(p.kid)) {
            if p.waiter.take().is_some() {
                n += 1;
            }
        }
        n
    }

    /// Reclaims every slot whose deadline is before `now`: a backstop, so
    /// that a control that never closed its slot cannot leak it.
    pub fn expire(&mut self, now: Instant) -> usize {
        let gone: Vec<usize> = self
            .slab
            .iter()
            .filter(|(_, p)| p.deadline < now)
            .map(|(s, _)| s)
            .collect();
        for &slot in &gone {
            let p = self.slab.remove(slot);
            self.release(p.kid, p.control);
        }
        gone.len()
    }

    /// Sessions waiting on this worker.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Sessions of key `kid` waiting on this worker.
    #[cfg(test)]
    pub fn waiting_for_key(&self, kid: KeyId) -> usize {
        self.per_key.get(&kid).copied().unwrap_or(0)
    }

    fn release(&mut self, kid: KeyId, control: String) {
        decrement(&mut self.per_key, kid);
        decrement(&mut self.per_control, (kid, control));
    }
}

/// Counts down a share, forgetting it at zero so the maps stay as small
/// as what is waiting.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
