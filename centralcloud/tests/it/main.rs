//! centralcloud against a real PostgreSQL: each test its own database,
//! the engine in-process as role `centralcloud`, the singularity (and
//! Genesis) side played through the queues under their own roles; plus the
//! binary's command line.
#![allow(clippy::unwrap_used, missing_docs)]

mod cli;
mod consensus;
mod dlq;
mod guardian;
mod learning;
mod learning_recovery;
mod learning_schedule;
mod patterns;
mod senders;
mod support;
