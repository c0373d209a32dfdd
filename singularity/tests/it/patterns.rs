//! The pattern miner reports applied, not rolled-back changes once each,
//! with the agent type's success rate and the journey's trace id.

use std::time::Duration;

use pgflow_core::protocol::{self, queues, PatternDiscovered, PatternType};
use singularity::patterns::PatternMiner;
use singularity::Instance;

use crate::support::{test_args, waiting, Env};

#[tokio::test]
async fn applied_changes_are_reported_once_and_rolled_back_ones_never() {
    // The service's own miner waits an hour; the test mines with no grace.
    let env = Env::start().await;
    std::fs::create_dir_all(env.ws()).unwrap();
    std::fs::write(env.ws().join("kept.txt"), "old kept").unwrap();
    let kept = env.apply("kept.txt", "new kept").await;
    let undone = env.apply("undone.txt", "new undone").await;
    sqlx::query("UPDATE singularity.proposals SET status = 'rolled_back' WHERE id = $1")
        .bind(undone.proposal_id)
        .execute(env.t.pgflow.pool())
        .await
        .unwrap();

    let mut args = test_args(&env.id, &env.ws());
    args.pattern_grace_ms = 0;
    let inst = std::sync::Arc::new(Instance::new(env.sing.clone(), &args).unwrap());
    let miner = PatternMiner::new(inst, Duration::from_secs(3600));
    assert_eq!(miner.mine_once().await.unwrap(), 1);
    assert_eq!(miner.mine_once().await.unwrap(), 0, "reported once");

    let d = env.cc_claim(queues::PATTERNS_FOR_AGGREGATOR).await;
    assert_eq!(d.trace_id, kept.trace_id);
    let p: PatternDiscovered = protocol::decode(&d).unwrap();
    assert_eq!(p.instance_id, "singularity_1");
    assert_eq!(p.pattern_type, PatternType::BugFix);
    assert_eq!(
        (
            p.code_pattern.before.as_str(),
            p.code_pattern.after.as_str()
        ),
        ("old kept", "new kept")
    );
    assert!(p.code_pattern.description.contains("kept.txt"));
    // One kept, one rolled back (weighted by their few seconds of age).
    assert!((p.success_rate - 0.5).abs() < 1e-3, "{}", p.success_rate);
    assert_eq!(waiting(&env.t, queues::PATTERNS_FOR_AGGREGATOR).await, 0);
    assert!(env
        .proposal(kept.proposal_id)
        .await
        .pattern_reported_at
        .is_some());
    assert!(env
        .proposal(undone.proposal_id)
        .await
        .pattern_reported_at
        .is_none());
    env.stop().await;
}

#[tokio::test]
async fn the_running_miner_reports_a_change_once_its_grace_period_passes() {
    let env = Env::start_with(|a| a.pattern_grace_ms = 200).await;
    let s = env.apply("soon.txt", "content").await;
    let d = env.cc_claim(queues::PATTERNS_FOR_AGGREGATOR).await;
    assert_eq!(d.trace_id, s.trace_id);
    let p: PatternDiscovered = protocol::decode(&d).unwrap();
    assert_eq!(p.success_rate, 1.0);
    assert!(env
        .proposal(s.proposal_id)
        .await
        .pattern_reported_at
        .is_some());
    env.stop().await;
}
