//! The latest operator sign-ins, for the console's sign-in history page:
//! a ring of the newest [`SIGNIN_HISTORY`], whatever their outcome. No I/O.

use std::collections::VecDeque;

use serde::Serialize;

/// Sign-ins kept for the console: a screenful or two of the latest. The
/// audit file (`[audit]`) keeps them all; a flood of failures from one
/// address is held back by the per-source sign-in bucket first.
pub const SIGNIN_HISTORY: usize = 200;

/// One sign-in as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignInEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The operator name given (`?` when none came).
    pub operator: String,
    /// The control name it signed in as.
    pub control: String,
    /// The gateway key's name.
    pub key: String,
    /// The address it came from.
    pub source: String,
    /// `ok`, or why not (as `ringway_sign_ins_total` labels it).
    pub outcome: String,
}

/// The newest sign-ins, oldest dropped first.
#[derive(Debug, Default)]
pub struct SignInHistory {
    entries: VecDeque<SignInEntry>,
}

impl SignInHistory {
    /// Adds the newest, forgetting the oldest past [`SIGNIN_HISTORY`].
    pub fn push(&mut self, entry: SignInEntry) {
        if self.entries.len() == SIGNIN_HISTORY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<SignInEntry> {
        self.entries.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> SignInEntry {
        SignInEntry {
            at: format!("t{n}"),
            operator: "alice".into(),
            control: "ops".into(),
            key: "acme".into(),
            source: "127.0.0.1".into(),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn the_newest_are_kept_newest_first_up_to_the_bound() {
        let mut h = SignInHistory::default();
        for n in 0..SIGNIN_HISTORY + 5 {
            h.push(entry(n));
        }
        let got = h.newest_first();
        assert_eq!(got.len(), SIGNIN_HISTORY);
        assert_eq!(got[0].at, format!("t{}", SIGNIN_HISTORY + 4));
        assert_eq!(got[SIGNIN_HISTORY - 1].at, "t5");
    }
}
