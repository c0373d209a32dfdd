//! Safety profiles per agent type (`centralcloud.safety_profiles`): the
//! thresholds the guardian enforces and the learning loop adjusts. Every
//! change is a new version; the current profile is the highest version, and
//! an agent type without one gets [`default_profile`] (version 0).

use std::collections::BTreeMap;

use pgflow_core::protocol::SafetyProfile;
use pgflow_core::Result;
use sqlx::PgConnection;

/// The highest error rate accepted by default (seed 001's example).
pub const DEFAULT_ERROR_THRESHOLD: f64 = 0.10;
/// The highest latency accepted by default, in milliseconds (seed 001).
pub const DEFAULT_LATENCY_THRESHOLD: f64 = 3000.0;
/// The highest cost accepted by default (seed 001).
pub const DEFAULT_COST_THRESHOLD: f64 = 0.10;
/// The success rate assumed for an agent type nothing is known about.
pub const DEFAULT_SUCCESS_RATE: f64 = 0.95;

/// The profile of an agent type that has none stored yet.
pub fn default_profile() -> SafetyProfile {
    SafetyProfile {
        success_rate: DEFAULT_SUCCESS_RATE,
        error_threshold: DEFAULT_ERROR_THRESHOLD,
        latency_threshold: DEFAULT_LATENCY_THRESHOLD,
        cost_threshold: DEFAULT_COST_THRESHOLD,
    }
}

/// A stored (or default) profile and its version (0 = the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The version; 0 when none is stored.
    pub version: i32,
    /// The profile.
    pub profile: SafetyProfile,
}

/// The current profile of `agent_type`.
pub async fn current(conn: &mut PgConnection, agent_type: &str) -> Result<Versioned> {
    let row: Option<(i32, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT version, success_rate, error_threshold, latency_threshold, cost_threshold
           FROM centralcloud.safety_profiles
          WHERE agent_type = $1
          ORDER BY version DESC
          LIMIT 1",
    )
    .bind(agent_type)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some((version, success_rate, error_threshold, latency_threshold, cost_threshold)) => {
            Versioned {
                version,
                profile: SafetyProfile {
                    success_rate,
                    error_threshold,
                    latency_threshold,
                    cost_threshold,
                },
            }
        }
        None => Versioned {
            version: 0,
            profile: default_profile(),
        },
    })
}

/// The current profile of every agent type that has one stored.
pub async fn all_current(conn: &mut PgConnection) -> Result<BTreeMap<String, Versioned>> {
    let rows: Vec<(String, i32, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT DISTINCT ON (agent_type)
                agent_type, version, success_rate, error_threshold, latency_threshold, cost_threshold
           FROM centralcloud.safety_profiles
          ORDER BY agent_type, version DESC",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(agent, version, success_rate, error_threshold, latency_threshold, cost_threshold)| {
                let profile = SafetyProfile {
                    success_rate,
                    error_threshold,
                    latency_threshold,
                    cost_threshold,
                };
                (agent, Versioned { version, profile })
            },
        )
        .collect())
}

/// Stores `profile` as version `version` of `agent_type`.
pub async fn insert(
    conn: &mut PgConnection,
    agent_type: &str,
    version: i32,
    profile: &SafetyProfile,
    evidence: &serde_json::Value,
    learning_run_id: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO centralcloud.safety_profiles
             (agent_type, version, success_rate, error_threshold, latency_threshold,
              cost_threshold, evidence, learning_run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(agent_type)
    .bind(version)
    .bind(profile.success_rate)
    .bind(profile.error_threshold)
    .bind(profile.latency_threshold)
    .bind(profile.cost_threshold)
    .bind(evidence)
    .bind(learning_run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
