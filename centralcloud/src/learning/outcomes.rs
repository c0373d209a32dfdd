//! The outcomes of applied changes per agent type, weighted by age, that
//! the success rate is computed from ([`super::Outcomes`]): execution
//! metrics (no breach = 1, breach = 0) and pattern reports (their reported
//! rate) that a pass has learned from, each weighted by
//! `2^(-age / half-life)`, age counted from when centralcloud received it
//! (database time, never negative). Outcomes older than
//! [`super::HORIZON_HALF_LIVES`] half-lives are left out.

use std::collections::BTreeMap;
use std::time::Duration;

use pgflow_core::Result;
use sqlx::PgConnection;

use super::{Outcomes, HORIZON_HALF_LIVES};

/// The weighted outcomes of every agent type that has any.
pub(crate) async fn weighted(
    conn: &mut PgConnection,
    half_life: Duration,
) -> Result<BTreeMap<String, Outcomes>> {
    let half_life = half_life.as_secs_f64().max(1e-3);
    let rows: Vec<(String, f64, f64)> = sqlx::query_as(
        "WITH o AS (
             SELECT agent_type, received_at,
                    CASE WHEN breach IS NULL THEN 1.0::float8 ELSE 0.0::float8 END AS success
               FROM centralcloud.metrics
              WHERE learning_run_id IS NOT NULL
                AND received_at > now() - make_interval(secs => $2)
             UNION ALL
             SELECT agent_type, received_at, success_rate
               FROM centralcloud.pattern_reports
              WHERE learning_run_id IS NOT NULL
                AND received_at > now() - make_interval(secs => $2)
         ), w AS (
             SELECT agent_type, success,
                    power(0.5::float8,
                          greatest(0, extract(epoch FROM now() - received_at))::float8 / $1) AS weight
               FROM o
         )
         SELECT agent_type, sum(weight), sum(weight * success) FROM w GROUP BY agent_type",
    )
    .bind(half_life)
    .bind(half_life * HORIZON_HALF_LIVES)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(agent, weight, successes)| (agent, Outcomes { weight, successes }))
        .collect())
}
