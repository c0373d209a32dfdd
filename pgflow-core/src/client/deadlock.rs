//! Queue statements that PostgreSQL aborted as deadlock victims run again.
//!
//! `FOR UPDATE SKIP LOCKED` skips the rows other sessions hold, with one
//! exception: when the version a claim looks at is being replaced by a
//! transaction that commits at that very moment, PostgreSQL goes on to lock
//! the row's newer versions and waits for their holders, skip or not
//! ("while locking updated version of tuple"). A claim can then wait for a
//! concurrent ack or claim that itself waits for the first one; the
//! deadlock detector aborts one of the two statements after
//! `deadlock_timeout` (1 s by default). It happened about once per
//! million messages in the batched benchmark.
//!
//! Each of the queue's own statements is one transaction on a connection
//! of its own, and an aborted one changed nothing (fenced acks included),
//! so it is simply run again. Statements inside a caller's transaction are
//! not retried: the caller's transaction is aborted and is the caller's to
//! retry.

use std::future::Future;

/// How many times a statement is run again after being a deadlock victim.
pub(crate) const DEADLOCK_RETRIES: u32 = 3;

/// SQLSTATE `deadlock_detected`.
const DEADLOCK_DETECTED: &str = "40P01";

/// Runs `statement` (one autocommit queue statement), again while
/// PostgreSQL aborts it as a deadlock victim, up to [`DEADLOCK_RETRIES`]
/// more times; any other outcome is returned as it is.
pub(crate) async fn retry_on_deadlock<T, F, Fut>(
    name: &'static str,
    mut statement: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut retries = 0;
    loop {
        match statement().await {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(DEADLOCK_DETECTED) && retries < DEADLOCK_RETRIES =>
            {
                retries += 1;
                metrics::counter!(crate::ops::prometheus::DEADLOCK_RETRIES_TOTAL, "statement" => name)
                    .increment(1);
                tracing::warn!(statement = name, retry = retries, error = %e, "queue statement was a deadlock victim; running it again");
            }
            outcome => return outcome,
        }
    }
}
