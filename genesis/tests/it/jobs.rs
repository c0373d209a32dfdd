//! The job executor through the queues: Elixir, Rust and Python parse with
//! tree-sitter, syntax errors come back with their line, and a job's
//! workflow is seen pending, running, completed.

use std::time::Duration;

use genesis::WorkflowConfig;
use pgflow_core::protocol::{queues, AnalysisType, CodeExecutionResult, ResultStatus};

use crate::support::{job, job_msg, Harness};

#[tokio::test]
async fn elixir_rust_and_python_parse_and_syntax_errors_carry_their_line() {
    let h = Harness::start(WorkflowConfig::default()).await;
    // (job id, language, code, line of the syntax error if any)
    let cases: [(&str, &str, &str, Option<u32>); 6] = [
        (
            "ex_ok",
            "elixir",
            "defmodule Greeter do\n  def hello(name) do\n    \"Hello \" <> name\n  end\nend\n",
            None,
        ),
        (
            "rs_ok",
            "rust",
            "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
            None,
        ),
        (
            "py_ok",
            "python",
            "def add(a, b):\n    return a + b\n",
            None,
        ),
        (
            "ex_bad",
            "elixir",
            "defmodule Broken do\n  def f(x) do\n    x +\n  end\n",
            None, // reported where the parser gives up: checked below
        ),
        ("rs_bad", "rust", "fn fine() {}\n\nfn broken( {\n", Some(3)),
        (
            "py_bad",
            "python",
            "def fine():\n    pass\n\ndef broken(:\n    pass\n",
            Some(4),
        ),
    ];
    let msgs = cases
        .iter()
        .map(|(id, lang, code, _)| job_msg(&job(id, lang, code, AnalysisType::Quality)))
        .collect();
    h.send_batch(queues::CODE_EXECUTION_REQUESTS, msgs).await;
    let results = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, cases.len())
        .await;
    for (id, lang, code, error_line) in cases {
        let r = &results.iter().find(|(_, r)| r.request_id == id).unwrap().1;
        assert_eq!(r.status, ResultStatus::Completed, "{id}: {r:?}");
        assert!(r.output.summary.starts_with(lang), "{}", r.output.summary);
        let syntax: Vec<u32> = r
            .output
            .findings
            .iter()
            .filter(|f| f.check == "syntax_error")
            .map(|f| f.line)
            .collect();
        if id.ends_with("_ok") {
            assert!(syntax.is_empty(), "{id}: {:?}", r.output.findings);
            assert_eq!(r.metrics.quality_score, 1.0, "{id}");
        } else {
            assert!(
                !syntax.is_empty(),
                "{id}: no syntax error in {:?}",
                r.output.findings
            );
            let lines = code.lines().count() as u32;
            assert!(
                syntax.iter().all(|l| (1..=lines).contains(l)),
                "{id}: {syntax:?}"
            );
            if let Some(line) = error_line {
                assert!(syntax.contains(&line), "{id}: {syntax:?}");
            }
            assert!(r.metrics.quality_score < 1.0);
        }
    }
    h.stop().await;
}

/// A job made to take 400 ms (`min_job`) is seen running while it runs.
#[tokio::test]
async fn workflow_states_are_recorded_pending_running_completed() {
    let h = Harness::start(WorkflowConfig {
        min_job: Duration::from_millis(400),
        ..WorkflowConfig::default()
    })
    .await;
    let j = job(
        "job_states",
        "rust",
        "fn main() {}\n",
        AnalysisType::Testing,
    );
    let (id, _) = h.send(queues::CODE_EXECUTION_REQUESTS, &j).await;
    let running = h.wait_workflow(id, "running").await;
    assert!(running.started_at.is_some() && running.finished_at.is_none());
    assert_eq!(h.events(id).await, ["pending", "running"]);
    assert_eq!(h.status().report().metrics.in_flight, 1);
    let r = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert!(r.metrics.execution_ms >= 400, "{r:?}");
    let done = h.wait_workflow(id, "completed").await;
    assert!(done.finished_at.unwrap() >= done.started_at.unwrap());
    assert_eq!(h.events(id).await, ["pending", "running", "completed"]);
    h.stop().await;
}
