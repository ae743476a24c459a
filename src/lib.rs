//! backstop: a backup authentication engine that fronts a primary identity provider and keeps
//! applications signed in through its outage. See `ARCHITECTURE.md` for the codemap.
//!
//! Floors (arrows point down only, see `../shared/STYLE.md`): `server` may use everything; the
//! logic modules below it never touch sockets, hyper or the clock.

#![deny(unsafe_code)]

pub mod append;
pub mod audit;
pub mod config;
pub mod eligibility;
pub mod failover;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod server;

#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod revocation;
pub mod seed;
pub mod ssf;
pub mod store;
pub mod token;
