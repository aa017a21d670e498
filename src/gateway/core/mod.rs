//! The bottom layer of the gateway: its tables, state machines and
//! messages, with no I/O. Nothing here reads a socket, sleeps or looks at
//! the clock by itself: time comes in as an argument, so every rule
//! (ownership, licence, replacement, pairing, shares, replies) is unit-
//! and property-tested without a runtime.
//!
//! The layers above use this one and never the reverse:
//! `worker` → `frontdoor` → `flows` → `shard` → `core`.

pub(crate) mod cluster;
pub(crate) mod directory;
pub(crate) mod drain;
pub(crate) mod flaps;
pub(crate) mod gauge;
pub(crate) mod handoff;
pub(crate) mod outbox;
pub(crate) mod pairing;
pub(crate) mod permit;
pub(crate) mod reply;
pub(crate) mod sessions;
pub(crate) mod signin_history;
pub(crate) mod signins;
pub(crate) mod sources;
pub(crate) mod stats;
