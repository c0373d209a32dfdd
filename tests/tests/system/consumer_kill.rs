//! A consumer process killed with SIGKILL in the middle of a batch: every
//! message is delivered again and processed once the leases expire.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgflow_core::testing::{wait_for, TestDb};
use pgflow_core::{OutgoingMessage, QueueConfig, QueueName};
use system_tests::Service;

const N: i64 = 200;

fn ids_in(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

fn drain(s: &mut Service) {
    while let Ok(l) = s.lines.try_recv() {
        s.seen.push(l);
    }
}

async fn scalar(t: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn sigkill_mid_batch_loses_nothing() {
    let t = TestDb::new().await.unwrap();
    let q = QueueName::new("kill_q").unwrap();
    t.pgflow
        .create_queue(&QueueConfig::new(q.clone()))
        .await
        .unwrap();
    let msgs: Vec<_> = (0..N)
        .map(|n| OutgoingMessage::new("job", serde_json::json!({ "n": n })))
        .collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let env = [("PGFLOW_DATABASE_URL", t.url.as_str())];

    // Slow handlers (a 50 ms command each), 8 at a time.
    let mut first = Service::spawn(
        "pgflow",
        &[
            "consume",
            "kill_q",
            "--workers",
            "8",
            "--batch-size",
            "8",
            "--exec",
            "sleep 0.05",
        ],
        &env,
    );
    first
        .wait_for_line("pgflow consume ready", Duration::from_secs(30))
        .await;
    for _ in 0..20 {
        first.wait_for_line("\"id\"", Duration::from_secs(30)).await;
    }
    let leased_before = scalar(
        &t,
        "SELECT count(*) FROM pgflow.messages WHERE lease IS NOT NULL",
    )
    .await;
    first.signal(Signal::SIGKILL);
    let _ = first.child.wait().await;
    drain(&mut first);
    let leased = scalar(
        &t,
        "SELECT count(*) FROM pgflow.messages WHERE lease IS NOT NULL AND visible_at > now()",
    )
    .await;
    assert!(
        leased > 0 && leased_before > 0,
        "killed mid-batch: messages were in flight"
    );
    let done_first = ids_in(&first.seen);
    assert!(!done_first.is_empty() && (done_first.len() as i64) < N);

    // The dead process's leases expire (back-dated instead of waited for).
    sqlx::query("UPDATE pgflow.messages SET visible_at = now() WHERE lease IS NOT NULL")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    let mut second = Service::spawn("pgflow", &["consume", "kill_q", "--workers", "8"], &env);
    second
        .wait_for_line("pgflow consume ready", Duration::from_secs(30))
        .await;
    wait_for("queue drained", Duration::from_secs(60), || async {
        (scalar(&t, "SELECT count(*) FROM pgflow.messages").await == 0).then_some(())
    })
    .await;
    assert_eq!(second.terminate(Duration::from_secs(15)).await, Some(0));
    drain(&mut second);

    let done_second = ids_in(&second.seen);
    let all: HashSet<_> = done_first.iter().chain(&done_second).cloned().collect();
    assert_eq!(all.len() as i64, N, "every message processed");
    assert_eq!(scalar(&t, "SELECT count(*) FROM pgflow.archive").await, N);
    assert_eq!(scalar(&t, "SELECT count(*) FROM pgflow.dlq").await, 0);
    // Only messages handled but not yet acked at the kill run twice.
    let twice = done_first.len() + done_second.len() - all.len();
    assert!(
        twice as i64 <= leased,
        "{twice} duplicates, {leased} were in flight"
    );
}
