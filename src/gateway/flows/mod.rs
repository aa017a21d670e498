//! What each kind of request does once the front door has read its head:
//! one file per flow. Flows use the worker's state (`shard`) and the
//! pure core, never the front door or the worker loop above them.

pub(crate) mod agent;
pub(crate) mod answer;
pub(crate) mod control;
pub(crate) mod handover;
pub(crate) mod health;
pub(crate) mod join;
pub(crate) mod login;
pub(crate) mod operator;
