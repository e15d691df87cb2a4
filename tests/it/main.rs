//! Integration tests: one binary (one link) for all of them.
//!
//! They drive a real Hookline server (in-process, or the compiled binary as
//! a child process for crash tests) through its HTTP API with the official
//! `svix` client, against real HTTP receivers on loopback.

mod api;
mod architecture_doc;
mod bench;
mod browser;
mod cli;
mod cluster;
mod common;
mod conformance;
mod crash;
mod dashboard;
mod delivery;
mod erasure;
mod flow;
mod hostile;
mod import;
mod layers;
mod metrics;
mod openapi;
mod operator;
mod ordering;
mod pg;
mod sdk;
mod sim;
mod store_conformance;
mod traces;
