//! The consumer runtime: one supervised consumer per queue feeding a typed
//! async handler.
//!
//! Each consumer is split into parts that run side by side (after River's
//! producer / executor / completer):
//!
//! * the **fetch loop** ([`run`](self)) claims at most as many messages as
//!   it has free worker slots (a [`tokio::sync::Semaphore`]), in one
//!   statement, and sleeps until a NOTIFY for its queue arrives
//!   ([`Wakeups`]), the poll interval passes, or shutdown is requested;
//! * **workers** run the handler for one message each, under a timeout, with
//!   panics caught (a panic or a timeout is a retryable failure);
//! * the **lease keeper** ([`lease`](self)) claims for the queue's
//!   visibility timeout and extends the leases of the messages being
//!   handled several times per lease, so a crashed process's messages are
//!   claimable again within one lease while a long handler keeps its own;
//!   a lost lease stops the handler and its outcome is not settled;
//! * the **completer** settles finished messages in batches: one
//!   `ack_batch` and one `nack_batch` statement for everything that finished
//!   meanwhile, while each handler still sees one message;
//! * the **supervisor** ([`Runtime`]) restarts a consumer loop that failed
//!   (the seeds' `one_for_one`), with backoff.
//!
//! A handler in transactional mode ([`TxHandler`]) gets the transaction in
//! which its message is acked: its writes and the ack commit together.
//! With [`ConsumerConfig::tx_batch`] above 1, several messages of a claim
//! share one such transaction (all or nothing; on a failure each is
//! handled again alone).
//!
//! Shutdown (a [`CancellationToken`](tokio_util::sync::CancellationToken)):
//! stop claiming, let in-flight handlers finish within the shutdown timeout,
//! release the leases of those that did not (they are delivered again at
//! once), flush the completer, return.

mod completer;
mod config;
mod handler;
mod lease;
mod run;
mod state;
mod supervisor;
mod tx_batch;
mod wakeup;
mod worker;

/// Re-exported for implementing [`Handler`] and [`TxHandler`].
pub use async_trait::async_trait;
pub use config::ConsumerConfig;
pub(crate) use handler::decode_as;
pub use handler::{handler_fn, typed, Handler, HandlerError, HandlerResult, TxHandler};
pub use lease::EXTENSIONS_PER_LEASE;
pub use state::{ConsumerState, StateSnapshot};
pub use supervisor::Runtime;
pub use wakeup::Wakeups;
