//! Learning-loop reports (`learning_loop_completed`, from centralcloud):
//! recorded in `genesis.learning_events`. Nothing is sent back.

use pgflow_core::protocol::LearningLoopCompleted;
use sqlx::PgConnection;
use uuid::Uuid;

/// Where a report came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The message id (the event's id: a redelivery records nothing new).
    pub message_id: Uuid,
    /// The sending instance, if named.
    pub source: Option<&'a str>,
    /// The trace id.
    pub trace_id: Uuid,
}

/// Records `report`; counts too large for the table are refused with the reason.
pub async fn record(
    conn: &mut PgConnection,
    report: &LearningLoopCompleted,
    origin: Origin<'_>,
) -> Result<Result<(), String>, sqlx::Error> {
    let count = |what: &str, v: u64| {
        i64::try_from(v).map_err(|_| format!("{what} {v} is too large to record"))
    };
    let counts = (|| {
        Ok::<_, String>((
            count("patterns_processed", report.patterns_processed)?,
            count("rules_generated", report.rules_generated)?,
            count("thresholds_updated", report.thresholds_updated)?,
        ))
    })();
    let (patterns, rules, thresholds) = match counts {
        Ok(c) => c,
        Err(reason) => return Ok(Err(reason)),
    };
    sqlx::query(
        "INSERT INTO genesis.learning_events
             (id, patterns_processed, rules_generated, thresholds_updated, completed_at, source, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(origin.message_id)
    .bind(patterns)
    .bind(rules)
    .bind(thresholds)
    .bind(report.timestamp)
    .bind(origin.source)
    .bind(origin.trace_id)
    .execute(conn)
    .await?;
    tracing::info!(
        patterns_processed = patterns,
        rules_generated = rules,
        thresholds_updated = thresholds,
        "learning loop completed"
    );
    Ok(Ok(()))
}
