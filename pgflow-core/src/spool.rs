//! The outage spool: publishing while PostgreSQL is unreachable loses nothing.
//!
//! A [`Publisher`] wraps a [`Pgflow`] handle. [`Publisher::publish`] sends
//! as usual; when the send fails because the database cannot be reached
//! (connection refused or lost, pool timeout, server shutting down: see
//! [`Error::is_connection`]) the message is validated and appended to a
//! bounded spool on local disk, synced before the call returns
//! [`Published::Spooled`]. While the spool holds anything, new publishes go
//! to the spool too, so messages are delivered in publish order. Other
//! errors (unknown queue, invalid message, payload too large) are returned
//! at once and nothing is spooled. A full spool is [`Error::SpoolFull`]: the
//! new message is refused, nothing spooled is dropped.
//!
//! The spool is delivered by [`Publisher::flush`], or continuously by the
//! task of [`Publisher::spawn_replayer`], which retries with backoff
//! (100 ms doubling to 5 s) while the database stays unreachable. Replay is
//! in spool order, up to [`REPLAY_BATCH`] messages per transaction (one
//! INSERT per run of consecutive messages of one queue), keeping every
//! message's id. Once a replay succeeds (the database is back), a publish
//! that finds the spool non-empty first helps deliver it (it waits for the
//! flush) and then sends directly: a busy producer cannot grow the spool
//! faster than it drains.
//!
//! ## On disk
//!
//! One directory per process ([`SpoolConfig::dir`]) holds an append-only
//! JSON-lines file of numbered records (`spool.jsonl`) and a "delivered
//! through record N" marker (`delivered`, replaced atomically: temp file,
//! fsync, rename, fsync of the directory) written after each delivered
//! batch. The data file is truncated once everything is delivered, and
//! rewritten atomically to its undelivered remainder once most of it is
//! delivered. [`Publisher::open`] loads a spool left by an earlier process
//! (crash recovery); a torn last line, a write cut short by the crash whose
//! publish never returned, is skipped with a warning. Messages the database
//! refuses for good when replayed (their queue was dropped meanwhile) are
//! moved to `rejected.jsonl` in the same directory with the error, and
//! logged, rather than blocking the spool.
//!
//! ## Guarantees
//!
//! Delivery from the spool is **at-least-once**. A batch whose commit was
//! not acknowledged (connection lost at commit, crash before the marker is
//! written) is sent again with the same ids; the INSERT skips ids that are
//! still queued (`ON CONFLICT (id) DO NOTHING`), so such a re-send is a
//! no-op unless the first copy was already consumed and acked. Order is kept
//! per publisher for messages published one after another (each `publish`
//! awaited before the next): spooled messages are replayed in order and a
//! direct send is only tried once the spool is empty. A delay counts from
//! the publish: time spent in the spool is subtracted at replay.
//!
//! Metrics: `pgflow_spooled_total{queue}` (messages spooled),
//! `pgflow_spool_replayed_total{queue}` (delivered from the spool),
//! `pgflow_spool_rejected_total{queue}` (set aside at replay),
//! `pgflow_spool_full_total{queue}` (refused: spool full) and the gauge
//! `pgflow_spool_messages`.

mod record;
mod replay;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::client::Pgflow;
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_name::QueueName;
use store::Store;

/// Default [`SpoolConfig::max_messages`].
pub const DEFAULT_MAX_MESSAGES: usize = 100_000;
/// Default [`SpoolConfig::max_bytes`] (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Largest number of messages replayed in one transaction.
pub const REPLAY_BATCH: usize = 100;

/// Where and how much to spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool directory (created if missing). One process, one directory:
    /// a second [`Publisher`] on the same directory in this process is refused.
    pub dir: PathBuf,
    /// Most messages waiting at once.
    pub max_messages: usize,
    /// Most bytes (of spool file lines) waiting at once.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// A spool in `dir` with the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_messages: DEFAULT_MAX_MESSAGES,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What became of a published message.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Committed to the queue.
    Sent(Uuid),
    /// The database was unreachable: the message is in the local spool and
    /// will be delivered, with this id, when the database is back.
    Spooled(Uuid),
}

impl Published {
    /// The message id.
    pub fn id(&self) -> Uuid {
        match *self {
            Published::Sent(id) | Published::Spooled(id) => id,
        }
    }

    /// True when the message went to the spool.
    pub fn is_spooled(&self) -> bool {
        matches!(self, Published::Spooled(_))
    }
}

/// A sender that spools to local disk while PostgreSQL is unreachable (see
/// the [module docs](self)). Cheap to clone; clones share one spool.
#[derive(Debug, Clone)]
pub struct Publisher {
    pg: Pgflow,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Mutex<Store>,
    /// Mirror of the store's length, readable without the lock.
    len: AtomicUsize,
    /// The last attempt to reach the database succeeded.
    online: AtomicBool,
    dir: PathBuf,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the replayer when a message is spooled.
    wake: Notify,
}

/// Runs `f` on the store on a blocking thread (it does file I/O and fsync)
/// and refreshes the length mirror and gauge.
async fn with_store<T, F>(inner: &Arc<Inner>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T> + Send + 'static,
{
    let inner2 = inner.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = inner2.store.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut store);
        let len = store.len();
        inner2.len.store(len, Ordering::SeqCst);
        metrics::gauge!("pgflow_spool_messages").set(len as f64);
        result
    })
    .await
    .map_err(|e| Error::Spool {
        path: inner.dir.clone(),
        source: std::io::Error::other(format!("spool task failed: {e}")),
    })?
}

impl Publisher {
    /// Opens the spool in `cfg.dir` (creating it if needed) and loads what
    /// an earlier process left there; those messages are delivered before
    /// any new one. Start [`Self::spawn_replayer`] (or call [`Self::flush`])
    /// to deliver them.
    pub async fn open(pg: Pgflow, cfg: SpoolConfig) -> Result<Self> {
        let path = cfg.dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&cfg))
            .await
            .map_err(|e| Error::Spool {
                path,
                source: std::io::Error::other(format!("spool task failed: {e}")),
            })??;
        let len = store.len();
        let dir = store.dir().to_path_buf();
        metrics::gauge!("pgflow_spool_messages").set(len as f64);
        if len > 0 {
            tracing::warn!(dir = %dir.display(), messages = len,
                "the outage spool holds messages from an earlier run; they are delivered before new ones");
        }
        Ok(Self {
            pg,
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                len: AtomicUsize::new(len),
                // Until a replay succeeds, a spool left by an earlier run
                // means the database may still be down.
                online: AtomicBool::new(len == 0),
                dir,
                flushing: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
            }),
        })
    }

    /// The database handle.
    pub fn pgflow(&self) -> &Pgflow {
        &self.pg
    }

    /// The spool directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Publishes `msg` to `queue`: sends it, or spools it while the database
    /// is unreachable. Returns an error, and spools nothing, for an invalid
    /// message, an unknown queue or any other non-connection failure, and
    /// [`Error::SpoolFull`] when the spool is at its limit.
    pub async fn publish(&self, queue: &QueueName, msg: OutgoingMessage) -> Result<Published> {
        self.publish_inner(queue, msg, false).await
    }

    /// [`Self::publish`] with a NOTIFY that wakes listening consumers (also
    /// when the message is delivered from the spool).
    pub async fn publish_with_notify(
        &self,
        queue: &QueueName,
        msg: OutgoingMessage,
    ) -> Result<Published> {
        self.publish_inner(queue, msg, true).await
    }

    async fn publish_inner(
        &self,
        queue: &QueueName,
        msg: OutgoingMessage,
        notify: bool,
    ) -> Result<Published> {
        msg.validate(self.pg.options().max_payload_bytes)?;
        if self.spooled() > 0 && self.inner.online.load(Ordering::SeqCst) {
            // The database is back and the spool is draining: help drain it
            // (back-pressure) rather than grow it behind the replayer.
            if let Err(e) = self.flush().await {
                tracing::debug!(error = %e, "flushing the spool before a publish failed");
            }
        }
        let mut cause = None;
        if self.spooled() == 0 {
            let sent = if notify {
                self.pg.send_with_notify(queue, msg.clone()).await
            } else {
                self.pg.send(queue, msg.clone()).await
            };
            match sent {
                Ok(id) => {
                    self.inner.online.store(true, Ordering::SeqCst);
                    return Ok(Published::Sent(id));
                }
                Err(e) if e.is_connection() => {
                    self.inner.online.store(false, Ordering::SeqCst);
                    cause = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.spool(queue, msg, notify, cause).await
    }

    async fn spool(
        &self,
        queue: &QueueName,
        msg: OutgoingMessage,
        notify: bool,
        cause: Option<Error>,
    ) -> Result<Published> {
        let id = msg.message_id();
        let q = queue.clone();
        let appended = match with_store(&self.inner, move |s| s.append(&q, notify, &msg)).await {
            Ok(a) => a,
            Err(e) => {
                if matches!(e, Error::SpoolFull { .. }) {
                    metrics::counter!("pgflow_spool_full_total", "queue" => queue.to_string())
                        .increment(1);
                }
                return Err(e);
            }
        };
        metrics::counter!("pgflow_spooled_total", "queue" => queue.to_string()).increment(1);
        crate::telemetry::emit(
            crate::telemetry::Event::PublishFailed,
            "database unreachable: message spooled to disk",
        );
        if appended.first {
            let cause = cause.map(|e| crate::error::report(&e)).unwrap_or_default();
            tracing::warn!(dir = %self.inner.dir.display(), queue = %queue, cause,
                "PostgreSQL is unreachable: spooling published messages to disk until it is back");
        }
        tracing::debug!(queue = %queue, %id, waiting = appended.len, "message spooled");
        self.inner.wake.notify_one();
        Ok(Published::Spooled(id))
    }

    /// Messages waiting in the spool.
    pub fn spooled(&self) -> usize {
        self.inner.len.load(Ordering::SeqCst)
    }
}
