//! Paths that leave the workspace are refused with a clear reason, the
//! proposal is marked failed, and nothing is written outside: `..`,
//! absolute paths (even when stored around the submission checks), and
//! symlinks leading out of the workspace.

use pgflow_core::protocol::{queues, ConsensusStatus};

use crate::support::{send_raw_execution, store_raw, waiting, Env};

#[tokio::test]
async fn dot_dot_and_absolute_paths_are_refused_at_execution() {
    let env = Env::start().await;
    let outside_abs = env.dir.path().join("abs.txt");
    let cases = [
        ("../escape.txt".to_string(), "'..'"),
        (outside_abs.display().to_string(), "absolute"),
    ];
    for (file, why) in &cases {
        let (id, trace) = store_raw(&env, file, "consensus_reached").await;
        send_raw_execution(&env, id, trace, file).await;
        env.wait_status(id, "failed").await;
        let error = env.proposal(id).await.error.unwrap();
        assert!(
            error.contains(why) && error.contains("refused"),
            "{file}: {error}"
        );
    }
    assert!(!env.dir.path().join("escape.txt").exists());
    assert!(!outside_abs.exists());
    // Refused, not dead-lettered: the reason is on the proposal.
    assert!(env.dlq(queues::PROPOSALS_FOR_EXECUTION).await.is_empty());
    env.stop().await;
}

#[tokio::test]
async fn an_approved_proposal_with_an_escaping_path_fails_instead_of_executing() {
    let env = Env::start().await;
    let (id, trace) = store_raw(&env, "../../etc/x", "submitted").await;
    let s = singularity::Submitted {
        proposal_id: id,
        trace_id: trace,
        status: "submitted".into(),
        repeat: false,
    };
    env.cc_decide(&s, ConsensusStatus::Approved).await;
    env.wait_status(id, "failed").await;
    let error = env.proposal(id).await.error.unwrap();
    assert!(error.contains("'..'"), "{error}");
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_EXECUTION).await, 0);
    env.stop().await;
}

#[tokio::test]
async fn symlinks_leading_outside_the_workspace_are_refused() {
    let env = Env::start().await;
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "keep me").unwrap();
    std::fs::create_dir_all(env.ws()).unwrap();
    std::os::unix::fs::symlink(&outside, env.ws().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), env.ws().join("secret_link")).unwrap();

    let through_dir = env.propose("link/evil.txt", "pwned", 1.0).await;
    let the_file = env.propose("secret_link", "pwned", 1.0).await;
    for (s, why) in [
        (&through_dir, "leads outside the workspace"),
        (&the_file, "symlink"),
    ] {
        env.cc_decide(s, ConsensusStatus::Approved).await;
        env.wait_status(s.proposal_id, "failed").await;
        let error = env.proposal(s.proposal_id).await.error.unwrap();
        assert!(error.contains(why), "{error}");
    }
    assert!(!outside.join("evil.txt").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "keep me"
    );
    assert!(env.ws().join("secret_link").is_symlink());
    env.stop().await;
}
