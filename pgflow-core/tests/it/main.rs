//! Integration tests of the queue against a real PostgreSQL: each test
//! creates its own database (see `pgflow_core::testing`).
#![allow(clippy::unwrap_used)]

mod batches;
mod cli;
mod concurrency;
mod consumer;
mod dashboard;
mod dashboard_origin;
mod deadlock;
mod delivery_kinds;
mod durability;
mod fencing;
mod floor;
mod hot;
mod lease_keeper;
mod monitoring;
mod ops;
mod outage;
mod plans;
mod retry_dlq;
mod roles;
mod roles_passwords;
mod send_claim;
mod spool;
mod support;
mod targets;
mod tx_batch;
