//! The seeds' example payloads (seed 001 "Message Types", seed 000 Genesis
//! flows, converted from Elixir maps to JSON with `DateTime.utc_now()` as a
//! fixed instant) decode into the protocol types, survive a round trip, and
//! bad payloads fail with clear reasons.

use std::fmt::Debug;

use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::message::priority;

const T0: &str = "2025-10-31T12:00:00Z";
const PROPOSAL: &str = "123e4567-e89b-12d3-a456-426614174000";

/// A delivery of `payload` as a message of `msg_type`, version 1, sent by
/// an operator (trusted to speak for any instance).
fn delivery(msg_type: &str, payload: Value) -> Delivery {
    from("operator:postgres", msg_type, payload)
}

/// A delivery of `payload` as a message of `msg_type` recorded as sent by `source`.
fn from(source: &str, msg_type: &str, payload: Value) -> Delivery {
    Delivery {
        id: Uuid::now_v7(),
        seq: 1,
        queue_name: "test_queue".into(),
        target: String::new(),
        priority: 0,
        msg_type: msg_type.into(),
        schema_version: 1,
        trace_id: Uuid::now_v7(),
        source: Some(source.into()),
        payload: crate::Payload::from_value(&payload).unwrap(),
        attempts: 1,
        max_retries: 3,
        created_at: Utc::now(),
        lease_expires_at: Utc::now(),
        lease: Uuid::now_v7(),
        last_error: None,
    }
}

/// Decodes `payload` as `T` through [`decode`], then checks that encoding
/// and decoding again gives the same value.
fn seed<T>(payload: Value) -> T
where
    T: MessageType + Validate + PartialEq + Debug,
{
    let decoded: T = decode(&delivery(T::TYPE, payload))
        .unwrap_or_else(|e| panic!("{} seed example: {e}", T::TYPE));
    let msg = encode(&decoded).unwrap_or_else(|e| panic!("{}: {e}", T::TYPE));
    assert_eq!(msg.msg_type(), T::TYPE);
    let again: T = decode(&delivery(T::TYPE, msg.payload().clone())).unwrap();
    assert_eq!(again, decoded, "{} round trip", T::TYPE);
    decoded
}

fn proposal_example() -> Value {
    // Seed 001, 1. Proposal -> Consensus.
    json!({
        "type": "proposal_for_consensus",
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_1",
        "agent_type": "BugFixerAgent",
        "code_change": {"file": "...", "change": "..."},
        "impact_score": 8.0,
        "risk_score": 1.0,
        "safety_profile": {"success_rate": 0.95, "cost_factor": 2.0},
        "timestamp": T0,
        "retry_count": 0,
        "max_retries": 3
    })
}

fn consensus_result_example() -> Value {
    // Seed 001, 2. Consensus Result -> Instance.
    json!({
        "type": "consensus_result",
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_1",
        "status": "approved",
        "votes": {
            "singularity_1": "approve",
            "singularity_2": "approve",
            "singularity_3": "reject"
        },
        "confidence": 0.95,
        "decision_rationale": "Similar to pattern_X",
        "timestamp": T0
    })
}

#[test]
fn seed_001_proposal_for_consensus() {
    let p: ProposalForConsensus = seed(proposal_example());
    assert_eq!(p.proposal_id.to_string(), PROPOSAL);
    assert_eq!(p.code_change.file, "...");
    assert_eq!(p.safety_profile.cost_factor, 2.0);
    assert_eq!((p.retry_count, p.max_retries), (0, 3));
    assert_eq!(p.timestamp.to_rfc3339(), "2025-10-31T12:00:00+00:00");

    // The producer of seed 001 step 2 leaves out the retry fields.
    let mut v = proposal_example();
    let obj = v.as_object_mut().unwrap();
    obj.remove("retry_count");
    obj.remove("max_retries");
    let p: ProposalForConsensus = seed(v);
    assert_eq!((p.retry_count, p.max_retries), (0, 3));
}

#[test]
fn seed_001_consensus_result() {
    let r: ConsensusResult = seed(consensus_result_example());
    assert_eq!(r.status, ConsensusStatus::Approved);
    assert_eq!(r.votes["singularity_3"], Vote::Reject);
    assert_eq!(r.votes.len(), 3);

    // Seed 002's example has no decision_rationale.
    let mut v = consensus_result_example();
    v.as_object_mut().unwrap().remove("decision_rationale");
    let r: ConsensusResult = seed(v);
    assert_eq!(r.decision_rationale, "");
}

#[test]
fn seed_001_execution_metrics() {
    let m: ExecutionMetrics = seed(json!({
        "type": "execution_metrics",
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_1",
        "agent_type": "BugFixerAgent",
        "metrics_before": {"cpu_usage": 45.2, "memory": 512.0, "error_count": 2},
        "metrics_after": {"cpu_usage": 46.1, "memory": 513.5, "error_count": 3},
        "status": "executing",
        "timestamp": T0
    }));
    assert_eq!(m.status, ProposalStatus::Executing);
    assert_eq!(m.metrics_after.error_count, 3);
    assert_eq!(m.metrics_after.error_rate, None);
    // Absent optional metrics stay out of the JSON.
    let out = serde_json::to_value(&m).unwrap();
    assert!(out["metrics_before"].get("latency_ms").is_none());
}

#[test]
fn seed_001_pattern_discovered() {
    let p: PatternDiscovered = seed(json!({
        "type": "pattern_discovered",
        "instance_id": "singularity_1",
        "pattern_type": "refactoring",
        "code_pattern": {
            "before": "...",
            "after": "...",
            "description": "Extract function for readability"
        },
        "success_rate": 0.97,
        "agent_type": "RefactoringAgent",
        "timestamp": T0
    }));
    assert_eq!(p.pattern_type, PatternType::Refactoring);
    let bug: PatternType = serde_json::from_value(json!("bug_fix")).unwrap();
    assert_eq!(bug, PatternType::BugFix);
}

#[test]
fn seed_001_rollback_trigger() {
    let r: RollbackTrigger = seed(json!({
        "type": "rollback_trigger",
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_1",
        "reason": "error_rate_breach",
        "threshold": {"error_rate": 0.10, "actual": 0.15},
        "timestamp": T0
    }));
    assert_eq!(r.reason, RollbackReason::ErrorRateBreach);
    assert_eq!(r.threshold.threshold, 0.10);
    assert_eq!(r.threshold.actual, 0.15);
    let out = serde_json::to_value(&r).unwrap();
    assert_eq!(out["threshold"], json!({"threshold": 0.10, "actual": 0.15}));
}

#[test]
fn seed_001_safety_profile_update() {
    let u: SafetyProfileUpdate = seed(json!({
        "type": "safety_profile_update",
        "instance_id": "singularity_1",
        "agent_type": "BugFixerAgent",
        "safety_profile": {
            "success_rate": 0.99,
            "error_threshold": 0.10,
            "latency_threshold": 3000,
            "cost_threshold": 0.10
        },
        "source": "genesis_learning_loop",
        "timestamp": T0
    }));
    assert_eq!(u.instance_id.as_deref(), Some("singularity_1"));
    assert_eq!(u.safety_profile.latency_threshold, 3000.0);
}

#[test]
fn seed_001_learning_loop_completed() {
    let l: LearningLoopCompleted = seed(json!({
        "type": "learning_loop_completed",
        "patterns_processed": 5,
        "rules_generated": 2,
        "thresholds_updated": 3,
        "timestamp": T0
    }));
    assert_eq!(
        (
            l.patterns_processed,
            l.rules_generated,
            l.thresholds_updated
        ),
        (5, 2, 3)
    );
}

#[test]
fn seed_000_code_execution_request() {
    // Seed 000, Test 3 (one of the eight jobs).
    let r: CodeExecutionRequest = seed(json!({
        "type": "code_execution_request",
        "id": "job_1",
        "code": "def foo, do: 42",
        "language": "elixir",
        "analysis_type": "quality"
    }));
    assert_eq!(r.id, "job_1");
    assert_eq!(r.analysis_type, AnalysisType::Quality);
    assert_eq!(r.instance_id, None);
}

#[test]
fn genesis_requests_and_results_round_trip() {
    let request_id = Uuid::now_v7().to_string();
    let rule: GenesisRuleUpdate = seed(json!({
        "request_id": request_id,
        "instance_id": "singularity_1",
        "namespace": "code_quality",
        "rule": {"name": "extract_function", "when": {"function_lines": 50}},
        "confidence": 0.92,
        "timestamp": T0
    }));
    let _: RuleUpdateResult = seed(json!({
        "request_id": request_id,
        "instance_id": "singularity_1",
        "status": "completed",
        "namespace": rule.namespace,
        "confidence": rule.confidence,
        "timestamp": T0
    }));
    let cfg: GenesisLlmConfigUpdate = seed(json!({
        "request_id": request_id,
        "instance_id": "singularity_1",
        "provider": "claude",
        "complexity": "complex",
        "models": ["claude-sonnet", "claude-opus"],
        "timestamp": T0
    }));
    let _: LlmConfigUpdateResult = seed(json!({
        "request_id": request_id,
        "instance_id": "singularity_1",
        "status": "completed",
        "provider": cfg.provider,
        "complexity": "complex",
        "models_count": cfg.models.len(),
        "timestamp": T0
    }));
    let job: CodeExecutionResult = seed(json!({
        "request_id": "job_1",
        "instance_id": "singularity_1",
        "status": "completed",
        "analysis_type": "security",
        "output": {
            "summary": "1 issue",
            "findings": [{
                "line": 3,
                "severity": "warning",
                "check": "dynamic_code",
                "message": "Code.eval_string evaluates arbitrary code"
            }]
        },
        "metrics": {"execution_ms": 12, "quality_score": 0.8, "issues_count": 1},
        "timestamp": T0
    }));
    assert_eq!(job.output.findings[0].line, 3);
    assert_eq!(job.output.findings[0].severity, Severity::Warning);
    let _: RuleUpdateResult = seed(json!({
        "request_id": request_id,
        "instance_id": "singularity_1",
        "status": "failed",
        "namespace": "code_quality",
        "confidence": 0.5,
        "error": "workflow timed out after 30000 ms",
        "timestamp": T0
    }));
}

#[test]
fn design_messages_round_trip() {
    let change = json!({"file": "lib/app.ex", "change": "defmodule App do\nend\n"});
    let _: VoteRequest = seed(json!({
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_1",
        "agent_type": "BugFixerAgent",
        "code_change": change,
        "impact_score": 8.0,
        "risk_score": 1.0,
        "deadline": T0
    }));
    let vote: ConsensusVote = seed(json!({
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_2",
        "vote": "approve",
        "reason": "success rate 0.97 above profile 0.95"
    }));
    assert_eq!(vote.vote, Vote::Approve);
    let _: ProposalForExecution = seed(json!({
        "proposal_id": PROPOSAL,
        "instance_id": "singularity_1",
        "agent_type": "BugFixerAgent",
        "code_change": change
    }));
}

#[test]
fn unknown_fields_are_ignored() {
    let mut v = consensus_result_example();
    v["added_in_a_later_version"] = json!({"x": 1});
    let _: ConsensusResult = decode(&delivery(ConsensusResult::TYPE, v)).unwrap();
}

#[test]
fn missing_field_is_a_clear_fatal_error() {
    let mut v = proposal_example();
    v.as_object_mut().unwrap().remove("proposal_id");
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(err.is_fatal());
    let text = err.to_string();
    assert!(
        text.contains("malformed \"proposal_for_consensus\" payload"),
        "{text}"
    );
    assert!(text.contains("missing field `proposal_id`"), "{text}");

    let mut v = proposal_example();
    v["code_change"].as_object_mut().unwrap().remove("file");
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(err.to_string().contains("missing field `file`"), "{err}");
}

#[test]
fn wrong_type_is_a_clear_fatal_error() {
    let mut v = proposal_example();
    v["impact_score"] = json!("high");
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(err.is_fatal());
    assert!(
        err.to_string().contains("invalid type: string \"high\""),
        "{err}"
    );

    let mut v = proposal_example();
    v["proposal_id"] = json!("not-a-uuid");
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(err.to_string().contains("UUID"), "{err}");

    let mut v = consensus_result_example();
    v["status"] = json!("maybe");
    let err = decode::<ConsensusResult>(&delivery("consensus_result", v)).unwrap_err();
    assert!(err.to_string().contains("unknown variant `maybe`"), "{err}");
    assert!(err.to_string().contains("`approved`"), "{err}");
}

#[test]
fn envelope_type_and_version_are_checked() {
    let err = decode::<ConsensusResult>(&delivery("vote_request", consensus_result_example()))
        .unwrap_err();
    assert!(err.is_fatal());
    assert!(
        err.to_string()
            .contains("unknown message type \"vote_request\""),
        "{err}"
    );

    let mut d = delivery("consensus_result", consensus_result_example());
    d.schema_version = 2;
    let err = decode::<ConsensusResult>(&d).unwrap_err();
    assert!(
        err.to_string().contains("unsupported schema version 2"),
        "{err}"
    );
}

#[test]
fn validation_rejects_bad_confidence() {
    for bad in [1.5, -0.1] {
        let mut v = consensus_result_example();
        v["confidence"] = json!(bad);
        let err = decode::<ConsensusResult>(&delivery("consensus_result", v)).unwrap_err();
        assert!(err.is_fatal());
        let text = err.to_string();
        assert!(
            text.contains("invalid \"consensus_result\" payload"),
            "{text}"
        );
        assert!(text.contains("confidence: must be in [0, 1]"), "{text}");
    }
}

#[test]
fn validation_rejects_escaping_paths() {
    for (file, why) in [
        ("../etc/passwd", "'..' component"),
        ("/etc/passwd", "absolute path"),
        ("lib/../../etc/passwd", "'..' component"),
    ] {
        let mut v = proposal_example();
        v["code_change"]["file"] = json!(file);
        let err =
            decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("code_change.file"), "{file}: {text}");
        assert!(text.contains(why), "{file}: {text}");
    }
}

#[test]
fn validation_rejects_oversize_code_and_names() {
    let mut v = proposal_example();
    v["code_change"]["change"] = json!("x".repeat(validate::MAX_CODE_LEN + 1));
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(
        err.to_string()
            .contains("code_change.change: must be at most"),
        "{err}"
    );

    let job = json!({
        "id": "job_1", "code": "x".repeat(validate::MAX_CODE_LEN + 1),
        "language": "elixir", "analysis_type": "security"
    });
    let err = decode::<CodeExecutionRequest>(&delivery("code_execution_request", job)).unwrap_err();
    assert!(err.to_string().contains("code: must be at most"), "{err}");

    let mut v = proposal_example();
    v["agent_type"] = json!("A".repeat(validate::MAX_NAME_LEN + 1));
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(
        err.to_string()
            .contains("agent_type: must be at most 100 bytes"),
        "{err}"
    );

    let mut v = proposal_example();
    v["instance_id"] = json!("");
    let err = decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).unwrap_err();
    assert!(
        err.to_string().contains("instance_id: must not be empty"),
        "{err}"
    );
}

#[test]
fn validation_rejects_other_out_of_range_values() {
    let mut v = proposal_example();
    v["risk_score"] = json!(-1.0);
    assert!(decode::<ProposalForConsensus>(&delivery("proposal_for_consensus", v)).is_err());

    let failed_without_error = json!({
        "request_id": "job_1", "instance_id": "singularity_1", "status": "failed",
        "analysis_type": "quality", "output": {"summary": "", "findings": []},
        "metrics": {"execution_ms": 1, "quality_score": 0.0, "issues_count": 0},
        "timestamp": T0
    });
    let err =
        decode::<CodeExecutionResult>(&delivery("code_execution_result", failed_without_error))
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("error: a failed result must say why"),
        "{err}"
    );

    let rule = json!({
        "request_id": Uuid::now_v7(), "instance_id": "singularity_1",
        "namespace": "q", "rule": "not an object", "confidence": 0.9, "timestamp": T0
    });
    let err = decode::<GenesisRuleUpdate>(&delivery("genesis_rule_update", rule)).unwrap_err();
    assert!(
        err.to_string().contains("rule: must be a JSON object"),
        "{err}"
    );
}

#[test]
fn encode_validates_and_sets_the_route_priority() {
    let trigger = RollbackTrigger {
        proposal_id: Uuid::now_v7(),
        instance_id: "singularity_2".into(),
        reason: RollbackReason::LatencyBreach,
        threshold: Breach {
            threshold: 3000.0,
            actual: 4200.0,
        },
        timestamp: Utc::now(),
    };
    let msg = encode(&trigger).unwrap();
    assert_eq!(msg.msg_type(), "rollback_trigger");
    assert_eq!(msg.priority, priority::HIGH);
    assert_eq!(msg.schema_version, 1);

    let vote = ConsensusVote {
        proposal_id: Uuid::now_v7(),
        instance_id: "singularity_2".into(),
        vote: Vote::Reject,
        reason: String::new(),
    };
    let err = encode(&vote).unwrap_err();
    assert!(matches!(err, crate::Error::InvalidMessage(_)), "{err}");
    assert!(
        err.to_string().contains("reason: must not be empty"),
        "{err}"
    );
}

#[test]
fn a_message_speaking_for_an_instance_must_come_from_it_or_an_operator() {
    let p = proposal_example(); // speaks for singularity_1
    let ok: Result<ProposalForConsensus, _> =
        decode(&from("singularity_1", "proposal_for_consensus", p.clone()));
    assert!(ok.is_ok(), "{ok:?}");
    let by_operator: Result<ProposalForConsensus, _> =
        decode(&from("operator:admin", "proposal_for_consensus", p.clone()));
    assert!(by_operator.is_ok(), "{by_operator:?}");
    for wrong in ["singularity_2", "singularity", "operator"] {
        let err = decode::<ProposalForConsensus>(&from(wrong, "proposal_for_consensus", p.clone()))
            .expect_err(wrong);
        assert!(err.is_fatal(), "{err}");
        assert!(err.to_string().contains("sender mismatch"), "{err}");
    }
    let mut none = from("x", "proposal_for_consensus", p);
    none.source = None;
    let err = decode::<ProposalForConsensus>(&none).expect_err("no source");
    assert!(err.to_string().contains("no recorded source"), "{err}");
}

#[test]
fn a_message_about_an_instance_needs_no_particular_sender() {
    // A consensus result names its proposer as the subject, not the sender.
    let r: Result<ConsensusResult, _> = decode(&from(
        "centralcloud",
        "consensus_result",
        consensus_result_example(),
    ));
    assert!(r.is_ok(), "{r:?}");
}
