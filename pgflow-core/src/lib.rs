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
//!   `(queue_name, target, ord)` serves every claim, where `ord` packs
//!   "priority descending, then seq" into one number. A claim only updates
//!   columns no index covers (`visible_at`, `lease`, `attempts`), and with
//!   `fillfactor = 40` the new versions of every row of a page fit on that
//!   page: claims are HOT updates and add no index entries (migration 14).
//! * `pgflow.heads`: per queue and target, the claim floor: an `ord` below
//!   which no message lies. Claims scan from it instead of walking the dead
//!   index entries acked messages leave at the head until VACUUM; inserts
//!   lower it (a trigger), claimers raise it now and then
//!   ([`Pgflow::advance_floor`]). A send inside a REPEATABLE READ or
//!   SERIALIZABLE transaction may fail with a serialization error when the
//!   floor moved meanwhile (retry the transaction, as that isolation level
//!   asks anyway).
//! * `pgflow.batches`: a [`Pgflow::send_batch`] of two or more messages
//!   with one target and priority and no delay is one row (the messages as
//!   parallel arrays, one lease) until a claim leases it whole and an ack
//!   settles it whole; anything else (a claim with less room, a partial
//!   ack, a nack, an extension, a release) first turns it into rows that
//!   keep its lease (migration 15). `pgflow.claim` merges both forms in
//!   claim order; a batch's lease is a version-8 UUID naming the batch.
//! * `pgflow.archive`: acked messages kept for audit, pruned by age (BRIN
//!   index); `pgflow.archive_batches` the batches acked whole.
//! * `pgflow.dlq`: dead letters with error, attempts and history.
//!
//! The views `pgflow.live_messages` and `pgflow.archived_messages` show
//! one row per message whichever its form. `public.pgflow_messages`,
//! `public.pgflow_dlq` and `public.pgflow_queues` serve the operator SQL of
//! the seeds verbatim.
//!
//! ## Sessions
//!
//! A [`Pgflow`] handle keeps two pools on one database. The queue's own key
//! lookups (claim, ack, nack, lease extension, release) run on sessions
//! that plan each statement once (generic plans), never plan a sequential
//! scan and never JIT-compile: a plan made while the queue table was small
//! would otherwise read the whole table once it is deep. Sends and the
//! caller's own statements ([`Pgflow::pool`]) use the server's settings.
//! Claims and acks that involve a batch, and every ack inside a caller's
//! transaction (on the caller's session), go through the SQL functions
//! `pgflow.claim` and `pgflow.ack`, planned the same safe way on any
//! session; the others stay single statements (`client/row_sql.rs`).
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
pub mod payload;
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
pub use payload::Payload;
pub use queue_config::{DeliveryKind, QueueConfig, RetryPolicy};
pub use queue_name::QueueName;
pub use spool::{Published, Publisher, SpoolConfig};
