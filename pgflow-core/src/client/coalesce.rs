//! Send coalescing: concurrent `send` calls on one [`Pgflow`] handle are
//! merged into multi-row INSERTs (one per queue), the way group commit
//! merges commits. A caller's `send` still returns only after its own
//! message is committed; under no concurrency the cost is one channel hop.
//!
//! A few flusher tasks pull from one channel: while one INSERT runs, the
//! next callers queue up and leave together in the following statement.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use sqlx::PgPool;

use super::send::{insert_messages, Insert};
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_name::QueueName;

/// Largest number of messages merged into one INSERT.
const MAX_MERGE: usize = 500;
/// Flushers running INSERTs at once.
const FLUSHERS: usize = 2;

pub(crate) struct SendRequest {
    pub queue: QueueName,
    pub msg: OutgoingMessage,
    pub notify: bool,
    pub reply: oneshot::Sender<Result<()>>,
}

/// The sending side, owned by the [`Pgflow`] handle.
#[derive(Debug)]
pub(crate) struct Coalescer {
    tx: mpsc::UnboundedSender<SendRequest>,
}

impl Coalescer {
    /// Starts the flushers. They hold the pool, not the handle, so they stop
    /// when the last handle (and with it the sender) is dropped.
    pub(crate) fn start(pool: PgPool, max_payload: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..FLUSHERS {
            let (rx, pool) = (rx.clone(), pool.clone());
            tokio::spawn(async move { flush_loop(pool, max_payload, rx).await });
        }
        Self { tx }
    }

    /// Queues a request; `false` when the flushers are gone (their
    /// runtime ended), in which case the caller sends directly.
    pub(crate) fn submit(&self, req: SendRequest) -> bool {
        self.tx.send(req).is_ok()
    }
}

async fn flush_loop(
    pool: PgPool,
    max_payload: usize,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<SendRequest>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => return, // every Pgflow handle is gone
            }
            while batch.len() < MAX_MERGE {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        flush(&pool, max_payload, batch).await;
    }
}

async fn insert(
    pool: &PgPool,
    max_payload: usize,
    queue: &QueueName,
    msgs: &[OutgoingMessage],
    notify: bool,
) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(Error::from)?;
    insert_messages(
        &mut conn,
        queue,
        msgs,
        notify,
        max_payload,
        Insert::Optimistic,
    )
    .await
    .map(|_| ())
}

async fn flush(pool: &PgPool, max_payload: usize, batch: Vec<SendRequest>) {
    let mut groups: HashMap<(QueueName, bool), Vec<SendRequest>> = HashMap::new();
    for r in batch {
        groups
            .entry((r.queue.clone(), r.notify))
            .or_default()
            .push(r);
    }
    for ((queue, notify), reqs) in groups {
        let msgs: Vec<OutgoingMessage> = reqs.iter().map(|r| r.msg.clone()).collect();
        match insert(pool, max_payload, &queue, &msgs, notify).await {
            Ok(()) => {
                for r in reqs {
                    let _ = r.reply.send(Ok(()));
                }
            }
            Err(e) if reqs.len() == 1 => {
                if let Some(r) = reqs.into_iter().next() {
                    let _ = r.reply.send(Err(e));
                }
            }
            Err(_) => {
                // Give every caller its own precise outcome.
                for r in reqs {
                    let res = insert(
                        pool,
                        max_payload,
                        &queue,
                        std::slice::from_ref(&r.msg),
                        notify,
                    )
                    .await;
                    let _ = r.reply.send(res);
                }
            }
        }
    }
}
