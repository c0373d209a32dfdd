//! The error type of the queue library and its `Result` alias.

use uuid::Uuid;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `pgflow-core`.
///
/// Variants name the problem and, where there is one, the fix; callers
/// match on them (for example a runtime treats [`Error::LeaseLost`] as "someone
/// else owns this message now" and never retries it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue name that may not reach SQL.
    #[error("invalid queue name {name:?}: {reason} (use 1-63 lowercase letters, digits or '_', starting with a letter)")]
    InvalidQueueName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The queue does not exist in `pgflow.queues`.
    #[error("unknown queue {0:?} (list queues with `pgflow queues`; create it with `pgflow queue create {0}`)")]
    UnknownQueue(String),
    /// A message for a targeted queue without a target: no consumer would
    /// ever claim it.
    #[error(
        "queue {0:?} delivers each message to one instance: give the message a target (--target)"
    )]
    NoTarget(String),
    /// A message for a targeted queue whose target never registered on it
    /// (an instance registers when it first consumes the queue; one that is
    /// only down stays registered).
    #[error("no instance {target:?} has ever consumed queue {queue:?} (a typo? the view pgflow_subscribers lists the registered instances)")]
    UnknownTarget {
        /// The queue.
        queue: String,
        /// The target as given.
        target: String,
    },
    /// A payload larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Serialized size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A payload that is not valid JSON, or that does not decode into the requested type.
    #[error("invalid JSON payload: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// A message field that is out of range (priority, type name, ...).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The lease of a claimed message expired or was taken over by another
    /// claim: the ack / nack / extension was refused and nothing changed.
    #[error("lease lost for message {id}: it expired or the message was claimed again; nothing was changed")]
    LeaseLost {
        /// The message id.
        id: Uuid,
    },
    /// A row that was looked up by id does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked up ("DLQ message", ...).
        what: &'static str,
        /// Its id.
        id: Uuid,
    },
    /// The database could not be reached.
    #[error("cannot connect to PostgreSQL at {url}: {source} (is the server running? check --database-url / PGFLOW_DATABASE_URL)")]
    Unreachable {
        /// The URL with its password removed.
        url: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema is missing or older than this binary.
    #[error("database schema is not initialised or out of date: {0} (run `pgflow init`)")]
    SchemaMissing(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A private PostgreSQL cluster could not be created or controlled.
    #[error("local PostgreSQL: {0}")]
    LocalPostgres(String),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A command line the `pgflow` CLI cannot run as given (a bad argument
    /// value, a missing database URL): it exits with status 2.
    #[error("{0} (see `pgflow --help`)")]
    Usage(String),
    /// An I/O error (spool files, temp directories).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The ops HTTP server (`/healthz`, `/readyz`, `/metrics`, `/status`)
    /// could not bind its address.
    #[error("cannot bind the ops HTTP server to {addr}: {source} (choose another address with --http-addr / PGFLOW_HTTP_ADDR; port 0 picks a free port)")]
    HttpBind {
        /// The address that was refused.
        addr: std::net::SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus metrics recorder could not be installed.
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Metrics(String),
    /// The outage spool is full: this message was refused (neither sent nor
    /// spooled); everything spooled before it is kept.
    #[error(
        "outage spool {dir} is full ({messages} messages, {bytes} bytes waiting; limits are \
         {max_messages} messages and {max_bytes} bytes): the message was refused and nothing \
         already spooled was dropped (restore the connection to PostgreSQL so the spool drains, \
         or raise SpoolConfig::max_messages / max_bytes)"
    )]
    SpoolFull {
        /// The spool directory.
        dir: std::path::PathBuf,
        /// Messages waiting in the spool.
        messages: usize,
        /// Bytes those messages take on disk.
        bytes: u64,
        /// The message limit (`SpoolConfig::max_messages`).
        max_messages: usize,
        /// The byte limit (`SpoolConfig::max_bytes`).
        max_bytes: u64,
    },
    /// Reading or writing a file of the outage spool failed.
    #[error("outage spool file {path}: {source}")]
    Spool {
        /// The file (or directory).
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error means the database is (probably temporarily)
    /// unavailable: connection refused or reset, pool timeout, server
    /// shutting down or starting. A server that answers and refuses (a
    /// wrong password, an unknown role or database) is not: waiting would
    /// not help.
    pub fn is_connection(&self) -> bool {
        match self {
            Error::Unreachable { source, .. } => is_connection_error(source),
            Error::Database(e) => is_connection_error(e),
            _ => false,
        }
    }
}

/// True when a driver error is a lost or refused connection rather than a
/// problem with the statement.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // admin_shutdown, crash_shutdown, cannot_connect_now, connection_failure
            Some("57P01")
                | Some("57P02")
                | Some("57P03")
                | Some("08006")
                | Some("08001")
                | Some("08003")
        ),
        _ => false,
    }
}

/// True when the server refused a statement for the values it carried: a
/// data exception (SQLSTATE class 22: a NUL character, an invalid byte
/// sequence, a value out of range), an integrity constraint violation
/// (class 23) or a program limit (class 54: a row or index entry too
/// large). Sending the same values again fails the same way.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
        _ => false,
    }
}

/// Renders an error and its sources on one line, leaving out a source whose
/// text the message before it already contains.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
