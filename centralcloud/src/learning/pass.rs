//! One pass of the learning loop, in one transaction: claim the evidence no
//! pass has used yet (each row is stamped with the run that used it, so
//! evidence is learned from exactly once), recompute every agent type's
//! success rate from its outcomes weighted by age, store the changed
//! profiles as new versions, promote rules, record the run and the pass's
//! time ([`super::schedule`]), and send the profile updates (broadcast) and
//! `learning_loop_completed`. Either all of it commits or none. Passes of
//! several processes are serialised by the lock on the schedule row; a pass
//! that finds no new evidence and no profile to move records only its time,
//! and sends nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use pgflow_core::protocol::{
    self, queues, LearningLoopCompleted, SafetyProfile, SafetyProfileUpdate,
};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Pgflow, Result};
use serde::Serialize;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    learn, outcomes, schedule, Evidence, Outcomes, DECAY_STEP, RULE_MIN_INSTANCES, RULE_MIN_SUCCESS,
};
use crate::config::Settings;
use crate::{profiles, queue, SOURCE};

/// The `source` of the profile updates this loop broadcasts.
pub const PROFILE_SOURCE: &str = "centralcloud_learning_loop";

/// What started a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The periodic loop of the service.
    Interval,
    /// `centralcloud learn`.
    Cli,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::Cli => "cli",
        }
    }
}

/// A profile a pass stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdatedProfile {
    /// The agent type.
    pub agent_type: String,
    /// The new version.
    pub version: i32,
    /// The new profile.
    pub profile: SafetyProfile,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LearningReport {
    /// The run's id in `centralcloud.learning_runs` (`None`: nothing to learn).
    pub run_id: Option<i64>,
    /// The run's trace id (carried by the messages it sent).
    pub trace_id: Option<Uuid>,
    /// Another pass held the lock; this one did nothing.
    pub busy: bool,
    /// Decided proposals used.
    pub proposals_seen: u64,
    /// Execution metrics used.
    pub metrics_seen: u64,
    /// Pattern reports used.
    pub pattern_reports_seen: u64,
    /// Distinct patterns with new reports.
    pub patterns_processed: u64,
    /// Patterns promoted to rules.
    pub rules_generated: u64,
    /// Threshold values changed.
    pub thresholds_updated: u64,
    /// Profiles stored and broadcast.
    pub profiles: Vec<UpdatedProfile>,
}

/// Runs one pass now (see the module docs); `busy` when another pass is
/// running.
pub async fn run_pass(
    pg: &Pgflow,
    settings: &Settings,
    trigger: Trigger,
) -> Result<LearningReport> {
    let mut tx = pg.pool().begin().await?;
    if schedule::lock(&mut tx, Duration::ZERO).await?.is_none() {
        return Ok(LearningReport {
            busy: true,
            ..LearningReport::default()
        });
    }
    let report = run_locked(pg, &mut tx, settings, trigger).await?;
    tx.commit().await?;
    Ok(report)
}

/// Runs one pass in `tx`, which holds the schedule lock, and records its
/// time there. The run and its results are kept only when it learned
/// something (a savepoint is rolled back otherwise).
pub(crate) async fn run_locked(
    pg: &Pgflow,
    tx: &mut PgConnection,
    settings: &Settings,
    trigger: Trigger,
) -> Result<LearningReport> {
    let mut sp = sqlx::Connection::begin(&mut *tx).await?;
    let trace_id = Uuid::now_v7();
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO centralcloud.learning_runs (trigger, trace_id) VALUES ($1, $2) RETURNING id",
    )
    .bind(trigger.as_str())
    .bind(trace_id)
    .fetch_one(&mut *sp)
    .await?;
    let span = tracing::info_span!("learning", run_id, trace_id = %trace_id);
    let report = learn_in_tx(pg, &mut sp, settings, run_id, trace_id)
        .instrument(span)
        .await?;
    if report.run_id.is_some() {
        sp.commit().await?;
    } else {
        sp.rollback().await?;
    }
    schedule::record(tx).await?;
    Ok(report)
}

/// The evidence a pass claimed: per agent type, and what it counted.
struct Claimed {
    evidence: BTreeMap<String, Evidence>,
    proposals: u64,
    metrics: u64,
    reports: u64,
    patterns: u64,
}

/// Stamps the evidence no pass has used yet with `run_id` and sums it up.
async fn claim_evidence(tx: &mut PgConnection, run_id: i64) -> Result<Claimed> {
    let proposals: Vec<(String, String)> = sqlx::query_as(
        "UPDATE centralcloud.proposals SET learning_run_id = $1
          WHERE status <> 'collecting' AND learning_run_id IS NULL
         RETURNING agent_type, status",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    let metrics: Vec<(String, Option<String>)> = sqlx::query_as(
        "UPDATE centralcloud.metrics SET learning_run_id = $1
          WHERE learning_run_id IS NULL
         RETURNING agent_type, breach",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    let reports: Vec<(String, String, f64)> = sqlx::query_as(
        "UPDATE centralcloud.pattern_reports SET learning_run_id = $1
          WHERE learning_run_id IS NULL
         RETURNING agent_type, pattern_key, success_rate",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut evidence: BTreeMap<String, Evidence> = BTreeMap::new();
    for (agent, status) in &proposals {
        let e = evidence.entry(agent.clone()).or_default();
        if status == "approved" {
            e.approved += 1;
        } else {
            e.rejected += 1;
        }
    }
    for (agent, breach) in &metrics {
        let e = evidence.entry(agent.clone()).or_default();
        e.executions += 1;
        match breach.as_deref() {
            Some("error_rate_breach") => e.error_breaches += 1,
            Some("latency_breach") => e.latency_breaches += 1,
            Some("cost_breach") => e.cost_breaches += 1,
            _ => {}
        }
    }
    let mut patterns = BTreeSet::new();
    for (agent, key, rate) in &reports {
        let e = evidence.entry(agent.clone()).or_default();
        e.pattern_reports += 1;
        e.pattern_success_sum += rate;
        patterns.insert(key.as_str());
    }
    Ok(Claimed {
        proposals: proposals.len() as u64,
        metrics: metrics.len() as u64,
        reports: reports.len() as u64,
        patterns: patterns.len() as u64,
        evidence,
    })
}

async fn learn_in_tx(
    pg: &Pgflow,
    tx: &mut PgConnection,
    settings: &Settings,
    run_id: i64,
    trace_id: Uuid,
) -> Result<LearningReport> {
    let claimed = claim_evidence(tx, run_id).await?;
    let evidence = &claimed.evidence;
    let mut report = LearningReport {
        run_id: Some(run_id),
        trace_id: Some(trace_id),
        proposals_seen: claimed.proposals,
        metrics_seen: claimed.metrics,
        pattern_reports_seen: claimed.reports,
        patterns_processed: claimed.patterns,
        ..LearningReport::default()
    };
    update_profiles(tx, settings, run_id, evidence, &mut report).await?;
    if evidence.is_empty() && report.profiles.is_empty() {
        tracing::debug!("learning pass: no new evidence, no profile moved");
        return Ok(LearningReport::default());
    }
    let promoted: Vec<String> = sqlx::query_scalar(
        "UPDATE centralcloud.patterns SET promoted_at = now(), promoted_by_run = $1
          WHERE promoted_at IS NULL AND cardinality(instances) >= $2 AND success_rate >= $3
         RETURNING pattern_key",
    )
    .bind(run_id)
    .bind(RULE_MIN_INSTANCES)
    .bind(RULE_MIN_SUCCESS)
    .fetch_all(&mut *tx)
    .await?;
    report.rules_generated = promoted.len() as u64;

    sqlx::query(
        "UPDATE centralcloud.learning_runs
            SET finished_at = now(), proposals_seen = $2, metrics_seen = $3,
                patterns_processed = $4, rules_generated = $5, thresholds_updated = $6,
                profiles_updated = $7
          WHERE id = $1",
    )
    .bind(run_id)
    .bind(report.proposals_seen as i64)
    .bind(report.metrics_seen as i64)
    .bind(report.patterns_processed as i64)
    .bind(report.rules_generated as i64)
    .bind(report.thresholds_updated as i64)
    .bind(report.profiles.len() as i64)
    .execute(&mut *tx)
    .await?;

    publish(pg, tx, &report, trace_id).await?;
    tracing::info!(
        patterns_processed = report.patterns_processed,
        rules_generated = report.rules_generated,
        thresholds_updated = report.thresholds_updated,
        profiles_updated = report.profiles.len(),
        "learning pass completed"
    );
    Ok(report)
}

/// What a profile version records of the pass that stored it.
#[derive(Serialize)]
struct Recorded<'a> {
    #[serde(flatten)]
    evidence: &'a Evidence,
    /// The weighted outcomes the success rate came from.
    outcomes: Outcomes,
}

/// Recomputes the profile of every agent type with new evidence or a stored
/// profile, and stores those that moved (see the module docs of
/// [`super`]): with new evidence by any amount, by ageing alone once the
/// success rate moved at least [`DECAY_STEP`].
async fn update_profiles(
    tx: &mut PgConnection,
    settings: &Settings,
    run_id: i64,
    evidence: &BTreeMap<String, Evidence>,
    report: &mut LearningReport,
) -> Result<()> {
    let stored = profiles::all_current(tx).await?;
    let weighted = outcomes::weighted(tx, settings.learning_half_life).await?;
    let agents: BTreeSet<&String> = evidence.keys().chain(stored.keys()).collect();
    let none = Evidence::default();
    for agent in agents {
        let current = stored.get(agent).cloned().unwrap_or(profiles::Versioned {
            version: 0,
            profile: profiles::default_profile(),
        });
        let ev = evidence.get(agent);
        let outcomes = weighted.get(agent).copied().unwrap_or_default();
        let learned = learn(
            &current.profile,
            ev.unwrap_or(&none),
            &outcomes,
            settings.learning_min_samples,
        );
        let rate_moved = (learned.profile.success_rate - current.profile.success_rate).abs();
        let moved = match ev {
            Some(_) => learned.thresholds_changed > 0 || rate_moved >= 1e-4 || current.version == 0,
            None => rate_moved >= DECAY_STEP - 1e-9,
        };
        if !moved {
            continue;
        }
        let version = current.version + 1;
        let recorded = serde_json::to_value(Recorded {
            evidence: ev.unwrap_or(&none),
            outcomes,
        })?;
        profiles::insert(tx, agent, version, &learned.profile, &recorded, run_id).await?;
        if ev.is_none() {
            tracing::info!(
                agent_type = %agent,
                from = current.profile.success_rate,
                to = learned.profile.success_rate,
                "success rate moved as old outcomes aged"
            );
        }
        report.thresholds_updated += learned.thresholds_changed;
        report.profiles.push(UpdatedProfile {
            agent_type: agent.clone(),
            version,
            profile: learned.profile,
        });
    }
    Ok(())
}

/// Sends the profile updates and the completion report in `tx`.
async fn publish(
    pg: &Pgflow,
    tx: &mut PgConnection,
    report: &LearningReport,
    trace_id: Uuid,
) -> Result<()> {
    let now = Utc::now();
    let updates = report
        .profiles
        .iter()
        .map(|p| {
            let update = SafetyProfileUpdate {
                instance_id: None,
                agent_type: p.agent_type.clone(),
                safety_profile: p.profile.clone(),
                source: PROFILE_SOURCE.into(),
                timestamp: now,
            };
            Ok(protocol::encode(&update)?.trace_id(trace_id).source(SOURCE))
        })
        .collect::<Result<Vec<_>>>()?;
    if !updates.is_empty() {
        pg.send_in_tx(
            tx,
            &queue(queues::GUARDIAN_SAFETY_PROFILES)?,
            &updates,
            true,
        )
        .await?;
        for p in &report.profiles {
            emit(
                Event::ProfileUpdatePublished,
                &format!(
                    "agent_type={} version={} trace_id={trace_id}",
                    p.agent_type, p.version
                ),
            );
        }
    }
    let done = LearningLoopCompleted {
        patterns_processed: report.patterns_processed,
        rules_generated: report.rules_generated,
        thresholds_updated: report.thresholds_updated,
        timestamp: now,
    };
    let msg = protocol::encode(&done)?.trace_id(trace_id).source(SOURCE);
    pg.send_in_tx(tx, &queue(queues::LEARNING_LOOP_COMPLETED)?, &[msg], true)
        .await?;
    Ok(())
}
