//! Service roles: each service may send only to the queues it produces,
//! claim only from the queues it consumes, and touch no other service's
//! schema (row-level security + grants from the migrations).

use std::time::Duration;

use pgflow_core::consumer::{handler_fn, ConsumerConfig, HandlerError, Runtime};
use pgflow_core::testing::wait_for;
use pgflow_core::{Failure, NackOutcome, QueueName};
use tokio_util::sync::CancellationToken;

use crate::support::{db, msg};

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

#[tokio::test]
async fn a_service_sends_only_to_the_queues_it_produces() {
    let t = db().await;
    // Registered targets: what stops these sends is row-level security.
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    let sing = t.connect_as("singularity").await.unwrap();
    sing.send(&q("proposals_for_consensus_queue"), msg(1))
        .await
        .unwrap();
    let err = sing
        .send(
            &q("consensus_results_queue"),
            msg(2).target("singularity_1"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    let genesis = t.connect_as("genesis").await.unwrap();
    let err = genesis
        .send(&q("proposals_for_consensus_queue"), msg(3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn a_service_cannot_claim_another_services_queue() {
    let t = db().await;
    let proposals = q("proposals_for_consensus_queue");
    let sing = t.connect_as("singularity").await.unwrap();
    let cc = t.connect_as("centralcloud").await.unwrap();
    let genesis = t.connect_as("genesis").await.unwrap();
    sing.send(&proposals, msg(1)).await.unwrap();
    // The producer and a bystander see nothing to claim ...
    assert!(sing.claim(&proposals, 10).await.unwrap().is_empty());
    assert!(genesis.claim(&proposals, 10).await.unwrap().is_empty());
    // ... the consumer claims, acks (archive) and can dead-letter.
    let got = cc.claim(&proposals, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    cc.ack(got[0].receipt()).await.unwrap();
    sing.send(&proposals, msg(2)).await.unwrap();
    let d = cc.claim(&proposals, 1).await.unwrap().pop().unwrap();
    let out = cc
        .nack(d.receipt(), Failure::fatal("bad proposal"))
        .await
        .unwrap();
    assert_eq!(out, NackOutcome::DeadLettered);
    // A bystander cannot even see the dead letter.
    assert!(genesis
        .list_dlq_messages(None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(cc.list_dlq_messages(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_service_cannot_read_another_services_schema() {
    let t = db().await;
    sqlx::query("CREATE TABLE centralcloud.secrets (x int)")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    sqlx::query("GRANT SELECT ON centralcloud.secrets TO centralcloud")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    let cc = t.connect_as("centralcloud").await.unwrap();
    sqlx::query("SELECT * FROM centralcloud.secrets")
        .fetch_all(cc.pool())
        .await
        .unwrap();
    for role in ["singularity", "genesis"] {
        let other = t.connect_as(role).await.unwrap();
        let err = sqlx::query("SELECT * FROM centralcloud.secrets")
            .fetch_all(other.pool())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{role}: {err}"
        );
        // Nor the operators' views over every queue.
        let err = sqlx::query("SELECT * FROM pgflow_messages")
            .fetch_all(other.pool())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{role}: {err}"
        );
    }
}

#[tokio::test]
async fn consumers_run_under_their_roles_with_every_delivery_kind() {
    let t = db().await;
    // The instance logs in as its own role: it may dead-letter its copies.
    let sing = t
        .connect_instance("singularity_1", "singularity")
        .await
        .unwrap();
    let cc = t.connect_as("centralcloud").await.unwrap();
    sing.check_schema().await.unwrap();
    let stop = CancellationToken::new();
    let mut rt = Runtime::new(sing.clone());
    let results = rt.consumer(
        ConsumerConfig::new(q("consensus_results_queue"))
            .instance("singularity_1")
            .retry(pgflow_core::RetryPolicy::default()),
        handler_fn(|_d| async { Ok(()) }),
    );
    let profiles = rt.consumer(
        ConsumerConfig::new(q("guardian_safety_profiles_queue")).instance("singularity_1"),
        handler_fn(|_d| async { Err(HandlerError::fatal("unreadable profile")) }),
    );
    let run = tokio::spawn(rt.run(stop.clone()));
    wait_for("subscribed", Duration::from_secs(20), || async {
        let s = cc.list_subscribers(None).await.unwrap();
        (!s.is_empty()).then_some(())
    })
    .await;
    cc.send_with_notify(
        &q("consensus_results_queue"),
        msg(1).target("singularity_1"),
    )
    .await
    .unwrap();
    cc.send_with_notify(&q("guardian_safety_profiles_queue"), msg(2))
        .await
        .unwrap();
    wait_for("both handled", Duration::from_secs(20), || async {
        (results.snapshot().succeeded == 1 && profiles.snapshot().dead_lettered == 1).then_some(())
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn each_service_role_is_denied_the_other_services_tables() {
    let t = db().await;
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables
          WHERE schemaname IN ('singularity', 'centralcloud', 'genesis')
          ORDER BY 1, 2",
    )
    .fetch_all(t.pgflow.pool())
    .await
    .unwrap();
    for schema in ["singularity", "centralcloud", "genesis"] {
        assert!(
            tables.iter().any(|(s, _)| s == schema),
            "{schema} has tables: {tables:?}"
        );
    }
    for role in ["singularity", "centralcloud", "genesis"] {
        let pg = t.connect_as(role).await.unwrap();
        for (schema, table) in &tables {
            // Names come from pg_tables (the migrations' own), not from input.
            let sql = format!("SELECT count(*) FROM {schema}.{table}");
            let result = sqlx::query(&sql).fetch_all(pg.pool()).await;
            if schema == role {
                result.unwrap_or_else(|e| panic!("{role} reads its own {schema}.{table}: {e}"));
            } else {
                let err = result.unwrap_err();
                assert!(
                    err.to_string().contains("permission denied"),
                    "{role} on {schema}.{table}: {err}"
                );
            }
        }
        pg.close().await;
    }
}

#[tokio::test]
async fn each_service_role_is_denied_the_queues_it_does_not_own() {
    let t = db().await;
    // Registered targets: what stops these sends is row-level security.
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    let sing = t.connect_as("singularity").await.unwrap();
    let cc = t.connect_as("centralcloud").await.unwrap();
    let genesis = t.connect_as("genesis").await.unwrap();
    let rls = |e: pgflow_core::Error| {
        assert!(e.to_string().contains("row-level security"), "{e}");
    };

    // CentralCloud cannot send to Genesis's request queues (only to its
    // learning-loop queue), nor answer in Genesis's place.
    for queue in [
        "genesis_rule_updates",
        "genesis_llm_config_updates",
        "code_execution_requests",
        "code_execution_results",
    ] {
        // (Targeted: addressed, so what refuses it is row-level security.)
        rls(cc
            .send(&q(queue), msg(1).target("singularity_1"))
            .await
            .unwrap_err());
    }
    cc.send(&q("learning_loop_completed_queue"), msg(1))
        .await
        .unwrap();

    // Genesis cannot claim proposals (nor send them), only its own requests.
    sing.send(&q("proposals_for_consensus_queue"), msg(2))
        .await
        .unwrap();
    sing.send(&q("code_execution_requests"), msg(3))
        .await
        .unwrap();
    assert!(genesis
        .claim(&q("proposals_for_consensus_queue"), 10)
        .await
        .unwrap()
        .is_empty());
    rls(genesis
        .send(&q("proposals_for_consensus_queue"), msg(4))
        .await
        .unwrap_err());
    assert_eq!(
        genesis
            .claim(&q("code_execution_requests"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Nor can Genesis reach the proposal row behind RLS with plain SQL (a
    // lease column, the only kind a service may update)...
    let touched = sqlx::query(
        "UPDATE pgflow.messages SET visible_at = now() WHERE queue_name = 'proposals_for_consensus_queue'",
    )
    .execute(genesis.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(touched, 0);
    // ...and what a message says no service may update at all.
    let err = sqlx::query("UPDATE pgflow.messages SET priority = 9")
        .execute(genesis.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    // Singularity cannot answer its own Genesis requests or claim Genesis's work.
    rls(sing
        .send(&q("code_execution_results"), msg(5).target("singularity_1"))
        .await
        .unwrap_err());
    sing.send(&q("genesis_rule_updates"), msg(6)).await.unwrap();
    assert!(sing
        .claim(&q("genesis_rule_updates"), 10)
        .await
        .unwrap()
        .is_empty());
}
