//! [`Pgflow`]: the handle to a queue database. Its operations live in the
//! submodules: sending, claiming, settling (ack / nack / lease), the
//! dead-letter queue, and administration (stats, pending, archive pruning).

mod admin;
mod batch_send;
mod cancel;
mod claim;
mod coalesce;
mod deadlock;
mod dlq;
mod floor;
mod row_sql;
mod send;
mod settle;
mod subscribers;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use sqlx::{ConnectOptions, Connection};

use crate::error::{Error, Result};
use crate::message::DEFAULT_MAX_PAYLOAD_BYTES;

pub use admin::{MessageSummary, QueueStats};
pub use claim::{ClaimOptions, MAX_CLAIM_BATCH};
pub use dlq::DlqMessage;
pub use floor::ADVANCE_EVERY;
pub use settle::{AckReport, Failure, NackOutcome};
pub use subscribers::Subscriber;

/// The LISTEN/NOTIFY channel on which senders announce new work. The payload
/// is the queue name only (never message data: NOTIFY payloads are capped).
pub const NOTIFY_CHANNEL: &str = "pgflow";

/// The migrations of the queue schema (and of the services' schemas).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Options of a [`Pgflow`] handle.
#[derive(Debug, Clone)]
pub struct PgflowOptions {
    /// Largest connection pool (the queue pool, see [`Pgflow::from_pool`],
    /// adds a quarter of this, 2 to 16).
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Largest payload accepted by `send` (serialized JSON bytes).
    pub max_payload_bytes: usize,
    /// Name given to connections (`application_name`), shown in `pg_stat_activity`.
    pub application_name: String,
    /// A pooled connection idle at least this long is pinged before use
    /// (one round trip); one used more recently is not (see
    /// `pool_options`). `Duration::ZERO` pings before every use, sqlx's
    /// default.
    pub ping_idle_after: Duration,
}

impl Default for PgflowOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            application_name: "pgflow".into(),
            ping_idle_after: PING_IDLE_AFTER,
        }
    }
}

/// A handle to the queue database: cheap to clone, shares one pool.
#[derive(Debug, Clone)]
pub struct Pgflow {
    pool: PgPool,
    /// The queue's key lookups; see [`Pgflow::from_pool`].
    queue_pool: PgPool,
    options: Arc<PgflowOptions>,
    coalescer: Arc<OnceLock<coalesce::Coalescer>>,
    floors: Arc<floor::Advances>,
    batch_modes: Arc<batch_send::BatchModes>,
}

impl Pgflow {
    /// Connects with default options.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PgflowOptions::default()).await
    }

    /// Connects with `options`; an unreachable server gives [`Error::Unreachable`].
    pub async fn connect_with(url: &str, options: PgflowOptions) -> Result<Self> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| Error::Config(format!("invalid database URL {}: {e}", redact_url(url))))?;
        // Generic plans: the queue's statements take their rows as arrays
        // (`unnest($2::uuid[])`), for which PostgreSQL's plan cache keeps
        // choosing a custom plan, i.e. plans every execution again (half a
        // millisecond of server CPU per ack in the full-loop load test). All
        // the statements sent through this pool are key lookups whose plan
        // does not depend on the values.
        // The settle statements find their rows by `id = ANY($1)` so that
        // a plan made on an empty table still probes the primary key.
        let connect = connect
            .application_name(&options.application_name)
            .options([("plan_cache_mode", "force_generic_plan")]);
        // One direct attempt first: it reports the real cause (refused,
        // auth, unknown database) where a pool would only say "timed out".
        let unreachable = |source| Error::Unreachable {
            url: redact_url(url),
            source,
        };
        let probe = tokio::time::timeout(options.acquire_timeout, connect.connect())
            .await
            .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
            .map_err(unreachable)?;
        probe.close().await.ok();
        let pool = pool_options(options.ping_idle_after)
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Self::from_pool(pool, options))
    }

    /// Wraps an existing pool. The queue's own key lookups (claim, ack,
    /// nack, lease extension, release) get a second pool to the same
    /// database whose sessions never plan a sequential scan: they keep one
    /// generic plan per statement, and a plan made while the queue table
    /// was small would read the whole table once it is deep (15 ms per ack
    /// at 90,000 waiting, in whichever sessions planned early). The general
    /// pool, for sends and callers' own statements, keeps the server's
    /// planner settings.
    pub fn from_pool(pool: PgPool, options: PgflowOptions) -> Self {
        let queue_connect = pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("enable_seqscan", "off"), ("jit", "off")]);
        let queue_pool = pool_options(options.ping_idle_after)
            .max_connections(queue_connections(options.max_connections))
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(queue_connect);
        Self {
            pool,
            queue_pool,
            options: Arc::new(options),
            coalescer: Arc::new(OnceLock::new()),
            floors: Arc::default(),
            batch_modes: Arc::default(),
        }
    }

    /// The connection pool (for a caller's own transactions).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool of the queue's own key lookups (claims, acks, nacks, lease
    /// extensions and releases), whose sessions never plan a sequential
    /// scan; see [`Pgflow::from_pool`]. For diagnostics and tests: a
    /// caller's own statements belong on [`Pgflow::pool`].
    pub fn queue_pool(&self) -> &PgPool {
        &self.queue_pool
    }

    /// The options in use.
    pub fn options(&self) -> &PgflowOptions {
        &self.options
    }

    /// Applies all pending migrations (idempotent; concurrent callers are
    /// serialised by sqlx's advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks that every migration this binary knows has been applied,
    /// without changing anything (for services that do not own the schema).
    pub async fn check_schema(&self) -> Result<()> {
        let applied: Vec<i64> = match sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(v) => v,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Err(Error::SchemaMissing("no migrations applied".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let missing: Vec<i64> = MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::SchemaMissing(format!(
                "migrations {missing:?} not applied"
            )))
        }
    }

    /// The source the database records on what this handle sends without
    /// naming one: its login role, or `operator:<login>` for an unrestricted
    /// session (migration 17; [`crate::protocol::sender`]).
    pub async fn default_source(&self) -> Result<String> {
        Ok(sqlx::query_scalar("SELECT pgflow.default_source()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.queue_pool.close().await;
    }
}

/// Connections of the queue pool for a handle of `max_connections`: a
/// quarter, 2 to 16. Its statements are short (a claim or an ack holds a
/// connection for a fraction of a millisecond), so a few serve all the
/// consumers of a process, and the handle opens at most a quarter more
/// connections than it was given.
fn queue_connections(max_connections: u32) -> u32 {
    (max_connections / 4).clamp(2, 16)
}

/// The default of [`PgflowOptions::ping_idle_after`].
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool settings shared by both pools. sqlx pings a connection when it
/// goes back to the pool and, by default, again when it is taken out: two
/// extra round trips around each statement. The ping on release stays
/// (it also clears what an interrupted call left on the connection); the
/// one on acquire only runs for a connection idle for `ping_idle_after` or
/// more. A busy handle then spends one round trip per statement on pings
/// instead of two (the batched benchmark: 13-17% more throughput).
///
/// The price: a session that ends while its connection sits in the pool
/// (`pg_terminate_backend`, a failover, a restart) is noticed by the next
/// statement on it instead of by a ping, if that connection was used
/// within `ping_idle_after`. That statement fails with a connection error
/// ([`Error::is_connection`]: the server's "terminating connection" or an
/// I/O error), the connection is closed, and the next call gets a new one.
/// Callers already retry such errors (the consumer runtime backs off, the
/// spool keeps what it could not send); [`Duration::ZERO`] restores a ping
/// before every use.
fn pool_options(ping_idle_after: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ping_idle_after {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Removes the password from a connection URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn the_queue_pool_is_a_quarter_of_the_handle_within_bounds() {
        use super::queue_connections;
        assert_eq!(queue_connections(1), 2);
        assert_eq!(queue_connections(20), 5);
        assert_eq!(queue_connections(400), 16);
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
