//! Hookline: a webhook delivery service with a Svix-compatible API.
//!
//! Data flows one way: `api` → `service` → `store` → `dispatch` → endpoint →
//! `store` → `api`. See `ARCHITECTURE.md` for the map and the invariants.

pub mod api;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod dispatch;
pub mod domain;
pub mod maintenance;
pub mod operational;
pub mod server;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod traces;
