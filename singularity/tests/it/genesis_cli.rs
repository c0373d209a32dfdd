//! `singularity genesis publish-rules | publish-llm-config | analyze`
//! against a real database, and `singularity status` showing the requests.

use pgflow_core::protocol::{
    self, queues, AnalysisType, CodeExecutionRequest, Complexity, GenesisLlmConfigUpdate,
    GenesisRuleUpdate,
};
use pgflow_core::testing::TestDb;
use serde_json::Value;
use singularity::genesis_requests::RequestKind;

use crate::cli::{field, run};
use crate::genesis::{outcomes, request, take};
use crate::support::waiting;

/// The CLI runs as this instance.
const ME: &str = "singularity_3";

#[tokio::test]
async fn genesis_commands_send_requests_and_print_their_ids() {
    let t = TestDb::new().await.unwrap();
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    let url = t.instance_url(ME, "singularity").await.unwrap();
    let genesis = t.connect_as("genesis").await.unwrap();
    outcomes(&t, ME, "BugFixerAgent", &["a.rs"], 4, 1).await; // 0.8
    outcomes(&t, ME, "RefactoringAgent", &["b.ex"], 1, 1).await; // 0.5

    // publish-rules: one line per rule sent.
    let (code, out, err) = run(
        &["genesis", "publish-rules", "--min-confidence", "0.8"],
        &url,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let id = field(lines[0], "request_id");
    assert_eq!(field(lines[0], "kind"), "rule_update");
    assert_eq!(field(lines[0], "namespace"), "singularity.BugFixerAgent");
    let d = take(&genesis, &t, queues::GENESIS_RULE_UPDATES, 1)
        .await
        .remove(0);
    let u: GenesisRuleUpdate = protocol::decode(&d).unwrap();
    assert_eq!(
        (u.request_id.to_string().as_str(), u.instance_id.as_str()),
        (id, ME)
    );
    assert_eq!(d.trace_id.to_string(), field(lines[0], "trace_id"));
    assert_eq!(
        request(&t, ME, RequestKind::RuleUpdate, id).await.status,
        "sent"
    );

    // --json, and a floor nothing reaches.
    let (code, out, err) = run(
        &[
            "genesis",
            "publish-rules",
            "--min-confidence",
            "0",
            "--json",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["requests"].as_array().unwrap().len(), 2);
    assert_eq!(v["requests"][0]["status"], "sent");
    take(&genesis, &t, queues::GENESIS_RULE_UPDATES, 2).await;
    let (code, out, _) = run(
        &["genesis", "publish-rules", "--min-confidence", "0.9"],
        &url,
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("no learned rule reaches confidence 0.9"),
        "{out}"
    );
    assert_eq!(waiting(&t, queues::GENESIS_RULE_UPDATES).await, 0);
    let (code, _, err) = run(&["genesis", "publish-rules", "--min-confidence", "2"], &url).await;
    assert_eq!(code, 2, "a usage error: {err}");

    // publish-llm-config from flags.
    let (code, out, err) = run(
        &[
            "genesis",
            "publish-llm-config",
            "--provider",
            "openai",
            "--complexity",
            "complex",
            "--models",
            "gpt-5,gpt-5-mini",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    assert_eq!(field(line, "models"), "gpt-5,gpt-5-mini");
    let d = take(&genesis, &t, queues::GENESIS_LLM_CONFIG_UPDATES, 1)
        .await
        .remove(0);
    let c: GenesisLlmConfigUpdate = protocol::decode(&d).unwrap();
    assert_eq!(c.request_id.to_string(), field(line, "request_id"));
    assert_eq!(
        (c.provider.as_str(), c.complexity),
        ("openai", Complexity::Complex)
    );
    assert_eq!(c.models, ["gpt-5", "gpt-5-mini"]);

    // ... from a file, and the defaults.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("llm.json");
    std::fs::write(
        &file,
        r#"[{"provider":"ollama","complexity":"simple","models":["llama3"]},
            {"provider":"ollama","complexity":"medium","models":["qwen3","llama3"]}]"#,
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let (code, out, err) = run(
        &[
            "genesis",
            "publish-llm-config",
            "--config",
            &file_arg,
            "--json",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["requests"][1]["detail"]["models"],
        serde_json::json!(["qwen3", "llama3"])
    );
    for d in take(&genesis, &t, queues::GENESIS_LLM_CONFIG_UPDATES, 2).await {
        let c: GenesisLlmConfigUpdate = protocol::decode(&d).unwrap();
        assert_eq!(c.provider, "ollama");
    }
    let (code, out, err) = run(&["genesis", "publish-llm-config"], &url).await;
    assert_eq!((code, out.lines().count()), (0, 3), "{err}");
    take(&genesis, &t, queues::GENESIS_LLM_CONFIG_UPDATES, 3).await;
    // Another provider needs its models; nothing is sent.
    let (code, _, err) = run(
        &["genesis", "publish-llm-config", "--provider", "openai"],
        &url,
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("needs --models"), "{err}");

    // analyze, with the code from a file.
    let code_file = dir.path().join("job.py");
    std::fs::write(&code_file, "import os\nos.system(cmd)\n").unwrap();
    let code_arg = format!("@{}", code_file.display());
    let (code, out, err) = run(
        &[
            "genesis",
            "analyze",
            "--language",
            "python",
            "--analysis-type",
            "security",
            "--code",
            &code_arg,
            "--id",
            "job_cli",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(out.trim(), "request_id"), "job_cli");
    let d = take(&genesis, &t, queues::CODE_EXECUTION_REQUESTS, 1)
        .await
        .remove(0);
    let j: CodeExecutionRequest = protocol::decode(&d).unwrap();
    assert_eq!(
        (
            j.id.as_str(),
            j.code.as_str(),
            j.analysis_type,
            j.instance_id.as_deref()
        ),
        (
            "job_cli",
            "import os\nos.system(cmd)\n",
            AnalysisType::Security,
            Some(ME)
        )
    );
    let (code, _, err) = run(
        &[
            "genesis",
            "analyze",
            "--language",
            "python",
            "--analysis-type",
            "speed",
            "--code",
            "x",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("unknown analysis type"), "{err}");

    // status shows the requests by state.
    let (code, out, err) = run(&["status", "--json"], &url).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let g = &v["genesis_requests"];
    assert_eq!(g["by_state"]["sent"], 10, "{g}");
    assert_eq!(g["by_kind"]["rule_update"]["sent"], 3);
    assert_eq!(g["by_kind"]["llm_config_update"]["sent"], 6);
    assert_eq!(g["by_kind"]["code_execution"]["sent"], 1);
    let (code, out, _) = run(&["status"], &url).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("genesis request") && out.contains("rule_update"),
        "{out}"
    );
}
