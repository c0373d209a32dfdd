//! What an operator asks centralcloud: [`overview`] of its schema
//! (proposals by state, votes, patterns, safety profiles, the last learning
//! pass) for `centralcloud status`, and the [`StatusBoard`] behind the ops
//! server's `GET /status` (consumer states plus proposal counts, refreshed
//! in the background because the provider cannot query the database).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgflow_core::consumer::ConsumerState;
use pgflow_core::error::report;
use pgflow_core::{Pgflow, Result};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Vote totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct VoteCounts {
    /// Votes recorded.
    pub total: i64,
    /// Approvals among them.
    pub approve: i64,
    /// Rejections among them.
    pub reject: i64,
    /// Votes recorded but not counted (late, or flagged).
    pub not_counted: i64,
    /// Votes from instances the proposal did not ask (kept, never counted).
    pub flagged: i64,
}

/// Pattern totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PatternCounts {
    /// Distinct patterns.
    pub patterns: i64,
    /// Reports received.
    pub reports: i64,
    /// Patterns reported by more than one instance.
    pub cross_instance: i64,
    /// Patterns promoted to rules.
    pub rules: i64,
}

/// The current profile of one agent type.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ProfileRow {
    /// Agent type.
    pub agent_type: String,
    /// Version.
    pub version: i32,
    /// Success rate.
    pub success_rate: f64,
    /// Error-rate threshold.
    pub error_threshold: f64,
    /// Latency threshold (ms).
    pub latency_threshold: f64,
    /// Cost threshold.
    pub cost_threshold: f64,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
}

/// The last learning pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LearningRow {
    /// Run id.
    pub id: i64,
    /// What started it.
    pub trigger: String,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Distinct patterns with new reports.
    pub patterns_processed: i64,
    /// Rules promoted.
    pub rules_generated: i64,
    /// Thresholds changed.
    pub thresholds_updated: i64,
}

/// The state of the `centralcloud` schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// Proposals by status (`collecting`, `approved`, `rejected`; all present).
    pub proposals: BTreeMap<String, i64>,
    /// Votes.
    pub votes: VoteCounts,
    /// Patterns.
    pub patterns: PatternCounts,
    /// Current safety profile per agent type.
    pub profiles: Vec<ProfileRow>,
    /// The last learning pass that learned something, if any.
    pub last_learning_run: Option<LearningRow>,
    /// When the last learning pass ran (with or without anything to learn;
    /// the next periodic one is due an interval later).
    pub last_pass_at: Option<DateTime<Utc>>,
}

/// Proposals by status, every status present.
pub async fn proposal_counts(pool: &PgPool) -> Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.status, count(p.proposal_id)
           FROM unnest(ARRAY['collecting', 'approved', 'rejected']) AS s(status)
           LEFT JOIN centralcloud.proposals p ON p.status = s.status
          GROUP BY s.status",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Reads the whole overview.
pub async fn overview(pool: &PgPool) -> Result<Overview> {
    let proposals = proposal_counts(pool).await?;
    let votes = sqlx::query_as(
        "SELECT count(*) AS total,
                count(*) FILTER (WHERE vote = 'approve') AS approve,
                count(*) FILTER (WHERE vote = 'reject') AS reject,
                count(*) FILTER (WHERE NOT counted) AS not_counted,
                count(*) FILTER (WHERE flag IS NOT NULL) AS flagged
           FROM centralcloud.votes",
    )
    .fetch_one(pool)
    .await?;
    let patterns = sqlx::query_as(
        "SELECT count(*) AS patterns,
                coalesce(sum(occurrences), 0)::bigint AS reports,
                count(*) FILTER (WHERE cardinality(instances) > 1) AS cross_instance,
                count(*) FILTER (WHERE promoted_at IS NOT NULL) AS rules
           FROM centralcloud.patterns",
    )
    .fetch_one(pool)
    .await?;
    let profiles = sqlx::query_as(
        "SELECT DISTINCT ON (agent_type) agent_type, version, success_rate, error_threshold,
                latency_threshold, cost_threshold, created_at
           FROM centralcloud.safety_profiles
          ORDER BY agent_type, version DESC",
    )
    .fetch_all(pool)
    .await?;
    let last_learning_run = sqlx::query_as(
        "SELECT id, trigger, finished_at, patterns_processed, rules_generated, thresholds_updated
           FROM centralcloud.learning_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let last_pass_at =
        sqlx::query_scalar("SELECT last_pass_at FROM centralcloud.learning_schedule")
            .fetch_optional(pool)
            .await?
            .flatten();
    Ok(Overview {
        proposals,
        votes,
        patterns,
        profiles,
        last_learning_run,
        last_pass_at,
    })
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// The overview as text tables.
pub fn render(o: &Overview) -> String {
    let mut proposals = table(&["proposals", "count"]);
    for (status, n) in &o.proposals {
        proposals.add_row(vec![status.clone(), n.to_string()]);
    }
    let mut votes = table(&["votes", "approve", "reject", "not counted", "flagged"]);
    votes.add_row(vec![
        o.votes.total.to_string(),
        o.votes.approve.to_string(),
        o.votes.reject.to_string(),
        o.votes.not_counted.to_string(),
        o.votes.flagged.to_string(),
    ]);
    let mut patterns = table(&["patterns", "reports", "cross-instance", "rules"]);
    patterns.add_row(vec![
        o.patterns.patterns.to_string(),
        o.patterns.reports.to_string(),
        o.patterns.cross_instance.to_string(),
        o.patterns.rules.to_string(),
    ]);
    let mut profiles = table(&[
        "agent type",
        "version",
        "success rate",
        "error threshold",
        "latency threshold (ms)",
        "cost threshold",
    ]);
    for p in &o.profiles {
        profiles.add_row(vec![
            p.agent_type.clone(),
            p.version.to_string(),
            format!("{:.4}", p.success_rate),
            format!("{:.4}", p.error_threshold),
            format!("{:.1}", p.latency_threshold),
            format!("{:.4}", p.cost_threshold),
        ]);
    }
    let learning = match &o.last_learning_run {
        Some(r) => format!(
            "last learning pass: #{} ({}) patterns_processed={} rules_generated={} thresholds_updated={}",
            r.id, r.trigger, r.patterns_processed, r.rules_generated, r.thresholds_updated
        ),
        None => "last learning pass: none".to_string(),
    };
    let learning = match o.last_pass_at {
        Some(at) => format!("{learning}\nlast pass (learned or not) at {at}"),
        None => learning,
    };
    let profiles = if o.profiles.is_empty() {
        "safety profiles: none learned yet (the guardian uses the defaults)".to_string()
    } else {
        profiles.to_string()
    };
    format!("{proposals}\n{votes}\n{patterns}\n{profiles}\n{learning}")
}

#[derive(Debug, Default)]
struct Cached {
    proposals: Option<BTreeMap<String, i64>>,
    refreshed_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

/// The document behind `GET /status`: live consumer states and the
/// proposal counts of the last refresh.
#[derive(Debug)]
pub struct StatusBoard {
    consumers: Vec<Arc<ConsumerState>>,
    cached: RwLock<Cached>,
}

impl StatusBoard {
    /// A board over these consumers, with no counts yet.
    pub fn new(consumers: Vec<Arc<ConsumerState>>) -> Self {
        Self {
            consumers,
            cached: RwLock::new(Cached::default()),
        }
    }

    /// Reads the proposal counts now.
    pub async fn refresh(&self, pool: &PgPool) {
        let result = proposal_counts(pool).await;
        let mut c = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(counts) => {
                c.proposals = Some(counts);
                c.refreshed_at = Some(Utc::now());
                c.error = None;
            }
            Err(e) => c.error = Some(report(&e)),
        }
    }

    /// The JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let consumers: Vec<_> = self.consumers.iter().map(|s| s.snapshot()).collect();
        let c = self.cached.read().unwrap_or_else(PoisonError::into_inner);
        serde_json::json!({
            "service": "centralcloud",
            "consumers": consumers,
            "proposals": c.proposals,
            "proposals_refreshed_at": c.refreshed_at,
            "proposals_error": c.error,
        })
    }

    /// Refreshes every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, pg: Pgflow, interval: Duration, shutdown: CancellationToken) {
        loop {
            self.refresh(pg.pool()).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
