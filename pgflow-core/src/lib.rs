//! # pgflow-core
//!
//! A durable message queue in PostgreSQL, the consumer runtime built on it,
//! and the typed protocol the three services share.
//!
//! ## Storage
//!
//! Everything lives in the `pgflow` schema (see `migrations/`):
//!
//! * `pgflow.queues`: one row per queue with its delivery kind, retry
//!   policy, default lease and archive retention.
//! * `pgflow.messages`: the hot table, holding only live messages. One btree
//!   `(queue_name, target, priority DESC, seq)` serves every claim. A claim
//!   only updates columns no index covers (`visible_at`, `lease`,
//!   `attempts`), so with `fillfactor = 70` claims are HOT updates and do not
//!   bloat the index.
//! * `pgflow.archive`: acked messages kept for audit, pruned by age (BRIN index).
//! * `pgflow.dlq`: dead letters with error, attempts and history.
//!
//! The views `public.pgflow_messages`, `public.pgflow_dlq` and
//! `public.pgflow_queues` serve the operator SQL of the seeds verbatim.
//!
//! ## Guarantees
//!
//! * At-least-once delivery. A claim leases up to N messages in one
//!   `FOR UPDATE SKIP LOCKED` statement under a fresh lease token.
//!   [`Pgflow::ack`], [`Pgflow::nack`] and [`Pgflow::extend_lease`] need the
//!   token and an unexpired lease, or they fail with [`Error::LeaseLost`] and
//!   change nothing (fencing).
//! * Highest priority first, FIFO within a priority.
//! * Retries use exponential backoff with jitter. After the last retry, or on a fatal
//!   failure, the message moves to the DLQ.
//! * Sends may join the caller's transaction ([`Pgflow::send_in_tx`]).
#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod client;
pub mod consumer;
pub mod dashboard;
pub mod delivery;
pub mod error;
pub mod local_pg;
pub mod message;
pub mod ops;
pub mod protocol;
pub mod queue_config;
pub mod queue_name;
pub mod service;
pub mod shutdown;
pub mod spool;
pub mod telemetry;
pub mod testing;

pub use client::{
    AckReport, ClaimOptions, DlqMessage, Failure, MessageSummary, NackOutcome, Pgflow,
    PgflowOptions, QueueStats, Subscriber, MIGRATOR, NOTIFY_CHANNEL,
};
pub use delivery::{Delivery, Receipt};
pub use error::{Error, Result};
pub use message::{priority, MessageType, OutgoingMessage};
pub use queue_config::{DeliveryKind, QueueConfig, RetryPolicy};
pub use queue_name::QueueName;
pub use spool::{Published, Publisher, SpoolConfig};
