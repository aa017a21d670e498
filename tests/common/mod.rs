//! Fixtures shared by ringway's integration tests.
//!
//! - [`Gateway`] (gateway.rs): the real `ringway` binary on a loopback port
//!   it picks itself; [`LoggedChild`] (process.rs) collects its stderr line
//!   by line so tests wait on events.
//! - [`AgentThread`] (agents.rs): library agents (`ringway::client`) on a
//!   compio runtime of their own thread, serving sessions the way
//!   `ringway agent` does.
//! - client.rs: control calls from blocking test code.
//! - [`Service`] (service.rs): a local TCP service on std threads.
//! - bytes.rs: a seeded byte stream and SHA-256.
//! - procfs.rs: TCP sockets and descriptors from /proc, bounded waits.
//!
//! Every wait is on an event (a stderr line, a channel message, a socket
//! becoming readable) with a generous timeout that only bounds a failure.
//! The one exception is state the gateway announces nowhere (descriptor
//! counts, sockets it has closed), which [`poll_until`] polls with a
//! deadline.

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

mod agents;
mod bytes;
mod client;
mod gateway;
mod process;
mod procfs;
mod service;

use std::time::Duration;

// Glob re-exports, so tests write `common::Gateway`; each binary uses some.
#[allow(unused_imports)]
pub use agents::*;
#[allow(unused_imports)]
pub use bytes::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use gateway::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use procfs::*;
#[allow(unused_imports)]
pub use service::*;

/// Upper bound for anything that should happen within a second or two:
/// only reached when a test fails, and generous because two cores are
/// shared by parallel tests and debug builds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Read timeout put on blocking test sockets, so a lost byte fails the
/// test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
