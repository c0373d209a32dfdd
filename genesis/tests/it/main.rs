//! Genesis against a real PostgreSQL: every test gets its own database,
//! runs genesis's consumers in-process as role `genesis` and plays
//! `singularity_1` (and centralcloud) through the queues with their roles.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cli;
mod failures;
mod jobs;
mod parallel;
mod scenarios;
mod support;
