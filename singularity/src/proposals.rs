//! The proposal queue: submitting a proposal stores it in
//! `singularity.proposals` (status `submitted`) and sends it for consensus
//! on `proposals_for_consensus_queue` in the same transaction, under a new
//! trace id that every later message of its journey carries. Both the CLI
//! (`singularity propose`) and the HTTP API (`POST /proposals`) come here.
//!
//! A submission may carry an idempotency key: a repeat with the same key
//! (a client retrying after a timeout, also concurrently) stores and sends
//! nothing and is answered with the first proposal (`repeat: true`); the
//! same key with a different proposal is refused
//! ([`Error::IdempotencyConflict`]).

use chrono::Utc;
use pgflow_core::protocol::{self, CodeChange, ProposalForConsensus, ProposalSafety, Validate};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Pgflow, QueueName};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::profiles;
use crate::store::ProposalState;
use crate::submission_spool::{is_unreachable, SubmissionSpool};

fn default_impact() -> f64 {
    5.0
}

fn default_risk() -> f64 {
    1.0
}

fn default_cost() -> f64 {
    1.0
}

/// A proposal to submit (the body of `POST /proposals`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProposal {
    /// The agent that made the change (for example `BugFixerAgent`).
    pub agent_type: String,
    /// The file to change, relative to the workspace.
    pub file: String,
    /// The file's complete new content.
    pub change: String,
    /// Expected benefit, 0-10 (default 5).
    #[serde(default = "default_impact")]
    pub impact_score: f64,
    /// Expected risk, 0-10 (default 1).
    #[serde(default = "default_risk")]
    pub risk_score: f64,
    /// Relative cost (default 1.0, an ordinary change).
    #[serde(default = "default_cost")]
    pub cost_factor: f64,
    /// The client's key for this submission (1-255 printable ASCII
    /// characters, e.g. a UUID): a repeat with the same key is answered
    /// with the first proposal instead of submitting the change again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl NewProposal {
    /// Whether `other` proposes the same change (every field but the
    /// idempotency key is equal).
    pub fn same_change(&self, other: &NewProposal) -> bool {
        (
            &self.agent_type,
            &self.file,
            &self.change,
            self.impact_score,
            self.risk_score,
            self.cost_factor,
        ) == (
            &other.agent_type,
            &other.file,
            &other.change,
            other.impact_score,
            other.risk_score,
            other.cost_factor,
        )
    }
}

/// Refuses an idempotency key that is empty, longer than
/// [`MAX_IDEMPOTENCY_KEY_LEN`] or not printable ASCII.
fn check_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(k)
            if k.is_empty()
                || k.len() > MAX_IDEMPOTENCY_KEY_LEN
                || !k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(Error::InvalidProposal(format!(
                "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters \
                 without spaces, got {} bytes",
                k.len()
            )))
        }
        _ => Ok(()),
    }
}

/// A stored and published proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The proposal id.
    pub proposal_id: Uuid,
    /// The trace id of its journey.
    pub trace_id: Uuid,
    /// Its status (`submitted`, `spooled`, or, for a repeat, the first
    /// proposal's current status).
    pub status: String,
    /// Whether this answers a repeat (same idempotency key) with the first
    /// proposal: nothing was stored or sent this time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
}

/// Stores `p` for `instance` and publishes it for consensus, atomically.
///
/// Refused with [`Error::InvalidProposal`] (nothing stored, nothing sent)
/// when a field breaks the protocol's rules: empty agent type, a path that
/// is absolute or contains `..`, a negative or non-finite score, content
/// over the size limits.
pub async fn submit(pg: &Pgflow, instance: &str, p: NewProposal) -> Result<Submitted> {
    submit_with_ids(pg, instance, p, Uuid::now_v7(), Uuid::now_v7()).await
}

/// As [`submit`], but a proposal that is valid while PostgreSQL cannot be
/// reached is kept in `spool` (status `spooled`) and submitted, with the
/// same ids, when the database is back.
pub async fn submit_or_spool(
    pg: &Pgflow,
    spool: &SubmissionSpool,
    instance: &str,
    p: NewProposal,
) -> Result<Submitted> {
    check(instance, &p)?;
    let (id, trace_id) = (Uuid::now_v7(), Uuid::now_v7());
    match submit_with_ids(pg, instance, p.clone(), id, trace_id).await {
        Err(e) if is_unreachable(&e) => spool.put(id, trace_id, p).await,
        other => other,
    }
}

/// Checks `p` against the protocol's rules and size limits without the
/// database (what [`submit`] would refuse as invalid).
pub fn check(instance: &str, p: &NewProposal) -> Result<()> {
    check_key(p.idempotency_key.as_deref())?;
    let msg = message(instance, p, Uuid::nil());
    msg.validate()
        .map_err(|e| Error::InvalidProposal(e.to_string()))?;
    protocol::encode(&msg).map_err(invalid_if_too_large)?;
    Ok(())
}

/// Submits `p` under the given ids; idempotent (a proposal already stored
/// under `id` is left as it is and not sent again).
pub async fn submit_with_ids(
    pg: &Pgflow,
    instance: &str,
    p: NewProposal,
    id: Uuid,
    trace_id: Uuid,
) -> Result<Submitted> {
    let span = tracing::info_span!("propose", proposal_id = %id, trace_id = %trace_id, agent_type = %p.agent_type);
    store_and_send(pg, instance, p, id, trace_id)
        .instrument(span)
        .await
}

fn message(instance: &str, p: &NewProposal, id: Uuid) -> ProposalForConsensus {
    ProposalForConsensus {
        proposal_id: id,
        instance_id: instance.to_string(),
        agent_type: p.agent_type.clone(),
        code_change: CodeChange {
            file: p.file.clone(),
            change: p.change.clone(),
        },
        impact_score: p.impact_score,
        risk_score: p.risk_score,
        safety_profile: ProposalSafety {
            success_rate: 1.0,
            cost_factor: p.cost_factor,
        },
        timestamp: Utc::now(),
        retry_count: 0,
        max_retries: 3,
    }
}

/// The transaction of [`submit_with_ids`].
async fn store_and_send(
    pg: &Pgflow,
    instance: &str,
    p: NewProposal,
    id: Uuid,
    trace_id: Uuid,
) -> Result<Submitted> {
    let queue = QueueName::new(protocol::queues::PROPOSALS_FOR_CONSENSUS)?;
    check_key(p.idempotency_key.as_deref())?;
    let mut msg = message(instance, &p, id);
    msg.validate()
        .map_err(|e| Error::InvalidProposal(e.to_string()))?;
    let mut tx = pg.pool().begin().await?;
    // The agent's record as this instance sees it: its own history, else
    // the safety profile's figure.
    let (profile, history) =
        profiles::active_with_history(&mut tx, instance, &p.agent_type).await?;
    msg.safety_profile.success_rate = history
        .success_rate()
        .unwrap_or(profile.profile.success_rate);
    let out = protocol::encode(&msg)
        .map_err(invalid_if_too_large)?
        .trace_id(trace_id)
        .source(instance);
    let inserted = sqlx::query(
        "INSERT INTO singularity.proposals
             (id, instance_id, agent_type, file, change, impact_score, risk_score, cost_factor,
              status, trace_id, submitted_at, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'submitted', $9, now(), $10)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(instance)
    .bind(&p.agent_type)
    .bind(&p.file)
    .bind(&p.change)
    .bind(p.impact_score)
    .bind(p.risk_score)
    .bind(p.cost_factor)
    .bind(trace_id)
    .bind(&p.idempotency_key)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        // A repeat of a submission with the same key (a concurrent first
        // one has committed: the insert waited for it).
        if let Some(first) = first_with_key(pg, instance, &p).await? {
            if first.proposal_id != id {
                tracing::info!(first = %first.proposal_id, "repeat of an idempotent submission; answered with the first proposal");
                return Ok(first);
            }
        }
        // Stored (and sent) before: a spool replay after a crash.
        tracing::info!("proposal already submitted; not sent again");
        return Ok(Submitted {
            proposal_id: id,
            trace_id,
            status: ProposalState::Submitted.as_str().to_string(),
            repeat: false,
        });
    }
    let sent = pg.send_in_tx(&mut tx, &queue, &[out], true).await;
    if let Err(e) = sent {
        emit(
            Event::PublishFailed,
            &format!("proposal_for_consensus {id}: {e}"),
        );
        return Err(invalid_if_too_large(e));
    }
    if let Err(e) = tx.commit().await {
        emit(
            Event::PublishFailed,
            &format!("proposal_for_consensus {id}: {e}"),
        );
        return Err(e.into());
    }
    tracing::info!(file = %p.file, "proposal stored and sent for consensus");
    emit(Event::ProposalPublished, &id.to_string());
    Ok(Submitted {
        proposal_id: id,
        trace_id,
        status: ProposalState::Submitted.as_str().to_string(),
        repeat: false,
    })
}

/// The proposal stored under `p`'s idempotency key (as a repeat's
/// answer), if `p` has a key and one is; refused when it proposes a
/// different change.
async fn first_with_key(pg: &Pgflow, instance: &str, p: &NewProposal) -> Result<Option<Submitted>> {
    let Some(key) = p.idempotency_key.as_deref() else {
        return Ok(None);
    };
    let row: Option<(Uuid, Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, trace_id, status,
                (agent_type, file, change, impact_score, risk_score, cost_factor)
                    IS NOT DISTINCT FROM
                ($3::text, $4::text, $5::text, $6::float8, $7::float8, $8::float8)
           FROM singularity.proposals
          WHERE instance_id = $1 AND idempotency_key = $2",
    )
    .bind(instance)
    .bind(key)
    .bind(&p.agent_type)
    .bind(&p.file)
    .bind(&p.change)
    .bind(p.impact_score)
    .bind(p.risk_score)
    .bind(p.cost_factor)
    .fetch_optional(pg.pool())
    .await?;
    match row {
        None => Ok(None),
        Some((id, trace_id, status, true)) => Ok(Some(Submitted {
            proposal_id: id,
            trace_id,
            status,
            repeat: true,
        })),
        Some((id, ..)) => Err(key_conflict(key, id)),
    }
}

/// The error for `key` reused, for a different change, after proposal `first`.
pub(crate) fn key_conflict(key: &str, first: Uuid) -> Error {
    Error::IdempotencyConflict(format!(
        "idempotency key {key:?} was already used for proposal {first} with a different \
         change; send a new key for a new proposal"
    ))
}

/// A payload over the queue's size limit is the proposal's fault.
fn invalid_if_too_large(e: pgflow_core::Error) -> Error {
    match e {
        pgflow_core::Error::PayloadTooLarge { .. } | pgflow_core::Error::InvalidMessage(_) => {
            Error::InvalidProposal(e.to_string())
        }
        other => Error::Queue(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_take_defaults_and_refuse_unknown_fields() {
        let p: NewProposal =
            serde_json::from_str(r#"{"agent_type":"A","file":"a.rs","change":"x"}"#).unwrap();
        assert_eq!(
            (p.impact_score, p.risk_score, p.cost_factor),
            (5.0, 1.0, 1.0)
        );
        assert!(serde_json::from_str::<NewProposal>(
            r#"{"agent_type":"A","file":"a.rs","change":"x","bogus":1}"#
        )
        .is_err());
        assert_eq!(p.idempotency_key, None);
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut p: NewProposal = serde_json::from_str(
            r#"{"agent_type":"A","file":"a.rs","change":"x","idempotency_key":"k-1"}"#,
        )
        .unwrap();
        assert!(check("singularity_1", &p).is_ok());
        let same = p.clone();
        for bad in ["", "has space", "tab\t", &"k".repeat(256)] {
            p.idempotency_key = Some(bad.to_string());
            assert!(
                matches!(check("singularity_1", &p), Err(Error::InvalidProposal(_))),
                "{bad:?}"
            );
        }
        assert!(p.same_change(&same));
        p.change.push('y');
        assert!(!p.same_change(&same));
    }
}
