//! Tests spanning the binaries: each service starts against a real
//! database, reports ready, and shuts down cleanly on SIGTERM.
#![allow(clippy::unwrap_used)]

mod alert_rules;
mod cluster;
mod compose;
mod consumer_kill;
mod dashboard_browser;
mod failures;
mod genesis_flow;
mod journey;
mod learning;
mod security;
mod services;
mod up;
