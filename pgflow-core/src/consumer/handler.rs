//! What a consumer calls for each message: a [`Handler`] (or a
//! [`TxHandler`] that writes in the ack's transaction), and the outcome it
//! returns: success, a retryable failure, or a fatal one (straight to the DLQ).

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::client::Failure;
use crate::delivery::Delivery;
use crate::message::MessageType;

/// Why a handler did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Another attempt may succeed (after the queue's backoff).
    #[error("{0}")]
    Retryable(String),
    /// No attempt can succeed: the message goes to the DLQ at once.
    #[error("{0}")]
    Fatal(String),
}

impl HandlerError {
    /// A retryable failure.
    pub fn retryable(e: impl Display) -> Self {
        Self::Retryable(e.to_string())
    }

    /// A fatal failure.
    pub fn fatal(e: impl Display) -> Self {
        Self::Fatal(e.to_string())
    }

    /// True for [`HandlerError::Fatal`].
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_))
    }

    pub(crate) fn into_failure(self) -> Failure {
        match self {
            Self::Retryable(e) => Failure::retryable(e),
            Self::Fatal(e) => Failure::fatal(e),
        }
    }
}

impl From<crate::Error> for HandlerError {
    /// Queue errors are retryable, except a payload that cannot be parsed.
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::InvalidJson(_) | crate::Error::InvalidMessage(_) => Self::fatal(e),
            other => Self::Retryable(crate::error::report(&other)),
        }
    }
}

/// What a handler returns.
pub type HandlerResult = std::result::Result<(), HandlerError>;

/// Handles one message at a time.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Processes `msg`. Must be idempotent: delivery is at least once.
    async fn handle(&self, msg: &Delivery) -> HandlerResult;
}

/// Handles one message inside the transaction that acks it: the handler's
/// writes and the ack commit together, or not at all.
#[async_trait]
pub trait TxHandler: Send + Sync + 'static {
    /// Processes `msg`, writing through `tx`. Returning an error rolls the
    /// transaction back.
    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult;
}

/// A [`Handler`] from an async closure that takes the delivery.
pub fn handler_fn<F, Fut>(f: F) -> impl Handler
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    FnHandler(f)
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, msg: &Delivery) -> HandlerResult {
        (self.0)(msg.clone()).await
    }
}

/// A [`Handler`] for messages of one protocol type `T`: the payload is
/// decoded before `f` sees it. A message of another type, a newer schema
/// version or a payload that does not decode is a fatal failure with the
/// reason (it goes to the DLQ, the consumer keeps going).
pub fn typed<T, F, Fut>(f: F) -> impl Handler
where
    T: MessageType + Send + Sync + 'static,
    F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Typed(f, PhantomData::<fn() -> T>)
}

struct Typed<F, T>(F, PhantomData<fn() -> T>);

/// Decodes `msg` as `T`, or says why it cannot be.
pub(crate) fn decode_as<T: MessageType>(msg: &Delivery) -> Result<T, HandlerError> {
    if msg.msg_type != T::TYPE {
        return Err(HandlerError::fatal(format!(
            "unknown message type {:?} on queue {} (this consumer handles {:?})",
            msg.msg_type,
            msg.queue_name,
            T::TYPE
        )));
    }
    if msg.schema_version > T::SCHEMA_VERSION {
        return Err(HandlerError::fatal(format!(
            "unsupported schema version {} of {:?} (this consumer knows up to {})",
            msg.schema_version,
            T::TYPE,
            T::SCHEMA_VERSION
        )));
    }
    serde_json::from_str::<T>(msg.payload.get())
        .map_err(|e| HandlerError::fatal(format!("malformed {:?} payload: {e}", T::TYPE)))
}

#[async_trait]
impl<T, F, Fut> Handler for Typed<F, T>
where
    T: MessageType + Send + Sync + 'static,
    F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, msg: &Delivery) -> HandlerResult {
        let payload = decode_as::<T>(msg)?;
        (self.0)(payload, msg.clone()).await
    }
}
