//! The Syncline relay: authenticated WebSockets, the device registry, durable storage and
//! fan-out (see `shared/DESIGN.md` §4).
//!
//! Modules: [`config`] (defaults that need no setup, TOML, `SYNCLINE_*`), [`auth`] (JWT
//! verification and keys), [`session`] (the sans-IO per-connection protocol logic), [`hub`]
//! (the document layer: Automerge sync, durable acknowledgement, fan-out), [`storage`] (the
//! trait and embedded SQLite), [`server`] (the tokio/axum shell behind `syncline-relay
//! serve`), [`embedded`] (the same server inside another process) and [`admin`] (the
//! operator commands).

pub mod admin;
pub mod auth;
pub mod config;
pub mod embedded;
pub mod hub;
pub mod server;
pub mod session;
pub mod storage;
pub mod tenant;

pub use config::{ConfigError, RelayConfig};
pub use tenant::{Tenant, TenantError};
