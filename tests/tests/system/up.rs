//! `pgflow up --demo`: one command starts a private PostgreSQL, the three
//! services (centralcloud, genesis, three singularity instances) as
//! separate processes, feeds the seeds' scenarios through singularity and
//! shows them flowing; Ctrl-C stops every process it started.

use std::collections::HashMap;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use system_tests::Service;

/// `key=value` pairs of a view line (`proposals  applied=3 rolled_back=1 ...`).
fn counts(line: &str) -> HashMap<String, i64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgflow_up_demo_runs_the_whole_loop_and_stops_cleanly() {
    // Service::spawn clears the environment: no database URL, so `up`
    // starts its own PostgreSQL.
    let mut up = Service::spawn(
        "pgflow",
        &[
            "up",
            "--demo",
            "--refresh",
            "500ms",
            "--dashboard-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    let ready = up
        .wait_for_line("pgflow ready", Duration::from_secs(120))
        .await;
    let pids: Vec<i32> = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pids="))
        .unwrap_or_else(|| panic!("no pids= in {ready:?}"))
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 5, "{ready}");
    assert!(ready.contains("services=5"), "{ready}");

    // The view shows applied, rejected and rolled-back proposals and
    // completed Genesis workflows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let (mut proposals, mut workflows) = (HashMap::new(), HashMap::new());
    loop {
        let done = proposals.get("applied").is_some_and(|n| *n > 0)
            && proposals.get("consensus_failed").is_some_and(|n| *n > 0)
            && proposals.get("rolled_back").is_some_and(|n| *n > 0)
            && workflows.get("completed").is_some_and(|n| *n > 0);
        if done {
            break;
        }
        match tokio::time::timeout_at(deadline, up.lines.recv()).await {
            Ok(Some(line)) => {
                if let Some(rest) = line.strip_prefix("proposals ") {
                    proposals = counts(rest);
                } else if let Some(rest) = line.strip_prefix("workflows ") {
                    workflows = counts(rest);
                } else if line.starts_with("process ") {
                    assert!(line.contains(" running "), "{line}");
                }
                up.seen.push(line);
            }
            Ok(None) => panic!("pgflow up ended early:\n{}", up.seen.join("\n")),
            Err(_) => panic!(
                "the demo did not show applied, rejected and rolled-back proposals and \
                 completed workflows: {proposals:?} {workflows:?}\n{}",
                up.seen[up.seen.len().saturating_sub(60)..].join("\n")
            ),
        }
    }
    assert_eq!(proposals.get("failed"), Some(&0), "{proposals:?}");

    // `up` serves the dashboard too: it shows the instances and the
    // traffic the demo makes.
    let board: std::net::SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dashboard=http://"))
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no dashboard=<url> in {ready:?}"));
    let page = system_tests::get(board, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("pgflow dashboard"), "{}", page.body);
    let overview: serde_json::Value =
        serde_json::from_str(&system_tests::get(board, "/api/overview").await.body).unwrap();
    let nodes = overview["topology"]["nodes"].as_array().unwrap();
    let sing = nodes
        .iter()
        .find(|n| n["service"] == "singularity")
        .unwrap();
    assert_eq!(sing["instances"].as_array().unwrap().len(), 3, "{overview}");
    assert!(
        nodes.iter().all(|n| n["connections"].as_i64().unwrap() > 0),
        "{overview}"
    );
    assert_eq!(overview["topology"]["edges"].as_array().unwrap().len(), 16);

    // Ctrl-C: everything stops, exit 0, no child left.
    up.signal(Signal::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(90), up.child.wait())
        .await
        .expect("pgflow up did not exit after SIGINT")
        .unwrap();
    while let Ok(l) = up.lines.try_recv() {
        up.seen.push(l);
    }
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        up.seen[up.seen.len().saturating_sub(30)..].join("\n")
    );
    for pid in pids {
        assert_eq!(
            kill(Pid::from_raw(pid), None),
            Err(Errno::ESRCH),
            "service pid {pid} is still running"
        );
    }
}
