//! The error type of the singularity library, and how its variants map to
//! handler outcomes (retryable or fatal) when they happen in a consumer.

use pgflow_core::consumer::HandlerError;
use uuid::Uuid;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in singularity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue library failed (connection, send, schema, ...).
    #[error(transparent)]
    Queue(#[from] pgflow_core::Error),
    /// A query of singularity's own tables failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A proposal that cannot be accepted; the text says which field and why.
    #[error("invalid proposal: {0}")]
    InvalidProposal(String),
    /// A request to Genesis that cannot be sent (a field breaks the
    /// protocol's rules, a job id already used, a bad LLM configuration);
    /// the text says which and why.
    #[error("invalid genesis request: {0}")]
    InvalidRequest(String),
    /// An idempotency key reused for a different proposal: the text says
    /// which key and which proposal it belongs to.
    #[error("idempotency key conflict: {0}")]
    IdempotencyConflict(String),
    /// A proposal id this instance does not know.
    #[error("proposal {0} not found for this instance")]
    NotFound(Uuid),
    /// Invalid configuration (flag or environment variable).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file operation failed (workspace, verify command, `--change @file`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A JSON value could not be built or read.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<Error> for HandlerError {
    /// Database and I/O trouble may pass: retryable. A payload or
    /// proposal that is wrong stays wrong: fatal (dead-lettered with the reason).
    fn from(e: Error) -> Self {
        match e {
            Error::Queue(q) => HandlerError::from(q),
            Error::InvalidProposal(_)
            | Error::IdempotencyConflict(_)
            | Error::InvalidRequest(_)
            | Error::NotFound(_)
            | Error::Json(_) => HandlerError::fatal(e),
            Error::Database(_) | Error::Config(_) | Error::Io(_) => {
                HandlerError::retryable(pgflow_core::error::report(&e))
            }
        }
    }
}
