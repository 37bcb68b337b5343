//! The Syncline relay: authenticated WebSockets, the device registry, durable storage and
//! fan-out (see `shared/DESIGN.md` §4).
//!
//! Modules: [`config`] (defaults that need no setup, TOML, `SYNCLINE_*`), [`auth`] (JWT
//! verification and keys), [`session`] (the sans-IO per-connection protocol logic),
//! [`relay_core`] (sans I/O too: group commit across sessions, routing, grant filtering, slow
//! consumers), [`hub`] (the document layer: Automerge sync, durable acknowledgement, the
//! planner, the registry, fan-out), [`storage`] (the trait and embedded SQLite), [`tenant`],
//! [`server`] (the tokio/axum shell behind `syncline-relay serve`), [`embedded`] (the same server inside another process) and [`admin`] (the
//! operator commands).

pub mod admin;
pub mod auth;
pub mod config;
pub mod embedded;
pub mod hub;
pub mod relay_core;
pub mod server;
pub mod session;
pub mod storage;
pub mod tenant;

pub use config::{ConfigError, RelayConfig};
pub use tenant::{Tenant, TenantError};
