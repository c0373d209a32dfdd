//! The failure scenarios of seed 004, across the real binaries: an
//! instance down, CentralCloud down, SIGKILLs at random points, poison
//! messages, and PostgreSQL itself stopped during traffic. Each test has
//! its own database (the last one its own cluster); nothing is lost.

mod harness;

use std::sync::{Arc, Mutex};

use harness::{post_json, Rng, Sys, CC_QUEUES, WAIT};
use pgflow_core::local_pg::{LocalPostgres, StopMode};
use pgflow_core::testing::{wait_for, TestDb, TestServer};
use pgflow_core::{OutgoingMessage, QueueName};
use serde_json::json;
use uuid::Uuid;

/// (proposal id, instance, file, content) of submitted proposals.
type Sent = Vec<(Uuid, String, String, String)>;

fn ids(sent: &Sent) -> Vec<Uuid> {
    sent.iter().map(|s| s.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_down_gets_its_result_when_it_is_back() {
    let mut sys = Sys::start(TestDb::new().await.unwrap(), 3, 6000).await;
    sys.stop_instance("singularity_2").await;
    // Still "live" for the subscriber TTL: asked to vote, it cannot; the
    // deadline decides on the other two votes.
    let id = sys
        .propose("singularity_2", "down.txt", "while down\n")
        .await
        .unwrap();
    let (status, by, rationale): (String, String, String) =
        wait_for("decided at the deadline", WAIT, || async {
            sqlx::query_as(
                "SELECT status, decided_by, rationale FROM centralcloud.proposals
                  WHERE proposal_id = $1 AND status <> 'collecting'",
            )
            .bind(id)
            .fetch_optional(sys.t.pgflow.pool())
            .await
            .unwrap()
        })
        .await;
    assert_eq!((status.as_str(), by.as_str()), ("approved", "deadline"));
    assert!(
        rationale.contains("did not vote (singularity_2)"),
        "{rationale}"
    );
    // The result waits in the targeted queue for singularity_2 only.
    let kept = sys
        .scalar(
            "SELECT count(*) FROM pgflow.messages
              WHERE queue_name = 'consensus_results_queue' AND target = 'singularity_2'",
        )
        .await;
    assert_eq!(kept, 1);
    assert_eq!(sys.status_of(id).await.as_deref(), Some("submitted"));

    sys.start_instance("singularity_2").await;
    sys.wait_status(id, "applied").await;
    let sent = vec![(
        id,
        "singularity_2".into(),
        "down.txt".into(),
        "while down\n".into(),
    )];
    sys.assert_effects(&sent).await;
    sys.wait_drained().await;
    assert_eq!(sys.scalar("SELECT count(*) FROM pgflow.dlq").await, 0);
    // Back after the deadline, it consumed its vote request without voting.
    let votes: Vec<(String, bool)> = sqlx::query_as(
        "SELECT voter, counted FROM centralcloud.votes WHERE proposal_id = $1 ORDER BY voter",
    )
    .bind(id)
    .fetch_all(sys.t.pgflow.pool())
    .await
    .unwrap();
    let want = [("singularity_1", true), ("singularity_3", true)];
    let want: Vec<(String, bool)> = want.iter().map(|(v, c)| (v.to_string(), *c)).collect();
    assert_eq!(votes, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_wait_for_centralcloud_and_are_all_handled() {
    let mut sys = Sys::start(TestDb::new().await.unwrap(), 2, 15000).await;
    sys.stop_cc().await;
    let mut sent: Sent = Vec::new();
    for i in 0..3 {
        let (file, change) = (format!("cli{i}.txt"), format!("cli {i}\n"));
        let id = sys.propose("singularity_1", &file, &change).await.unwrap();
        sent.push((id, "singularity_1".into(), file, change));
    }
    let addr = sys.http["singularity_2"];
    for i in 0..3 {
        let (file, change) = (format!("http{i}.txt"), format!("http {i}\n"));
        let body = json!({ "agent_type": "BugFixerAgent", "file": file, "change": change });
        let (code, resp) = post_json(addr, "/proposals", &body.to_string()).await;
        assert_eq!(code, 201, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        let id = v["proposal_id"].as_str().unwrap().parse().unwrap();
        sent.push((id, "singularity_2".into(), file, change));
    }
    for id in ids(&sent) {
        assert_eq!(sys.status_of(id).await.as_deref(), Some("submitted"));
    }
    let waiting = sys
        .scalar("SELECT count(*) FROM pgflow.messages WHERE queue_name = 'proposals_for_consensus_queue'")
        .await;
    assert_eq!(waiting, 6);

    sys.start_cc().await;
    sys.wait_final(&ids(&sent)).await;
    for id in ids(&sent) {
        assert_eq!(sys.status_of(id).await.as_deref(), Some("applied"), "{id}");
    }
    sys.assert_effects(&sent).await;
    sys.wait_drained().await;
    assert_eq!(sys.scalar("SELECT count(*) FROM pgflow.dlq").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_at_random_points_lose_nothing_and_apply_once() {
    let seed = std::env::var("FAILURES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0004_u64);
    eprintln!("sigkill scenario seed {seed} (FAILURES_SEED to replay)");
    let mut rng = Rng::new(seed);
    let mut sys = Sys::start(TestDb::new().await.unwrap(), 3, 2000).await;
    // Four kills spread over 20 proposals: centralcloud and instances in turn.
    let kill_at: Vec<u64> = (0..4).map(|k| 2 + 5 * k + rng.below(3)).collect();
    let mut sent: Sent = Vec::new();
    let mut kills = Vec::new();
    for i in 0..20u64 {
        let inst = format!("singularity_{}", 1 + rng.below(3));
        let (file, change) = (format!("k{i}.txt"), format!("change {i}\n"));
        let id = sys.propose(&inst, &file, &change).await.unwrap();
        sent.push((id, inst, file, change));
        if let Some(k) = kill_at.iter().position(|&at| at == i) {
            if k % 2 == 0 {
                let busy = sys
                    .await_in_flight(&format!("queue_name IN {CC_QUEUES}"))
                    .await;
                kills.push(format!("centralcloud (mid-work: {busy})"));
                sys.kill_cc().await;
                sys.start_cc().await;
            } else {
                let victim = format!("singularity_{}", 1 + rng.below(3));
                let busy = sys.await_in_flight(&format!("target = '{victim}'")).await;
                kills.push(format!("{victim} (mid-work: {busy})"));
                sys.kill_instance(&victim).await;
                sys.start_instance(&victim).await;
            }
        }
    }
    eprintln!("killed after proposals {kill_at:?}: {kills:?}");
    sys.wait_final(&ids(&sent)).await;
    sys.wait_drained().await;
    assert_eq!(sys.scalar("SELECT count(*) FROM pgflow.dlq").await, 0);
    // No double effect: one decision per proposal, and each applied change written once with its backup.
    sys.assert_effects(&sent).await;
    let decided = sys
        .scalar("SELECT count(*) FROM centralcloud.proposals WHERE status <> 'collecting'")
        .await;
    assert_eq!(decided, 20);
    sys.assert_decisions_followed(&ids(&sent)).await;
    let dups = sys
        .scalar("SELECT coalesce(sum(duplicate_deliveries), 0)::bigint FROM singularity.proposals")
        .await;
    let redelivered = sys
        .scalar("SELECT count(*) FROM pgflow.archive WHERE attempts > 1")
        .await;
    eprintln!(
        "duplicate deliveries counted by singularity: {dups}; redelivered messages: {redelivered}"
    );
    sys.assert_all_running();
}

/// A poison message: (queue, target, type, payload, what its DLQ reason says).
type Poison = (
    &'static str,
    &'static str,
    &'static str,
    serde_json::Value,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_and_no_service_stops() {
    let mut sys = Sys::start(TestDb::new().await.unwrap(), 1, 2000).await;
    let me = "singularity_1";
    let id = Uuid::now_v7().to_string();
    let long = "x".repeat(20 * 1024);
    let poison: Vec<Poison> = vec![
        (
            "proposals_for_consensus_queue",
            "",
            "proposal_for_consensus",
            json!("not an object"),
            "malformed",
        ),
        (
            "consensus_votes_queue",
            "",
            "bogus_type",
            json!({}),
            "unknown message type",
        ),
        (
            "metrics_to_guardian_queue",
            "",
            "execution_metrics",
            json!({ "proposal_id": id }),
            "missing field",
        ),
        (
            "patterns_for_aggregator_queue",
            "",
            "pattern_discovered",
            json!({ "instance_id": 7 }),
            "malformed",
        ),
        (
            "consensus_votes_queue",
            "",
            "consensus_vote",
            json!({ "proposal_id": id, "instance_id": me, "vote": "approve", "reason": long }),
            "reason",
        ),
        (
            "consensus_vote_requests_queue",
            me,
            "vote_request",
            json!("just text"),
            "malformed",
        ),
        (
            "consensus_results_queue",
            me,
            "consensus_result",
            json!({ "proposal_id": id, "instance_id": me, "status": "approved", "votes": {},
                 "confidence": "high", "decision_rationale": "", "timestamp": "2026-01-01T00:00:00Z" }),
            "invalid type",
        ),
        (
            "rollback_triggers_queue",
            me,
            "launch_missiles",
            json!({}),
            "unknown message type",
        ),
        (
            "guardian_safety_profiles_queue",
            me,
            "safety_profile_update",
            json!({}),
            "missing field",
        ),
        (
            "consensus_results_queue",
            me,
            "consensus_result",
            json!({ "proposal_id": id, "instance_id": me, "status": "approved", "votes": {},
                 "confidence": 1.0, "decision_rationale": long, "timestamp": "2026-01-01T00:00:00Z" }),
            "decision_rationale",
        ),
        (
            "proposals_for_execution_queue",
            me,
            "proposal_for_execution",
            json!({ "proposal_id": id, "instance_id": me, "agent_type": "BugFixerAgent",
                 "code_change": { "file": "../../etc/x", "change": "owned" } }),
            "../../etc/x",
        ),
    ];
    let mut sent = Vec::new();
    for (queue, target, ty, payload, why) in &poison {
        let mut msg = OutgoingMessage::new(*ty, payload.clone());
        if !target.is_empty() {
            msg = msg.target(*target);
        }
        let q = QueueName::new(*queue).unwrap();
        sent.push((sys.t.pgflow.send(&q, msg).await.unwrap(), *queue, *why));
    }
    let n = sent.len() as i64;
    wait_for("every poison message dead-lettered", WAIT, || async {
        (sys.scalar("SELECT count(*) FROM pgflow.dlq").await == n).then_some(())
    })
    .await;
    for (msg_id, queue, why) in &sent {
        let error: String = sqlx::query_scalar("SELECT error FROM pgflow.dlq WHERE id = $1")
            .bind(msg_id)
            .fetch_one(sys.t.pgflow.pool())
            .await
            .unwrap();
        assert!(error.contains(why), "{queue}: {why:?} not in {error:?}");
    }
    assert!(!sys.workspace(me).join("../../etc/x").exists());

    // An execution naming an approved proposal, with an escaping path: the
    // proposal is marked failed with the reason (the message is acked).
    let victim = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO singularity.proposals (id, instance_id, agent_type, file, change,
             impact_score, risk_score, status, trace_id)
         VALUES ($1, $2, 'BugFixerAgent', 'victim.txt', 'x', 5, 1, 'consensus_reached', $1)",
    )
    .bind(victim)
    .bind(me)
    .execute(sys.t.pgflow.pool())
    .await
    .unwrap();
    let exec = json!({ "proposal_id": victim, "instance_id": me, "agent_type": "BugFixerAgent",
                       "code_change": { "file": "../../etc/x", "change": "owned" } });
    let msg = OutgoingMessage::new("proposal_for_execution", exec).target(me);
    let q = QueueName::new("proposals_for_execution_queue").unwrap();
    sys.t.pgflow.send(&q, msg).await.unwrap();
    sys.wait_status(victim, "failed").await;
    let error: String = sqlx::query_scalar("SELECT error FROM singularity.proposals WHERE id = $1")
        .bind(victim)
        .fetch_one(sys.t.pgflow.pool())
        .await
        .unwrap();
    assert!(
        error.contains("refused") && error.contains("../../etc/x"),
        "{error}"
    );
    assert!(!sys.workspace(me).join("victim.txt").exists());

    // The HTTP API refuses an escaping path with the reason, storing nothing.
    let body = json!({ "agent_type": "BugFixerAgent", "file": "../../etc/x", "change": "owned" });
    let (code, resp) = post_json(sys.http[me], "/proposals", &body.to_string()).await;
    assert_eq!(code, 400, "{resp}");
    assert!(
        resp.contains("../../etc/x") && resp.contains("relative"),
        "{resp}"
    );
    assert_eq!(
        sys.scalar("SELECT count(*) FROM singularity.proposals WHERE file LIKE '%etc/x'")
            .await,
        0
    );

    // Everyone still runs, and a valid proposal goes all the way.
    sys.assert_all_running();
    let ok = sys.propose(me, "fine.txt", "fine\n").await.unwrap();
    sys.wait_status(ok, "applied").await;
    sys.assert_effects(&[(ok, me.into(), "fine.txt".into(), "fine\n".into())])
        .await;
    assert_eq!(sys.scalar("SELECT count(*) FROM pgflow.dlq").await, n);
    sys.assert_all_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_during_traffic_loses_nothing() {
    let pg = tokio::task::spawn_blocking(LocalPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let server = Arc::new(TestServer {
        admin_url: pg.url("postgres"),
        local: Some(Mutex::new(pg)),
    });
    let t = TestDb::on(server.clone(), true).await.unwrap();
    // Long enough for the votes to outlast the outage (all voted decides earlier).
    let mut sys = Sys::start(t, 2, 15000).await;
    let mut sent: Sent = Vec::new();
    for i in 0..6 {
        let inst = format!("singularity_{}", 1 + i % 2);
        let (file, change) = (format!("pg{i}.txt"), format!("before outage {i}\n"));
        let id = sys.propose(&inst, &file, &change).await.unwrap();
        sent.push((id, inst, file, change));
    }
    let cluster = server.clone();
    let pg_ctl = move |stop: bool| {
        let c = cluster.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut pg = c.local.as_ref().unwrap().lock().unwrap();
                if stop {
                    pg.stop(StopMode::Immediate)
                } else {
                    pg.start_again()
                }
            })
            .await
            .unwrap()
            .unwrap();
        }
    };
    let in_flight = sys
        .scalar("SELECT count(*) FROM singularity.proposals WHERE status NOT IN ('applied', 'rolled_back', 'consensus_failed', 'failed')")
        .await;
    eprintln!("{in_flight} of 6 proposals not final when PostgreSQL stops");
    pg_ctl(true).await;
    // A submission during the outage is spooled, by the CLI (into the
    // instance's spool) and through the running instance's HTTP API, and
    // submitted by the instance when the database is back.
    let id = sys
        .propose(
            "singularity_1",
            "outage.txt",
            "proposed during the outage\n",
        )
        .await
        .unwrap();
    sent.push((
        id,
        "singularity_1".into(),
        "outage.txt".into(),
        "proposed during the outage\n".into(),
    ));
    let (status, body) = post_json(
        sys.http["singularity_1"],
        "/proposals",
        r#"{"agent_type":"BugFixerAgent","file":"spooled.txt","change":"made during the outage\n"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let spooled: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(spooled["status"], "spooled", "{body}");
    sent.push((
        spooled["proposal_id"].as_str().unwrap().parse().unwrap(),
        "singularity_1".into(),
        "spooled.txt".into(),
        "made during the outage\n".into(),
    ));
    pg_ctl(false).await;

    sys.wait_final(&ids(&sent)).await;
    sys.assert_decisions_followed(&ids(&sent)).await;
    sys.assert_effects(&sent).await;
    sys.wait_drained().await;
    assert_eq!(sys.scalar("SELECT count(*) FROM pgflow.dlq").await, 0);
    sys.assert_all_running();
}
