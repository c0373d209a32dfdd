//! Who sent a message: the check that a message speaking for an instance
//! (a vote, a proposal, metrics, a Genesis request) was sent by that
//! instance.
//!
//! The database records the sender in the message's `source` (migration
//! 17): a service role, or an instance's own role (`singularity_2`, a
//! member of `singularity`), can only insert messages whose source is its
//! login role, and cannot change a queued message's source. An operator's
//! session (superuser, or the queue tables' owner) is trusted with any
//! source; a send of its without one is marked [`OPERATOR_PREFIX`]`<login>`.
//!
//! So a consumer accepts a message that names instance `X` as its speaker
//! ([`Validate::speaker`](super::Validate::speaker)) when its source is `X`,
//! or an operator's mark; anything else (another instance, the shared
//! service role, no source) is a fatal failure with the reason.

use crate::consumer::HandlerError;
use crate::delivery::Delivery;

/// The source of a message an operator sent without naming one
/// (`pgflow send` as the owner): `operator:<login role>`.
pub const OPERATOR_PREFIX: &str = "operator:";

/// How the sender of a message relates to the instance it speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The instance itself.
    Instance,
    /// An operator, on the instance's behalf.
    Operator,
}

/// Checks that `d` was sent by `speaker` (or an operator): the fatal
/// failure otherwise names both.
pub fn verify(d: &Delivery, speaker: &str) -> Result<Sender, HandlerError> {
    match d.source.as_deref() {
        Some(s) if s == speaker => Ok(Sender::Instance),
        Some(s) if s.starts_with(OPERATOR_PREFIX) => {
            tracing::info!(
                queue = %d.queue_name,
                message_id = %d.id,
                trace_id = %d.trace_id,
                speaker,
                source = s,
                "message sent by an operator in an instance's name"
            );
            Ok(Sender::Operator)
        }
        other => Err(HandlerError::fatal(format!(
            "sender mismatch: the message speaks for instance {speaker:?} but was sent by {}",
            other.map_or_else(|| "no recorded source".to_string(), |s| format!("{s:?}"))
        ))),
    }
}
