//! The pattern aggregator: merges the patterns instances discover
//! (`patterns_for_aggregator_queue`) into `centralcloud.patterns`, one row
//! per distinct pattern, keeping the number of reports, the set of
//! instances that reported it, the latest success rate of each instance
//! and their mean. Every report is also kept in
//! `centralcloud.pattern_reports` (evidence for the learning loop; a report
//! delivered twice counts once).
//!
//! Two reports are the same pattern when they have the same pattern type,
//! agent type and code before and after, compared with runs of whitespace
//! collapsed ([`normalize`]); the description is free text and is not part
//! of the identity (the first one is kept).

use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{self, PatternDiscovered};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::Delivery;
use sqlx::PgConnection;

/// Code with every run of whitespace collapsed to one space, trimmed.
pub fn normalize(code: &str) -> String {
    code.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The merged state of one pattern after a report.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Merged {
    /// The pattern's key.
    pub pattern_key: String,
    /// Reports so far.
    pub occurrences: i64,
    /// Distinct instances that reported it.
    pub instances: Vec<String>,
    /// Mean of the instances' latest success rates.
    pub success_rate: f64,
}

/// Consumer of `patterns_for_aggregator_queue`.
pub struct PatternHandler;

#[async_trait]
impl TxHandler for PatternHandler {
    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult {
        let p: PatternDiscovered = protocol::decode(msg)?;
        emit(
            Event::PatternReceived,
            &format!(
                "instance_id={} agent_type={} trace_id={}",
                p.instance_id, p.agent_type, msg.trace_id
            ),
        );
        match merge(tx, &p, msg).await.map_err(HandlerError::from)? {
            Some(m) => tracing::info!(
                pattern_key = %m.pattern_key,
                instance_id = %p.instance_id,
                occurrences = m.occurrences,
                instances = ?m.instances,
                success_rate = m.success_rate,
                "pattern merged"
            ),
            None => tracing::info!("pattern report already recorded; duplicate ignored"),
        }
        Ok(())
    }
}

/// Merges one report; `None` when this message was merged before.
pub async fn merge(
    conn: &mut PgConnection,
    p: &PatternDiscovered,
    msg: &Delivery,
) -> pgflow_core::Result<Option<Merged>> {
    let seen: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM centralcloud.pattern_reports WHERE message_id = $1)",
    )
    .bind(msg.id)
    .fetch_one(&mut *conn)
    .await?;
    if seen {
        return Ok(None);
    }
    let pattern_type = serde_json::to_value(p.pattern_type)?;
    let pattern_type = pattern_type.as_str().unwrap_or("unknown");
    let merged: Merged = sqlx::query_as(
        "INSERT INTO centralcloud.patterns AS p
             (pattern_key, pattern_type, agent_type, code_pattern, occurrences, instances,
              instance_success, success_rate)
         VALUES (md5(concat_ws(chr(31), $1::text, $2::text, $3::text, $4::text)), $1, $2, $5, 1,
                 ARRAY[$6::text], jsonb_build_object($6::text, $7::float8), $7)
         ON CONFLICT (pattern_key) DO UPDATE SET
             occurrences = p.occurrences + 1,
             instances = ARRAY(SELECT DISTINCT i FROM unnest(p.instances || EXCLUDED.instances) AS i
                               ORDER BY i),
             instance_success = p.instance_success || EXCLUDED.instance_success,
             success_rate = (SELECT avg(value::float8)
                               FROM jsonb_each_text(p.instance_success || EXCLUDED.instance_success)),
             last_seen = now()
         RETURNING pattern_key, occurrences, instances, success_rate",
    )
    .bind(pattern_type)
    .bind(&p.agent_type)
    .bind(normalize(&p.code_pattern.before))
    .bind(normalize(&p.code_pattern.after))
    .bind(serde_json::to_value(&p.code_pattern)?)
    .bind(&p.instance_id)
    .bind(p.success_rate)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO centralcloud.pattern_reports
             (message_id, pattern_key, instance_id, agent_type, success_rate, trace_id, discovered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(msg.id)
    .bind(&merged.pattern_key)
    .bind(&p.instance_id)
    .bind(&p.agent_type)
    .bind(p.success_rate)
    .bind(msg.trace_id)
    .bind(p.timestamp)
    .execute(&mut *conn)
    .await?;
    Ok(Some(merged))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn whitespace_does_not_make_a_new_pattern() {
        assert_eq!(
            normalize("fn a() {\n    b()\n}"),
            normalize("fn a() { b() }")
        );
        assert_ne!(normalize("a b"), normalize("ab"));
    }
}
