//! Wake-ups by LISTEN/NOTIFY: one listening connection per process feeds
//! every consumer. Senders NOTIFY the queue name ([`NOTIFY_CHANNEL`]); the
//! hub wakes the consumers of that queue.
//!
//! NOTIFYs sent while the listening connection is down are lost, so on
//! every (re)connect the hub wakes all consumers for a catch-up claim; and
//! consumers poll anyway at their poll interval. A dropped connection (for
//! example `pg_terminate_backend`) is re-established with backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Pgflow, NOTIFY_CHANNEL};
use crate::error::report;

/// The wake-up hub. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    waiters: Mutex<HashMap<String, Vec<Arc<Notify>>>>,
    listening: AtomicBool,
    connects: AtomicU64,
}

impl Wakeups {
    /// Starts listening on `pg`'s database until `shutdown`.
    pub fn start(pg: &Pgflow, shutdown: CancellationToken) -> (Self, JoinHandle<()>) {
        let hub = Self::default();
        let task = tokio::spawn(listen_loop(pg.pool().clone(), hub.clone(), shutdown));
        (hub, task)
    }

    /// A waiter woken on every NOTIFY for `queue` (and on reconnects).
    pub fn subscribe(&self, queue: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.entry(queue.to_string()).or_default().push(n.clone());
        }
        n
    }

    /// True while the listening connection is up.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    /// How many times the listening connection was established.
    pub fn connects(&self) -> u64 {
        self.inner.connects.load(Ordering::Relaxed)
    }

    fn wake(&self, queue: &str) {
        if let Ok(w) = self.inner.waiters.lock() {
            for n in w.get(queue).into_iter().flatten() {
                n.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        if let Ok(w) = self.inner.waiters.lock() {
            for n in w.values().flatten() {
                n.notify_one();
            }
        }
    }
}

async fn connect(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen(NOTIFY_CHANNEL).await?;
    Ok(l)
}

async fn listen_loop(pool: PgPool, hub: Wakeups, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connect(&pool) => r,
        };
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %report(&e), retry_in = ?backoff, "LISTEN connection failed; consumers poll meanwhile");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        hub.inner.listening.store(true, Ordering::Relaxed);
        let n = hub.inner.connects.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            tracing::info!("LISTEN connection re-established; catching up");
        }
        // Anything sent while we were not listening: claim it now.
        hub.wake_all();
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.try_recv() => r,
            };
            match r {
                Ok(Some(n)) => hub.wake(n.payload()),
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %report(&e), "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
        hub.inner.listening.store(false, Ordering::Relaxed);
        hub.wake_all();
    }
}
