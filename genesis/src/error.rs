//! The error type of the genesis library and its `Result` alias.

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop genesis (workflow failures are not errors: they become
/// failed results).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue library failed (connection, schema, queue configuration).
    #[error(transparent)]
    Pgflow(#[from] pgflow_core::Error),
    /// A query on genesis's own tables failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A setting is out of range; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A task of genesis ended abnormally (a panic).
    #[error("{0}")]
    Task(String),
    /// Printing JSON failed.
    #[error("cannot render JSON: {0}")]
    Json(#[from] serde_json::Error),
}
