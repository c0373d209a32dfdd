//! Delivery kinds: competing consumers, targeted delivery (only the named
//! instance gets it) and broadcast (every live subscriber, once each), with
//! three subscribers as in the design.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgflow_core::consumer::{handler_fn, ConsumerConfig, Runtime};
use pgflow_core::testing::wait_for;
use pgflow_core::{Delivery, OutgoingMessage, QueueName};
use tokio_util::sync::CancellationToken;

use crate::support::{db, msg, n_of};

const WAIT: Duration = Duration::from_secs(20);
const INSTANCES: [&str; 3] = ["singularity_1", "singularity_2", "singularity_3"];

type Seen = Arc<Mutex<HashMap<String, Vec<i64>>>>;

/// Starts one runtime per instance consuming `queue`; returns what each saw.
fn start_instances(
    pg: &pgflow_core::Pgflow,
    queue: &QueueName,
    stop: &CancellationToken,
) -> (Seen, Vec<Arc<pgflow_core::consumer::ConsumerState>>) {
    let seen: Seen = Arc::default();
    let mut states = Vec::new();
    for inst in INSTANCES {
        let mut rt = Runtime::new(pg.clone());
        let s = seen.clone();
        let name = inst.to_string();
        states.push(
            rt.consumer(
                ConsumerConfig::new(queue.clone())
                    .instance(inst)
                    .poll_interval(Duration::from_millis(50)),
                handler_fn(move |d: Delivery| {
                    let (s, name) = (s.clone(), name.clone());
                    async move {
                        assert!(d.target == name, "{name} got a copy for {:?}", d.target);
                        s.lock()
                            .unwrap()
                            .entry(name)
                            .or_default()
                            .push(n_of(&d.payload));
                        Ok(())
                    }
                }),
            ),
        );
        tokio::spawn(rt.run(stop.clone()));
    }
    (seen, states)
}

#[tokio::test]
async fn targeted_messages_reach_only_their_instance() {
    let t = db().await;
    let q = QueueName::new("consensus_results_queue").unwrap();
    let stop = CancellationToken::new();
    let (seen, states) = start_instances(&t.pgflow, &q, &stop);
    // Each instance's consumer registers it on the queue; sends wait for that.
    wait_for("3 registered instances", WAIT, || async {
        let subs = t.pgflow.list_subscribers(Some(&q)).await.unwrap();
        (subs.len() == 3).then_some(())
    })
    .await;
    for n in 0..9 {
        let to = INSTANCES[(n % 3) as usize];
        t.pgflow
            .send_with_notify(&q, msg(n).target(to))
            .await
            .unwrap();
    }
    wait_for("9 handled", WAIT, || async {
        (states.iter().map(|s| s.snapshot().succeeded).sum::<u64>() == 9).then_some(())
    })
    .await;
    stop.cancel();
    let seen = seen.lock().unwrap();
    assert_eq!(seen["singularity_1"], vec![0, 3, 6]);
    assert_eq!(seen["singularity_2"], vec![1, 4, 7]);
    assert_eq!(seen["singularity_3"], vec![2, 5, 8]);
}

#[tokio::test]
async fn broadcast_gives_every_live_subscriber_its_own_copy_exactly_once() {
    let t = db().await;
    let q = QueueName::new("guardian_safety_profiles_queue").unwrap();
    let stop = CancellationToken::new();
    let (seen, states) = start_instances(&t.pgflow, &q, &stop);
    wait_for("3 live subscribers", WAIT, || async {
        let subs = t.pgflow.list_subscribers(Some(&q)).await.unwrap();
        (subs.iter().filter(|s| s.live).count() == 3).then_some(())
    })
    .await;
    // A fourth subscriber that has gone away (last seen long ago) gets nothing.
    t.pgflow
        .register_subscriber(&q, "singularity_gone")
        .await
        .unwrap();
    sqlx::query("UPDATE pgflow.subscribers SET last_seen = now() - interval '1 day' WHERE subscriber = 'singularity_gone'")
        .execute(t.pgflow.pool())
        .await
        .unwrap();

    for n in 0..5 {
        t.pgflow.send_with_notify(&q, msg(n)).await.unwrap();
    }

    wait_for("15 copies handled", WAIT, || async {
        (states.iter().map(|s| s.snapshot().succeeded).sum::<u64>() == 15).then_some(())
    })
    .await;
    stop.cancel();
    {
        let seen = seen.lock().unwrap();
        for inst in INSTANCES {
            assert_eq!(seen[inst], vec![0, 1, 2, 3, 4], "{inst}");
        }
    }
    let gone: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.pgflow_messages WHERE target = 'singularity_gone'",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(gone, 0);
    let subs = t.pgflow.list_subscribers(Some(&q)).await.unwrap();
    let gone = subs
        .iter()
        .find(|s| s.subscriber == "singularity_gone")
        .unwrap();
    assert!(!gone.live);
}

#[tokio::test]
async fn competing_consumers_share_the_work_without_duplicates() {
    let t = db().await;
    let q = QueueName::new("proposals_for_consensus_queue").unwrap();
    let stop = CancellationToken::new();
    let seen: Seen = Arc::default();
    let mut states = Vec::new();
    for inst in INSTANCES {
        let mut rt = Runtime::new(t.pgflow.clone());
        let (s, name) = (seen.clone(), inst.to_string());
        states.push(
            rt.consumer(
                ConsumerConfig::new(q.clone())
                    .instance(inst)
                    .workers(2)
                    .batch_size(5),
                handler_fn(move |d: Delivery| {
                    let (s, name) = (s.clone(), name.clone());
                    async move {
                        s.lock()
                            .unwrap()
                            .entry(name)
                            .or_default()
                            .push(n_of(&d.payload));
                        Ok(())
                    }
                }),
            ),
        );
        tokio::spawn(rt.run(stop.clone()));
    }
    let msgs: Vec<OutgoingMessage> = (0..300).map(msg).collect();
    t.pgflow.send_batch_with_notify(&q, &msgs).await.unwrap();
    wait_for("300 handled", WAIT, || async {
        (states.iter().map(|s| s.snapshot().succeeded).sum::<u64>() == 300).then_some(())
    })
    .await;
    stop.cancel();
    let mut all: Vec<i64> = seen.lock().unwrap().values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn resending_a_broadcast_message_adds_no_copies_and_no_subscriber_means_no_copy() {
    let t = db().await;
    let q = QueueName::new("consensus_vote_requests_queue").unwrap();
    let lonely = msg(0);
    t.pgflow.send(&q, lonely).await.unwrap();
    for inst in INSTANCES {
        t.pgflow.register_subscriber(&q, inst).await.unwrap();
    }
    let m = msg(1);
    t.pgflow.send(&q, m.clone()).await.unwrap();
    t.pgflow.send(&q, m).await.unwrap(); // a spool replay of the same id
    let targets: Vec<String> =
        sqlx::query_scalar("SELECT target FROM pgflow.messages ORDER BY target")
            .fetch_all(t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(targets, INSTANCES.to_vec());
    let err = t
        .pgflow
        .register_subscriber(&QueueName::new("nope").unwrap(), "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown queue"), "{err}");
}
