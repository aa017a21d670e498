//! ringway: a connectivity gateway. Agents behind NAT dial out and stay
//! present; operators ("controls") browse them and open relay sessions
//! through the gateway, which carries every byte.
//!
//! # Layout
//! - Bytes and meaning, no I/O: [`http`] (request/response heads),
//!   [`auth`] (gateway keys and their proofs; operators' passwords, TOTP,
//!   sign-in tickets), [`proto`] (paths, headers,
//!   agent channel frames, session ids), [`config`] (TOML into checked
//!   types), [`timefmt`].
//! - [`lines`]: the sign-in exchange's text lines over a connection.
//! - [`relay`]: two sockets, one buffer per direction, half-close carried.
//! - [`tls`] and [`conn`]: rustls over compio, plain or TLS behind one type.
//! - [`gateway`] (Linux, io_uring): workers, listeners, directory, sessions.
//! - [`client`]: what agents, controls and the load generator speak.
//! - [`eventlog`]: the administrator's GWnnn.log.
//! - [`admin`]: console, JSON API, Prometheus metrics, reload.
//! - [`cli`]: the `ringway` command.

#![warn(missing_docs)]

#[cfg(target_os = "linux")]
pub mod admin;
pub mod approve;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod eventlog;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(target_os = "linux")]
pub mod gateway;
pub mod http;
pub mod lines;
pub mod proto;
pub mod relay;
pub mod timefmt;
pub mod tls;
