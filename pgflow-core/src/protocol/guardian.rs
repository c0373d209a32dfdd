//! The guardian's messages: execution metrics an instance reports
//! ([`ExecutionMetrics`]), the HIGH-priority [`RollbackTrigger`] sent when
//! they breach the agent's safety profile, and the learned
//! [`SafetyProfileUpdate`] broadcast to every instance.
//!
//! Fields follow seed 001 ("Message Types", 3, 5 and 6).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::proposal::ProposalStatus;
use super::validate::{self, Check, Validate};
use crate::message::MessageType;

/// One measurement of an instance, before or after a change.
///
/// The first three fields are seed 001's (`%{cpu_usage: 45.2, memory: 512.0,
/// error_count: 2}`). The guardian compares against the safety profile's
/// error-rate, latency and cost thresholds, which the seeds do not measure:
/// those are optional here and left out of the JSON when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// CPU usage in percent (finite, >= 0).
    pub cpu_usage: f64,
    /// Memory in MB (finite, >= 0).
    pub memory: f64,
    /// Errors counted in the measurement window.
    pub error_count: u64,
    /// Share of failed operations, in `[0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Latency in milliseconds (finite, >= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Cost of the window, in the unit of the profile's `cost_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl Validate for MetricsSnapshot {
    fn validate(&self) -> Check {
        validate::non_negative("cpu_usage", self.cpu_usage)?;
        validate::non_negative("memory", self.memory)?;
        if let Some(rate) = self.error_rate {
            validate::unit_interval("error_rate", rate)?;
        }
        validate::opt_non_negative("latency_ms", self.latency_ms)?;
        validate::opt_non_negative("cost", self.cost)
    }
}

/// Metrics of one executed proposal, for the guardian
/// (`metrics_to_guardian_queue`, singularity -> centralcloud).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionMetrics {
    /// The proposal.
    pub proposal_id: Uuid,
    /// The executing instance (a rollback trigger goes back to it).
    pub instance_id: String,
    /// The agent that made the change (selects the safety profile).
    pub agent_type: String,
    /// Measured before the change.
    pub metrics_before: MetricsSnapshot,
    /// Measured after the change.
    pub metrics_after: MetricsSnapshot,
    /// The proposal's status when measured.
    pub status: ProposalStatus,
    /// When measured.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for ExecutionMetrics {
    const TYPE: &'static str = "execution_metrics";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for ExecutionMetrics {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("agent_type", &self.agent_type)?;
        self.metrics_before
            .validate()
            .map_err(|e| e.within("metrics_before"))?;
        self.metrics_after
            .validate()
            .map_err(|e| e.within("metrics_after"))
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// Which safety-profile threshold was breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// The error rate exceeded `error_threshold`.
    ErrorRateBreach,
    /// The latency exceeded `latency_threshold`.
    LatencyBreach,
    /// The cost exceeded `cost_threshold`.
    CostBreach,
}

/// The breached threshold and the measured value.
///
/// Seed 001 names the threshold after its metric
/// (`%{error_rate: 0.10, actual: 0.15}`); this type writes it as `threshold`
/// (the metric is the trigger's `reason`) and reads `error_rate`, `latency`,
/// `latency_ms` and `cost` as aliases of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// The threshold of the safety profile (finite, >= 0).
    #[serde(
        alias = "error_rate",
        alias = "latency",
        alias = "latency_ms",
        alias = "cost"
    )]
    pub threshold: f64,
    /// The measured value (finite, >= 0).
    pub actual: f64,
}

impl Validate for Breach {
    fn validate(&self) -> Check {
        validate::non_negative("threshold", self.threshold)?;
        validate::non_negative("actual", self.actual)
    }
}

/// Roll a proposal back, now (`rollback_triggers_queue`, targeted at the
/// executing instance, HIGH priority).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackTrigger {
    /// The proposal to roll back.
    pub proposal_id: Uuid,
    /// The instance that applied it.
    pub instance_id: String,
    /// The breached threshold.
    pub reason: RollbackReason,
    /// Threshold and measured value.
    pub threshold: Breach,
    /// When the guardian decided.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for RollbackTrigger {
    const TYPE: &'static str = "rollback_trigger";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for RollbackTrigger {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        self.threshold.validate().map_err(|e| e.within("threshold"))
    }
}

/// The thresholds an agent type must stay within after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyProfile {
    /// Share of this agent's changes that succeeded, in `[0, 1]`.
    pub success_rate: f64,
    /// Highest acceptable error rate, in `[0, 1]`.
    pub error_threshold: f64,
    /// Highest acceptable latency in milliseconds (finite, >= 0).
    pub latency_threshold: f64,
    /// Highest acceptable cost (finite, >= 0).
    pub cost_threshold: f64,
}

impl Validate for SafetyProfile {
    fn validate(&self) -> Check {
        validate::unit_interval("success_rate", self.success_rate)?;
        validate::unit_interval("error_threshold", self.error_threshold)?;
        validate::non_negative("latency_threshold", self.latency_threshold)?;
        validate::non_negative("cost_threshold", self.cost_threshold)
    }
}

/// A learned safety profile for one agent type
/// (`guardian_safety_profiles_queue`, broadcast to every instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyProfileUpdate {
    /// Seed 001 names one instance here; on the broadcast queue every
    /// instance receives the update, so it is optional: when present, the
    /// instance whose evidence produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The agent type the profile is for.
    pub agent_type: String,
    /// The new profile.
    pub safety_profile: SafetyProfile,
    /// Who produced it (seed 001: `genesis_learning_loop`).
    pub source: String,
    /// When it was produced.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for SafetyProfileUpdate {
    const TYPE: &'static str = "safety_profile_update";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for SafetyProfileUpdate {
    fn validate(&self) -> Check {
        if let Some(instance) = &self.instance_id {
            validate::name("instance_id", instance)?;
        }
        validate::name("agent_type", &self.agent_type)?;
        self.safety_profile
            .validate()
            .map_err(|e| e.within("safety_profile"))?;
        validate::name("source", &self.source)
    }
}
