//! singularity's integration tests: the service runs in-process against a
//! fresh database per test, logged in as role `singularity`, with a
//! temporary workspace; CentralCloud is played by a handle logged in as
//! role `centralcloud`, Genesis by one logged in as role `genesis`. The
//! CLI tests run the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod api_auth;
mod cli;
mod dlq;
mod execution;
mod final_word;
mod genesis;
mod genesis_cli;
mod genesis_results;
mod http;
mod idempotency;
mod paths;
mod patterns;
mod proposals;
mod rollback;
mod spool;
mod support;
mod sweeper;
mod voting;
