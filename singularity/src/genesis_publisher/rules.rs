//! Rules learned from this instance's own record: its applied changes that
//! were not rolled back are its patterns; grouped by agent type they make
//! one rule each, with the agent type's success rate at this instance as
//! the rule's confidence.
//!
//! For an agent type with `applied` changes still in place and
//! `rolled_back` undone ones (only agent types with at least one applied
//! change make a rule):
//!
//! * **namespace**: `singularity.<agent type>` (characters Genesis does
//!   not accept in a namespace, anything but letters, digits and
//!   `_ . : -`, become `_`; at most 100 bytes);
//! * **confidence**: `applied / (applied + rolled_back)`;
//! * **rule**: a JSON object Genesis's rule engine accepts:
//!
//! ```json
//! {
//!   "name": "bug_fix_changes",
//!   "condition": {"agent_type": "BugFixerAgent", "pattern_type": "bug_fix",
//!                 "file_extensions": ["py", "rs"]},
//!   "action": {"apply_pattern": "bug_fix", "agent_type": "BugFixerAgent",
//!              "expected_success_rate": 0.75},
//!   "evidence": {"instance_id": "singularity_1", "applied": 3, "rolled_back": 1,
//!                "last_applied_at": "2026-11-25T10:00:00Z"}
//! }
//! ```
//!
//! (`file_extensions` are those of the files the kept changes touched, at
//! most [`MAX_EXTENSIONS`]; the pattern type follows the agent's name as
//! the pattern miner's does.)

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;

use crate::error::Result;
use crate::patterns::pattern_type;

/// Longest namespace or rule name Genesis accepts.
pub const MAX_NAME_LEN: usize = 100;
/// Most file extensions a rule's condition lists.
pub const MAX_EXTENSIONS: usize = 20;
/// The namespace prefix of every rule singularity learns.
pub const NAMESPACE_PREFIX: &str = "singularity.";

/// A rule learned from one agent type's record at this instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnedRule {
    /// The agent type.
    pub agent_type: String,
    /// `singularity.<agent type>`.
    pub namespace: String,
    /// Changes applied and still in place.
    pub applied: i64,
    /// Changes applied, then rolled back.
    pub rolled_back: i64,
    /// `applied / (applied + rolled_back)`, in `(0, 1]`.
    pub confidence: f64,
    /// The rule (`name`, `condition`, `action`, `evidence`).
    pub rule: serde_json::Value,
}

/// One agent type's record, as the query returns it.
#[derive(Debug, sqlx::FromRow)]
struct Record {
    agent_type: String,
    applied: i64,
    rolled_back: i64,
    last_applied_at: Option<DateTime<Utc>>,
    extensions: Vec<String>,
}

/// `name` restricted to what Genesis accepts in a namespace or rule name:
/// other characters become `_`, cut to `max` bytes.
pub fn identifier(name: &str, max: usize) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// The namespace of `agent_type`'s rules.
pub fn namespace(agent_type: &str) -> String {
    let room = MAX_NAME_LEN - NAMESPACE_PREFIX.len();
    format!("{NAMESPACE_PREFIX}{}", identifier(agent_type, room))
}

fn pattern_name(agent_type: &str) -> &'static str {
    match pattern_type(agent_type) {
        pgflow_core::protocol::PatternType::BugFix => "bug_fix",
        pgflow_core::protocol::PatternType::Optimization => "optimization",
        pgflow_core::protocol::PatternType::Refactoring => "refactoring",
    }
}

impl Record {
    fn into_rule(self, instance: &str) -> LearnedRule {
        let outcomes = self.applied + self.rolled_back;
        let confidence = if outcomes > 0 {
            self.applied as f64 / outcomes as f64
        } else {
            0.0
        };
        let pattern = pattern_name(&self.agent_type);
        let mut extensions = self.extensions;
        extensions.truncate(MAX_EXTENSIONS);
        let rule = json!({
            "name": format!("{pattern}_changes"),
            "condition": {
                "agent_type": self.agent_type,
                "pattern_type": pattern,
                "file_extensions": extensions,
            },
            "action": {
                "apply_pattern": pattern,
                "agent_type": self.agent_type,
                "expected_success_rate": confidence,
            },
            "evidence": {
                "instance_id": instance,
                "applied": self.applied,
                "rolled_back": self.rolled_back,
                "last_applied_at": self.last_applied_at,
            },
        });
        LearnedRule {
            namespace: namespace(&self.agent_type),
            agent_type: self.agent_type,
            applied: self.applied,
            rolled_back: self.rolled_back,
            confidence,
            rule,
        }
    }
}

/// The rules `instance` has learned, one per agent type with at least one
/// applied change, by agent type.
pub async fn learned(conn: &mut PgConnection, instance: &str) -> Result<Vec<LearnedRule>> {
    let records: Vec<Record> = sqlx::query_as(
        r"SELECT agent_type,
                 count(*) FILTER (WHERE status = 'applied') AS applied,
                 count(*) FILTER (WHERE status = 'rolled_back') AS rolled_back,
                 max(applied_at) FILTER (WHERE status = 'applied') AS last_applied_at,
                 coalesce(array_agg(DISTINCT lower(substring(file FROM '\.([A-Za-z0-9]{1,16})$')))
                              FILTER (WHERE status = 'applied' AND file ~ '\.[A-Za-z0-9]{1,16}$'),
                          '{}') AS extensions
            FROM singularity.proposals
           WHERE instance_id = $1 AND status IN ('applied', 'rolled_back')
           GROUP BY agent_type
          HAVING count(*) FILTER (WHERE status = 'applied') > 0
           ORDER BY agent_type",
    )
    .bind(instance)
    .fetch_all(conn)
    .await?;
    Ok(records.into_iter().map(|r| r.into_rule(instance)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_keep_to_what_genesis_accepts() {
        assert_eq!(namespace("BugFixerAgent"), "singularity.BugFixerAgent");
        assert_eq!(namespace("my agent/v2"), "singularity.my_agent_v2");
        assert_eq!(namespace("é"), "singularity._");
        let long = namespace(&"x".repeat(300));
        assert_eq!(long.len(), MAX_NAME_LEN);
    }

    #[test]
    fn a_record_becomes_a_rule() {
        let r = Record {
            agent_type: "BugFixerAgent".into(),
            applied: 3,
            rolled_back: 1,
            last_applied_at: None,
            extensions: vec!["py".into(), "rs".into()],
        }
        .into_rule("singularity_1");
        assert_eq!(r.confidence, 0.75);
        assert_eq!(r.namespace, "singularity.BugFixerAgent");
        assert_eq!(r.rule["name"], "bug_fix_changes");
        assert_eq!(r.rule["condition"]["agent_type"], "BugFixerAgent");
        assert_eq!(r.rule["condition"]["file_extensions"], json!(["py", "rs"]));
        assert_eq!(r.rule["action"]["expected_success_rate"], 0.75);
        assert_eq!(r.rule["evidence"]["rolled_back"], 1);
    }
}
