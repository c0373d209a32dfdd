//! Learning from what worked: patterns instances discover
//! ([`PatternDiscovered`]) and the learning loop's report to Genesis
//! ([`LearningLoopCompleted`]).
//!
//! Fields follow seed 001 ("Message Types", 4 and 7).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate::{self, Check, Validate};
use crate::message::MessageType;

/// The kind of a pattern (seed 001: refactoring, optimization or bug_fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// A structural improvement.
    Refactoring,
    /// A performance improvement.
    Optimization,
    /// A fix.
    BugFix,
}

/// The code of a pattern: what it looked like, what it became, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodePattern {
    /// The code before (may be empty for pure additions; at most
    /// [`validate::MAX_CODE_LEN`] bytes).
    pub before: String,
    /// The code after (at most [`validate::MAX_CODE_LEN`] bytes).
    pub after: String,
    /// What the pattern does (for example "Extract function for readability").
    pub description: String,
}

impl Validate for CodePattern {
    fn validate(&self) -> Check {
        validate::code("before", &self.before)?;
        validate::code("after", &self.after)?;
        validate::text("description", &self.description)
    }
}

/// A pattern an instance found in its successful changes
/// (`patterns_for_aggregator_queue`, singularity -> centralcloud).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternDiscovered {
    /// The discovering instance.
    pub instance_id: String,
    /// The kind of pattern.
    pub pattern_type: PatternType,
    /// The pattern.
    pub code_pattern: CodePattern,
    /// Share of the changes following it that succeeded, in `[0, 1]`.
    pub success_rate: f64,
    /// The agent that produced the changes.
    pub agent_type: String,
    /// When discovered.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for PatternDiscovered {
    const TYPE: &'static str = "pattern_discovered";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for PatternDiscovered {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        self.code_pattern
            .validate()
            .map_err(|e| e.within("code_pattern"))?;
        validate::unit_interval("success_rate", self.success_rate)?;
        validate::name("agent_type", &self.agent_type)
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// A pass of the learning loop finished (`learning_loop_completed_queue`,
/// centralcloud -> genesis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearningLoopCompleted {
    /// Patterns the pass looked at.
    pub patterns_processed: u64,
    /// Rules it produced.
    pub rules_generated: u64,
    /// Safety-profile thresholds it changed.
    pub thresholds_updated: u64,
    /// When the pass finished.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for LearningLoopCompleted {
    const TYPE: &'static str = "learning_loop_completed";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for LearningLoopCompleted {
    /// Counts and a timestamp: the shape says it all.
    fn validate(&self) -> Check {
        Ok(())
    }
}
