//! Fixtures shared by ringway's integration tests.
//!
//! - [`Gateway`] (gateway.rs): the one launcher of the real `ringway`
//!   binary, on a [`GatewayConfig`] (config.rs: keys, limits, `[log]`,
//!   `[admin]`, `[tls]`) written into a [`TestDir`] (testdir.rs), on
//!   loopback ports it picks itself; [`LoggedChild`] (process.rs) collects
//!   its stderr line by line so tests wait on events. lifecycle.rs rewrites
//!   its config, reloads it (SIGHUP or `ringway reload`) and stops it;
//!   admin.rs asks its admin listener (pages, JSON, /metrics).
//!   [`Gateway::start_prepared`] starts it inside a namespace or under a
//!   lower open-file limit ([`limit_open_files`], process.rs).
//! - prometheus.rs: a strict parser of /metrics' text format.
//! - eventlog.rs: the `GWnnn.log` files read back and their stamps.
//! - tls.rs: gen-cert's certificates and [`TlsRig`], a gateway over TLS.
//! - [`AgentThread`] (agents.rs): library agents (`ringway::client`) on a
//!   compio runtime of their own thread, serving sessions the way
//!   `ringway agent` does.
//! - client.rs: control calls from blocking test code; session.rs:
//!   sessions through the library's connection type (plain or TLS).
//! - binaries.rs: the real `ringway agent` / `ringway control` binaries
//!   and any other `ringway` command;
//!   command.rs: short-lived commands (curl, openssl, Chromium) with a
//!   bound.
//! - [`Service`] (service.rs): a local TCP service on std threads.
//! - [`Redis`] (redis.rs): a real redis-server on a Unix socket of the
//!   test's own, for the cluster tests.
//! - bytes.rs: a seeded byte stream and SHA-256.
//! - [`Tap`] (tap.rs): a forwarding proxy that records what clients send,
//!   the eavesdropper of the replay tests.
//! - procfs.rs: TCP sockets and descriptors from /proc, bounded waits.
//! - Faults: [`Netns`] (netns.rs), network namespaces of the test's own;
//!   impair.rs, veths between them with packet loss and reordering;
//!   [`DelayProxy`] (delay_proxy.rs), latency in user space; both_ways.rs,
//!   the 64 MiB-each-way check; reset.rs, RST mid-transfer.
//!
//! Every wait is on an event (a stderr line, a channel message, a socket
//! becoming readable) with a generous timeout that only bounds a failure.
//! The exceptions are state the gateway announces nowhere (descriptor
//! counts, sockets it has closed, counters, the event log files), which
//! [`poll_until`] polls with a deadline.

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

mod admin;
mod agents;
mod binaries;
mod both_ways;
mod bytes;
mod client;
mod command;
mod config;
mod delay_proxy;
mod eventlog;
mod gateway;
mod impair;
mod lifecycle;
mod netns;
mod process;
mod procfs;
mod prometheus;
mod redis;
mod reset;
mod service;
mod session;
mod tap;
mod testdir;
mod tls;

use std::time::Duration;

// Glob re-exports, so tests write `common::Gateway`; each binary uses some.
#[allow(unused_imports)]
pub use admin::*;
#[allow(unused_imports)]
pub use agents::*;
#[allow(unused_imports)]
pub use binaries::*;
#[allow(unused_imports)]
pub use both_ways::*;
#[allow(unused_imports)]
pub use bytes::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use command::*;
#[allow(unused_imports)]
pub use config::*;
#[allow(unused_imports)]
pub use delay_proxy::*;
#[allow(unused_imports)]
pub use eventlog::*;
#[allow(unused_imports)]
pub use gateway::*;
#[allow(unused_imports)]
pub use impair::*;
#[allow(unused_imports)]
pub use lifecycle::*;
#[allow(unused_imports)]
pub use netns::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use procfs::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use reset::*;
#[allow(unused_imports)]
pub use service::*;
#[allow(unused_imports)]
pub use session::*;
#[allow(unused_imports)]
pub use tap::*;
#[allow(unused_imports)]
pub use testdir::*;
#[allow(unused_imports)]
pub use tls::*;

/// Upper bound for anything that should happen within a second or two:
/// only reached when a test fails, and generous because two cores are
/// shared by parallel tests and debug builds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Read timeout put on blocking test sockets, so a lost byte fails the
/// test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
