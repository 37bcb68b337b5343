//! The Syncline relay: authenticated WebSockets, the device registry, durable storage and
//! fan-out (see `shared/DESIGN.md` §4).
//!
//! Built so far: [`config`], the relay's configuration with the defaults that let
//! `syncline-relay serve` run with nothing set up; [`auth`], JWT verification with its keys;
//! [`storage`], the durable store (trait and embedded SQLite); and [`admin`], the operator
//! commands of the `syncline-relay` binary; and [`session`], the sans-IO per-connection
//! protocol logic; and [`hub`], the document layer that runs Automerge sync, acknowledges
//! durable changes and fans them out. The HTTP/WebSocket shell (`serve`) is next.

pub mod admin;
pub mod auth;
pub mod config;
pub mod hub;
pub mod session;
pub mod storage;

pub use config::{ConfigError, RelayConfig};
