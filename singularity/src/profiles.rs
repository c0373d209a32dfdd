//! Safety profiles: the guardian's learned thresholds per agent type,
//! broadcast on `guardian_safety_profiles_queue` to every instance. Each
//! instance stores the newest one per agent type (with a version counting
//! the updates applied) in `singularity.safety_profiles`; votes and the
//! proposals' own safety figures use it from then on. An agent type without
//! a stored profile uses [`default_profile`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pgflow_core::consumer::{async_trait, HandlerResult, TxHandler};
use pgflow_core::protocol::{self, SafetyProfile, SafetyProfileUpdate};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::Delivery;
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::Result;
use crate::instance::Instance;
use crate::store::History;

/// The profile of an agent type no update has reached yet: seed 001's
/// example thresholds (success rate 0.95, error rate 10%, latency 3 s,
/// cost 0.10).
pub fn default_profile() -> SafetyProfile {
    SafetyProfile {
        success_rate: 0.95,
        error_threshold: 0.10,
        latency_threshold: 3000.0,
        cost_threshold: 0.10,
    }
}

/// The profile in effect for an agent type at one instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveProfile {
    /// The thresholds.
    pub profile: SafetyProfile,
    /// Updates applied so far; `None` for the default profile.
    pub version: Option<i32>,
    /// Who produced it (`default` for the default profile).
    pub source: String,
}

impl ActiveProfile {
    /// "v3 from genesis_learning_loop", or "default".
    pub fn describe(&self) -> String {
        match self.version {
            Some(v) => format!("v{v} from {}", self.source),
            None => "default".to_string(),
        }
    }
}

/// The profile of `agent_type` at `instance` (the default when none is
/// stored) and the instance's history with it, read in one statement (the two things a vote and a submission
/// need).
pub async fn active_with_history(
    conn: &mut PgConnection,
    instance: &str,
    agent_type: &str,
) -> Result<(ActiveProfile, History)> {
    let (profile, version, source, applied, rolled_back): (
        Option<serde_json::Value>,
        Option<i32>,
        Option<String>,
        f64,
        f64,
    ) = sqlx::query_as(concat!(
        "SELECT sp.profile, sp.version, sp.source, h.applied, h.rolled_back
           FROM (",
        crate::store::history_sql!(),
        ") h
           LEFT JOIN singularity.safety_profiles sp
                  ON sp.instance_id = $1 AND sp.agent_type = $2"
    ))
    .bind(instance)
    .bind(agent_type)
    .fetch_one(conn)
    .await?;
    let history = History {
        applied,
        rolled_back,
    };
    let profile = match profile.zip(version).zip(source) {
        Some(((profile, version), source)) => ActiveProfile {
            profile: serde_json::from_value(profile)?,
            version: Some(version),
            source,
        },
        None => ActiveProfile {
            profile: default_profile(),
            version: None,
            source: "default".into(),
        },
    };
    Ok((profile, history))
}

/// Stores `update` for `instance`; returns the new version, or `None` when
/// it was not applied (the same message again, or older than the stored one).
pub async fn store(
    conn: &mut PgConnection,
    instance: &str,
    update: &SafetyProfileUpdate,
    message_id: uuid::Uuid,
    trace_id: uuid::Uuid,
) -> Result<Option<i32>> {
    let produced: DateTime<Utc> = update.timestamp;
    Ok(sqlx::query_scalar(
        "INSERT INTO singularity.safety_profiles
             (instance_id, agent_type, profile, version, source, produced_at, message_id, trace_id)
         VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
         ON CONFLICT (instance_id, agent_type) DO UPDATE SET
             profile = EXCLUDED.profile,
             version = singularity.safety_profiles.version + 1,
             source = EXCLUDED.source,
             produced_at = EXCLUDED.produced_at,
             message_id = EXCLUDED.message_id,
             trace_id = EXCLUDED.trace_id,
             updated_at = now()
         WHERE singularity.safety_profiles.message_id <> EXCLUDED.message_id
           AND singularity.safety_profiles.produced_at <= EXCLUDED.produced_at
         RETURNING version",
    )
    .bind(instance)
    .bind(&update.agent_type)
    .bind(serde_json::to_value(&update.safety_profile)?)
    .bind(&update.source)
    .bind(produced)
    .bind(message_id)
    .bind(trace_id)
    .fetch_optional(conn)
    .await?)
}

/// Consumer of `guardian_safety_profiles_queue` (broadcast; transactional:
/// the profile is stored in the transaction that acks the update).
pub struct ProfileUpdates {
    inst: Arc<Instance>,
}

impl ProfileUpdates {
    /// The handler for this instance.
    pub fn new(inst: Arc<Instance>) -> Self {
        Self { inst }
    }
}

#[async_trait]
impl TxHandler for ProfileUpdates {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        let update: SafetyProfileUpdate = protocol::decode(d)?;
        let inst = &self.inst;
        match store(tx, &inst.id, &update, d.id, d.trace_id).await? {
            Some(version) => {
                tracing::info!(agent_type = %update.agent_type, version, source = %update.source, "safety profile updated");
                emit(
                    Event::ProfileUpdated,
                    &format!("{} v{version} from {}", update.agent_type, update.source),
                );
            }
            None => {
                inst.counters.duplicate("safety_profile_update");
                tracing::info!(agent_type = %update.agent_type, "safety profile update ignored: already applied or older than the stored one");
            }
        }
        Ok(())
    }
}
