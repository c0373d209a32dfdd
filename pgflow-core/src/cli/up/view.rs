//! The live view of `pgflow up`: the supervised processes, proposals by
//! state, CentralCloud's decisions, Genesis workflows and requests by
//! status, the dead-letter queue, and the queue table. Read with the admin
//! connection (it may read every service's schema; the services cannot).
//!
//! Text lines are `key=value` lists after a fixed label so scripts can
//! grep them (`proposals  applied=3 rolled_back=1 ...`); `--json` prints one
//! [`Snapshot`] per line instead.

use std::collections::BTreeMap;

use serde::Serialize;

use super::procs::ProcStatus;
use crate::cli::output;
use crate::client::{Pgflow, QueueStats};
use crate::error::Result;

/// Every proposal state of `singularity.proposals`, in life-cycle order.
pub const PROPOSAL_STATES: [&str; 8] = [
    "pending",
    "submitted",
    "consensus_reached",
    "consensus_failed",
    "executing",
    "applied",
    "rolled_back",
    "failed",
];
const DECISION_STATES: [&str; 3] = ["collecting", "approved", "rejected"];
const WORKFLOW_STATES: [&str; 4] = ["pending", "running", "completed", "failed"];
const REQUEST_STATES: [&str; 3] = ["sent", "completed", "failed"];

/// One refresh of the view.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was taken.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The supervised processes.
    pub processes: Vec<ProcStatus>,
    /// `singularity.proposals` by status (every instance).
    pub proposals: BTreeMap<String, i64>,
    /// `centralcloud.proposals` by status (consensus decisions).
    pub decisions: BTreeMap<String, i64>,
    /// `genesis.workflows` by status.
    pub workflows: BTreeMap<String, i64>,
    /// `singularity.genesis_requests` by status (rule, LLM-config and
    /// code-analysis requests and whether their result came back).
    pub genesis_requests: BTreeMap<String, i64>,
    /// Demo submissions (when `--demo` runs).
    pub demo: Option<super::demo::DemoStats>,
    /// Dead letters over all queues.
    pub dlq: i64,
    /// The queue table.
    pub queues: Vec<QueueStats>,
}

async fn by_status(pg: &Pgflow, table: &str, states: &[&str]) -> BTreeMap<String, i64> {
    let mut m: BTreeMap<String, i64> = states.iter().map(|s| (s.to_string(), 0)).collect();
    // `table` is one of this module's constants, never user input.
    let sql = format!("SELECT status, count(*) FROM {table} GROUP BY status");
    // A schema that is missing (an older database) shows as zeros.
    if let Ok(rows) = sqlx::query_as::<_, (String, i64)>(&sql)
        .fetch_all(pg.pool())
        .await
    {
        for (status, n) in rows {
            m.insert(status, n);
        }
    }
    m
}

/// Reads one snapshot.
pub async fn snapshot(
    pg: &Pgflow,
    processes: Vec<ProcStatus>,
    demo: Option<super::demo::DemoStats>,
) -> Result<Snapshot> {
    let queues = pg.list_queues().await?;
    let dlq = queues.iter().map(|q| q.dlq).sum();
    Ok(Snapshot {
        at: chrono::Utc::now(),
        processes,
        proposals: by_status(pg, "singularity.proposals", &PROPOSAL_STATES).await,
        decisions: by_status(pg, "centralcloud.proposals", &DECISION_STATES).await,
        workflows: by_status(pg, "genesis.workflows", &WORKFLOW_STATES).await,
        genesis_requests: by_status(pg, "singularity.genesis_requests", &REQUEST_STATES).await,
        demo,
        dlq,
        queues,
    })
}

fn kv(order: &[&str], m: &BTreeMap<String, i64>) -> String {
    let mut parts: Vec<String> = order
        .iter()
        .map(|k| format!("{k}={}", m.get(*k).copied().unwrap_or(0)))
        .collect();
    parts.extend(
        m.iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}")),
    );
    parts.join(" ")
}

/// The snapshot as text.
pub fn render(s: &Snapshot) -> String {
    let mut out = format!("── pgflow up · {} ──\n", s.at.format("%H:%M:%S"));
    for p in &s.processes {
        out.push_str(&format!(
            "process    {:<14} {:<10} pid={} http={} restarts={}{}\n",
            p.name,
            p.state,
            p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            p.http.as_deref().unwrap_or("-"),
            p.restarts,
            p.last_exit
                .as_deref()
                .map(|e| format!(" last_exit={e:?}"))
                .unwrap_or_default(),
        ));
    }
    out.push_str(&format!(
        "proposals  {}\n",
        kv(&PROPOSAL_STATES, &s.proposals)
    ));
    out.push_str(&format!(
        "decisions  {}\n",
        kv(&DECISION_STATES, &s.decisions)
    ));
    out.push_str(&format!(
        "workflows  {}\n",
        kv(&WORKFLOW_STATES, &s.workflows)
    ));
    out.push_str(&format!(
        "genesis    {}\n",
        kv(&REQUEST_STATES, &s.genesis_requests)
    ));
    if let Some(d) = &s.demo {
        out.push_str(&format!(
            "demo       ordinary={} high_risk={} breaching={} genesis_requests={} errors={}\n",
            d.ordinary, d.high_risk, d.breaching, d.genesis_requests, d.errors
        ));
    }
    out.push_str(&format!("dlq        size={}\n", s.dlq));
    out.push_str(&output::queues_table(&s.queues).to_string());
    out
}
