//! The pattern miner: changes that were applied and have stayed applied
//! (not rolled back) for a grace period become patterns, reported to the
//! aggregator on `patterns_for_aggregator_queue` with the agent type's
//! success rate at this instance. Each proposal is reported once: it is
//! marked reported in the transaction that sends the pattern (rows are
//! taken `FOR UPDATE SKIP LOCKED`, so several miners never report the same
//! proposal).
//!
//! The miner runs every `SINGULARITY_PATTERN_INTERVAL_MS`, and also right
//! after an applied change passes its grace period
//! (`SINGULARITY_PATTERN_GRACE_MS`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgflow_core::protocol::{self, CodePattern, PatternDiscovered, PatternType};
use pgflow_core::telemetry::{emit, Event};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::Result;
use crate::instance::Instance;
use crate::store;

/// Largest `before` / `after` text of a reported pattern, in bytes (a
/// pattern summarises a change; the whole change stays in the proposal).
pub const MAX_PATTERN_SIDE: usize = 64 * 1024;
/// Proposals reported per transaction.
const BATCH: i64 = 50;
/// Slack after a grace period ends before the pass runs (the applying
/// transaction commits just after the miner is woken).
const WAKE_SLACK: Duration = Duration::from_millis(100);

/// An applied change due for reporting.
#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: Uuid,
    agent_type: String,
    file: String,
    change: String,
    backup_content: Option<Vec<u8>>,
    trace_id: Uuid,
}

/// Reports applied changes as patterns.
#[derive(Debug, Clone)]
pub struct PatternMiner {
    inst: Arc<Instance>,
    interval: Duration,
}

impl PatternMiner {
    /// A miner for `inst` that runs every `interval`.
    pub fn new(inst: Arc<Instance>, interval: Duration) -> Self {
        Self { inst, interval }
    }

    /// One pass: reports every change applied at least the grace period
    /// ago and not reported yet. Returns how many patterns were sent.
    pub async fn mine_once(&self) -> Result<usize> {
        let mut sent = 0;
        loop {
            let (taken, n) = self.mine_batch().await?;
            sent += n;
            if taken < BATCH as usize {
                return Ok(sent);
            }
        }
    }

    /// One batch: (proposals taken, patterns sent).
    async fn mine_batch(&self) -> Result<(usize, usize)> {
        let inst = &self.inst;
        let mut tx = inst.pg.pool().begin().await?;
        let due: Vec<Due> = sqlx::query_as(
            "SELECT id, agent_type, file, change, backup_content, trace_id
               FROM singularity.proposals
              WHERE instance_id = $1 AND status = 'applied' AND pattern_reported_at IS NULL
                AND applied_at <= now() - $2 * interval '1 millisecond'
              ORDER BY applied_at
              LIMIT $3
                FOR UPDATE SKIP LOCKED",
        )
        .bind(&inst.id)
        .bind(inst.pattern_grace.as_millis() as f64)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok((0, 0));
        }
        let mut rates = HashMap::new();
        let mut msgs = Vec::with_capacity(due.len());
        let mut reported = Vec::with_capacity(due.len());
        let mut published = Vec::with_capacity(due.len());
        for d in &due {
            if !rates.contains_key(&d.agent_type) {
                let h = store::history(&mut tx, &inst.id, &d.agent_type).await?;
                rates.insert(d.agent_type.clone(), h.success_rate().unwrap_or(1.0));
            }
            let pattern = PatternDiscovered {
                instance_id: inst.id.clone(),
                pattern_type: pattern_type(&d.agent_type),
                code_pattern: CodePattern {
                    before: truncate(&String::from_utf8_lossy(
                        d.backup_content.as_deref().unwrap_or_default(),
                    )),
                    after: truncate(&d.change),
                    description: format!("{} change to {}", d.agent_type, d.file),
                },
                success_rate: rates.get(&d.agent_type).copied().unwrap_or(1.0),
                agent_type: d.agent_type.clone(),
                timestamp: Utc::now(),
            };
            match protocol::encode(&pattern) {
                Ok(m) => {
                    msgs.push(m.trace_id(d.trace_id).source(&inst.id));
                    published.push(d);
                }
                Err(e) => {
                    tracing::warn!(proposal_id = %d.id, trace_id = %d.trace_id, error = %e, "cannot report this change as a pattern; marking it reported")
                }
            }
            reported.push(d.id);
        }
        if let Err(e) = inst
            .pg
            .send_in_tx(&mut tx, &inst.queues.patterns, &msgs, true)
            .await
        {
            emit(Event::PublishFailed, &format!("pattern_discovered: {e}"));
            return Err(e.into());
        }
        sqlx::query(
            "UPDATE singularity.proposals SET pattern_reported_at = now(), updated_at = now()
              WHERE id = ANY($1) AND instance_id = $2",
        )
        .bind(&reported)
        .bind(&inst.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for d in published {
            let span = tracing::info_span!("pattern", proposal_id = %d.id, trace_id = %d.trace_id);
            span.in_scope(|| {
                tracing::info!(agent_type = %d.agent_type, file = %d.file, "pattern reported");
                emit(Event::PatternPublished, &d.id.to_string());
            });
        }
        Ok((due.len(), msgs.len()))
    }

    /// When the next unreported change passes its grace period, if any.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let inst = &self.inst;
        Ok(sqlx::query_scalar(
            "SELECT min(applied_at) + $2 * interval '1 millisecond'
               FROM singularity.proposals
              WHERE instance_id = $1 AND status = 'applied' AND pattern_reported_at IS NULL",
        )
        .bind(&inst.id)
        .bind(inst.pattern_grace.as_millis() as f64)
        .fetch_one(inst.pg.pool())
        .await?)
    }

    /// Runs passes until `shutdown`: every interval, when a change passes
    /// its grace period, and a grace period after each applied change.
    pub async fn run(self, shutdown: CancellationToken) {
        let grace = self.inst.pattern_grace;
        loop {
            let pass = async {
                match self.mine_once().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(patterns = n, "pattern miner pass"),
                    Err(e) => {
                        tracing::warn!(error = %pgflow_core::error::report(&e), "pattern miner pass failed; retrying at the next one")
                    }
                }
            };
            pass.instrument(tracing::info_span!("pattern_miner")).await;
            let mut wait = self.interval;
            match self.next_due().await {
                Ok(Some(due)) => {
                    let until = (due - Utc::now()).to_std().unwrap_or_default() + WAKE_SLACK;
                    wait = wait.min(until);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "pattern miner: cannot compute the next due time")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inst.applied.notified() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep((grace + WAKE_SLACK).min(self.interval)) => {}
                    }
                }
            }
        }
    }
}

/// The kind of pattern an agent type produces, from its name (`*Fix*` ->
/// bug_fix, `*Optimi*` / `*Perf*` -> optimization, else refactoring).
pub fn pattern_type(agent_type: &str) -> PatternType {
    let a = agent_type.to_ascii_lowercase();
    if a.contains("fix") || a.contains("bug") {
        PatternType::BugFix
    } else if a.contains("optimi") || a.contains("perf") {
        PatternType::Optimization
    } else {
        PatternType::Refactoring
    }
}

/// `s` cut to at most [`MAX_PATTERN_SIDE`] bytes at a character boundary.
fn truncate(s: &str) -> String {
    if s.len() <= MAX_PATTERN_SIDE {
        return s.to_string();
    }
    let mut end = MAX_PATTERN_SIDE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_types_follow_agent_names() {
        assert_eq!(pattern_type("BugFixerAgent"), PatternType::BugFix);
        assert_eq!(
            pattern_type("PerfOptimizerAgent"),
            PatternType::Optimization
        );
        assert_eq!(pattern_type("RefactoringAgent"), PatternType::Refactoring);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(MAX_PATTERN_SIDE);
        let t = truncate(&s);
        assert!(t.len() <= MAX_PATTERN_SIDE && t.chars().all(|c| c == 'é'));
        assert_eq!(truncate("abc"), "abc");
    }
}
