//! Tests spanning the binaries: each service starts against a real
//! database, reports ready, and shuts down cleanly on SIGTERM.
#![allow(clippy::unwrap_used)]

mod consumer_kill;
mod genesis_flow;
mod journey;
mod services;
