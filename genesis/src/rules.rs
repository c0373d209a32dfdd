//! The rule engine (seed 000's `Genesis.RuleEngine.apply_rule`): checks a
//! learned rule's structure and applies it as the next version of its rule,
//! keeping every version.
//!
//! A rule is a JSON object with
//!
//! * `condition` (required): when the rule applies, a non-empty string or
//!   a non-empty object / array;
//! * `action` (required): what it does, likewise;
//! * `name` (optional): which rule of the namespace this is (letters,
//!   digits, `_ . : -`, at most 100 bytes); default `default`.
//!
//! Other keys are kept as they are. The namespace must be made of letters,
//! digits and `_ . : -`, and the confidence must be in `[0, 1]`.
//! `genesis.rules` holds the active version of each `(namespace, name)`,
//! `genesis.rule_versions` all of them. Applying the same request twice
//! (same `request_id`) applies it once.

use chrono::Utc;
use pgflow_core::protocol::{GenesisRuleUpdate, ResultStatus, RuleUpdateResult};
use sqlx::PgConnection;
use uuid::Uuid;

/// The rule name used when a rule has none.
pub const DEFAULT_RULE_NAME: &str = "default";
/// Longest rule name.
const MAX_NAME_LEN: usize = 100;

/// A rule that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRule {
    /// The rule's name within its namespace.
    pub name: String,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn non_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => !s.trim().is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Checks the structure of `update`; the error says what is wrong.
pub fn check(update: &GenesisRuleUpdate) -> Result<CheckedRule, String> {
    if !is_identifier(&update.namespace) {
        return Err(format!(
            "invalid rule: namespace {:?} must be 1-{MAX_NAME_LEN} letters, digits, '_', '.', ':' or '-'",
            update.namespace
        ));
    }
    if !(0.0..=1.0).contains(&update.confidence) {
        return Err(format!(
            "invalid rule: confidence must be in [0, 1], got {}",
            update.confidence
        ));
    }
    let Some(rule) = update.rule.as_object() else {
        return Err("invalid rule: the rule must be a JSON object".to_string());
    };
    for field in ["condition", "action"] {
        match rule.get(field) {
            None => return Err(format!("invalid rule: missing `{field}`")),
            Some(v) if !non_empty(v) => {
                return Err(format!(
                    "invalid rule: `{field}` must be a non-empty string, object or array"
                ))
            }
            Some(_) => {}
        }
    }
    let name = match rule.get("name") {
        None => DEFAULT_RULE_NAME.to_string(),
        Some(serde_json::Value::String(n)) if is_identifier(n) => n.clone(),
        Some(other) => {
            return Err(format!(
                "invalid rule: `name` must be 1-{MAX_NAME_LEN} letters, digits, '_', '.', ':' or '-', got {other}"
            ))
        }
    };
    Ok(CheckedRule { name })
}

const APPLY_SQL: &str = r#"
WITH active AS (
    INSERT INTO genesis.rules AS r (namespace, name, version, rule, confidence)
    VALUES ($1, $2, 1, $3, $4)
    ON CONFLICT (namespace, name) DO UPDATE
       SET version = r.version + 1, rule = EXCLUDED.rule, confidence = EXCLUDED.confidence,
           updated_at = now()
    RETURNING version
)
INSERT INTO genesis.rule_versions
    (namespace, name, version, rule, confidence, request_id, instance_id, trace_id, published_at)
SELECT $1, $2, active.version, $3, $4, $5, $6, $7, $8 FROM active
RETURNING version
"#;

/// Applies a checked rule as its next version; returns the version. A
/// request already applied is not applied again (its version is returned).
pub async fn apply(
    conn: &mut PgConnection,
    update: &GenesisRuleUpdate,
    rule: &CheckedRule,
    trace_id: Uuid,
) -> Result<i32, sqlx::Error> {
    let done: Option<i32> =
        sqlx::query_scalar("SELECT version FROM genesis.rule_versions WHERE request_id = $1")
            .bind(update.request_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(version) = done {
        return Ok(version);
    }
    sqlx::query_scalar(APPLY_SQL)
        .bind(&update.namespace)
        .bind(&rule.name)
        .bind(&update.rule)
        .bind(update.confidence)
        .bind(update.request_id)
        .bind(&update.instance_id)
        .bind(trace_id)
        .bind(update.timestamp)
        .fetch_one(conn)
        .await
}

/// The result of `update`: completed, or failed with `error`.
pub fn result(update: &GenesisRuleUpdate, error: Option<String>) -> RuleUpdateResult {
    RuleUpdateResult {
        request_id: update.request_id,
        instance_id: update.instance_id.clone(),
        status: ResultStatus::of(error.as_deref()),
        namespace: update.namespace.clone(),
        confidence: update.confidence,
        error,
        timestamp: Utc::now(),
    }
}

/// Checks and applies `update` on `conn`; the result says how it went.
/// Only database errors are errors.
pub async fn run(
    conn: &mut PgConnection,
    update: &GenesisRuleUpdate,
    trace_id: Uuid,
) -> Result<RuleUpdateResult, sqlx::Error> {
    match check(update) {
        Err(reason) => {
            tracing::warn!(namespace = %update.namespace, %reason, "rule refused");
            Ok(result(update, Some(reason)))
        }
        Ok(rule) => {
            let version = apply(conn, update, &rule, trace_id).await?;
            tracing::info!(
                namespace = %update.namespace, rule = %rule.name, version,
                confidence = update.confidence, "applied rule"
            );
            Ok(result(update, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(rule: serde_json::Value) -> GenesisRuleUpdate {
        GenesisRuleUpdate {
            request_id: Uuid::now_v7(),
            instance_id: "singularity_1".into(),
            namespace: "code_quality".into(),
            rule,
            confidence: 0.92,
            timestamp: Utc::now(),
        }
    }

    #[test]
    fn a_rule_needs_a_condition_and_an_action() {
        let ok = update(serde_json::json!({"condition": "x > 1", "action": {"warn": true}}));
        assert_eq!(check(&ok).unwrap().name, DEFAULT_RULE_NAME);
        let named = update(serde_json::json!({"name": "r1", "condition": "c", "action": "a"}));
        assert_eq!(check(&named).unwrap().name, "r1");
        let e = check(&update(serde_json::json!({"action": "a"}))).unwrap_err();
        assert!(e.contains("missing `condition`"), "{e}");
        let e = check(&update(serde_json::json!({"condition": "", "action": "a"}))).unwrap_err();
        assert!(e.contains("`condition` must be"), "{e}");
        let e = check(&update(
            serde_json::json!({"name": "a b", "condition": "c", "action": "a"}),
        ))
        .unwrap_err();
        assert!(e.contains("`name`"), "{e}");
    }

    #[test]
    fn namespace_and_confidence_are_checked() {
        let mut u = update(serde_json::json!({"condition": "c", "action": "a"}));
        u.namespace = "has space".into();
        assert!(check(&u).unwrap_err().contains("namespace"));
        u.namespace = "ok".into();
        u.confidence = 1.5;
        assert!(check(&u).unwrap_err().contains("confidence"));
    }

    #[test]
    fn results_echo_the_request() {
        let u = update(serde_json::json!({}));
        let r = result(&u, None);
        assert_eq!(
            (r.status, r.namespace.as_str(), r.confidence),
            (ResultStatus::Completed, "code_quality", 0.92)
        );
        let r = result(&u, Some("bad".into()));
        assert_eq!(
            (r.status, r.error.as_deref()),
            (ResultStatus::Failed, Some("bad"))
        );
    }
}
