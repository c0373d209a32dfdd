//! Genesis's three workflows (seed 000): rule updates, LLM-config updates and
//! code analysis jobs, each a request from a singularity instance and a
//! result addressed back to it.
//!
//! Seed 000 lists what each result carries (rule: status, namespace,
//! confidence, timestamp; config: status, provider, complexity,
//! models_count; job: output, metrics execution_ms / quality_score /
//! issues_count, timestamp) and the one request example (a code execution
//! request). The rest is decided here: requests carry a `request_id` and the
//! requesting `instance_id`, results echo both, and a failed result carries
//! an `error`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{self, Check, Validate};
use crate::message::MessageType;

/// How a Genesis workflow ended (DESIGN.md: pending -> running ->
/// completed | failed; results are only sent for the last two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// The workflow finished.
    Completed,
    /// It failed (invalid request, timeout, ...): see `error`.
    Failed,
}

impl ResultStatus {
    /// `Failed` when there is an error, else `Completed`.
    pub fn of(error: Option<&str>) -> Self {
        if error.is_some() {
            Self::Failed
        } else {
            Self::Completed
        }
    }
}

/// A failed result must say why; a completed one may not carry an error.
fn status_and_error(status: ResultStatus, error: Option<&str>) -> Check {
    match (status, error) {
        (ResultStatus::Failed, None) => Err(validate::ValidationError::new(
            "error",
            "a failed result must say why",
        )),
        (ResultStatus::Completed, Some(_)) => Err(validate::ValidationError::new(
            "error",
            "a completed result carries no error",
        )),
        (_, e) => validate::opt_text("error", e),
    }
}

/// A learned rule for Genesis's rule engine (`genesis_rule_updates`,
/// singularity -> genesis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenesisRuleUpdate {
    /// Identifies this request; the result echoes it.
    pub request_id: Uuid,
    /// The requesting instance (the result is addressed to it).
    pub instance_id: String,
    /// The rule namespace (for example `code_quality`).
    pub namespace: String,
    /// The rule itself. The seeds leave its structure open: any JSON
    /// object of at most [`validate::MAX_RULE_LEN`] bytes.
    pub rule: serde_json::Value,
    /// Confidence in the rule, in `[0, 1]`.
    pub confidence: f64,
    /// When it was published.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for GenesisRuleUpdate {
    const TYPE: &'static str = "genesis_rule_update";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for GenesisRuleUpdate {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("namespace", &self.namespace)?;
        if !self.rule.is_object() {
            return Err(validate::ValidationError::new(
                "rule",
                "must be a JSON object",
            ));
        }
        let size = self.rule.to_string().len();
        if size > validate::MAX_RULE_LEN {
            return Err(validate::ValidationError::new(
                "rule",
                format!(
                    "must be at most {} bytes of JSON, got {size}",
                    validate::MAX_RULE_LEN
                ),
            ));
        }
        validate::unit_interval("confidence", self.confidence)
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// The outcome of a rule update (`genesis_rule_updates_results`, targeted
/// at the requesting instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleUpdateResult {
    /// The request's id.
    pub request_id: Uuid,
    /// The requesting instance.
    pub instance_id: String,
    /// How it ended.
    pub status: ResultStatus,
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's confidence, in `[0, 1]`.
    pub confidence: f64,
    /// Why it failed (only when `status` is `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it finished.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for RuleUpdateResult {
    const TYPE: &'static str = "genesis_rule_update_result";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for RuleUpdateResult {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("namespace", &self.namespace)?;
        validate::unit_interval("confidence", self.confidence)?;
        status_and_error(self.status, self.error.as_deref())
    }
}

/// Task complexity an LLM configuration applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complexity {
    /// Short, routine tasks.
    Simple,
    /// Ordinary tasks.
    Medium,
    /// Hard, multi-step tasks.
    Complex,
}

/// Which models a provider should use for one complexity
/// (`genesis_llm_config_updates`, singularity -> genesis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisLlmConfigUpdate {
    /// Identifies this request; the result echoes it.
    pub request_id: Uuid,
    /// The requesting instance (the result is addressed to it).
    pub instance_id: String,
    /// The provider (for example `claude`).
    pub provider: String,
    /// The complexity the models serve.
    pub complexity: Complexity,
    /// The models, in order of preference (1 to [`validate::MAX_ITEMS`]).
    pub models: Vec<String>,
    /// When it was published.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for GenesisLlmConfigUpdate {
    const TYPE: &'static str = "genesis_llm_config_update";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for GenesisLlmConfigUpdate {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("provider", &self.provider)?;
        if self.models.is_empty() {
            return Err(validate::ValidationError::new(
                "models",
                "must name at least one model",
            ));
        }
        validate::items("models", self.models.len())?;
        for model in &self.models {
            validate::name("models", model)?;
        }
        Ok(())
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// The outcome of an LLM-config update
/// (`genesis_llm_config_updates_results`, targeted at the requesting instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmConfigUpdateResult {
    /// The request's id.
    pub request_id: Uuid,
    /// The requesting instance.
    pub instance_id: String,
    /// How it ended.
    pub status: ResultStatus,
    /// The provider.
    pub provider: String,
    /// The complexity.
    pub complexity: Complexity,
    /// How many models the configuration now has.
    pub models_count: u32,
    /// Why it failed (only when `status` is `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it finished.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for LlmConfigUpdateResult {
    const TYPE: &'static str = "genesis_llm_config_update_result";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for LlmConfigUpdateResult {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("provider", &self.provider)?;
        status_and_error(self.status, self.error.as_deref())
    }
}

/// What a code analysis job looks at (seed 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisType {
    /// Readability and structure.
    Quality,
    /// Dangerous constructs.
    Security,
    /// Style and lint rules.
    Linting,
    /// Presence and shape of tests.
    Testing,
}

/// Analyse a piece of code (`code_execution_requests`, singularity ->
/// genesis). Genesis analyses the code; it never runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeExecutionRequest {
    /// The job id (seed 000: `"job_1"`); the result's `request_id` echoes it.
    pub id: String,
    /// The code (1 to [`validate::MAX_CODE_LEN`] bytes).
    pub code: String,
    /// Its language (for example `elixir`).
    pub language: String,
    /// What to analyse.
    pub analysis_type: AnalysisType,
    /// The requesting instance. Seed 000's example has none: when absent,
    /// the result goes to the envelope's `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl MessageType for CodeExecutionRequest {
    const TYPE: &'static str = "code_execution_request";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for CodeExecutionRequest {
    fn validate(&self) -> Check {
        validate::name("id", &self.id)?;
        if self.code.is_empty() {
            return Err(validate::ValidationError::new("code", "must not be empty"));
        }
        validate::code("code", &self.code)?;
        validate::name("language", &self.language)?;
        if let Some(instance) = &self.instance_id {
            validate::name("instance_id", instance)?;
        }
        Ok(())
    }

    fn speaker(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Should be fixed.
    Warning,
    /// Must be fixed.
    Error,
}

/// One issue found in the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// 1-based line number.
    pub line: u32,
    /// How serious.
    pub severity: Severity,
    /// The check that found it (for example `long_line`).
    pub check: String,
    /// What is wrong.
    pub message: String,
}

impl Validate for Finding {
    fn validate(&self) -> Check {
        if self.line == 0 {
            return Err(validate::ValidationError::new(
                "line",
                "line numbers start at 1",
            ));
        }
        validate::name("check", &self.check)?;
        validate::text("message", &self.message)
    }
}

/// What the analysis produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    /// One-line summary.
    pub summary: String,
    /// The issues found (at most [`validate::MAX_ITEMS`]; `issues_count`
    /// counts them all).
    pub findings: Vec<Finding>,
}

impl Validate for JobOutput {
    fn validate(&self) -> Check {
        validate::bounded("summary", &self.summary, validate::MAX_TEXT_LEN)?;
        validate::items("findings", self.findings.len())?;
        for (i, f) in self.findings.iter().enumerate() {
            f.validate()
                .map_err(|e| e.within(&format!("findings[{i}]")))?;
        }
        Ok(())
    }
}

/// Measurements of one analysis job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    /// Time the analysis took, in milliseconds.
    pub execution_ms: u64,
    /// Quality of the code, in `[0, 1]` (1 is best).
    pub quality_score: f64,
    /// Number of issues found.
    pub issues_count: u64,
}

impl Validate for JobMetrics {
    fn validate(&self) -> Check {
        validate::unit_interval("quality_score", self.quality_score)
    }
}

/// The outcome of an analysis job (`code_execution_results`, targeted at
/// the requesting instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeExecutionResult {
    /// The request's job `id`.
    pub request_id: String,
    /// The requesting instance.
    pub instance_id: String,
    /// How it ended.
    pub status: ResultStatus,
    /// What was analysed.
    pub analysis_type: AnalysisType,
    /// The findings (empty when the job failed).
    pub output: JobOutput,
    /// The measurements (seed 000's `execution_ms` lives here).
    pub metrics: JobMetrics,
    /// Why it failed (only when `status` is `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it finished.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for CodeExecutionResult {
    const TYPE: &'static str = "code_execution_result";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for CodeExecutionResult {
    fn validate(&self) -> Check {
        validate::name("request_id", &self.request_id)?;
        validate::name("instance_id", &self.instance_id)?;
        self.output.validate().map_err(|e| e.within("output"))?;
        self.metrics.validate().map_err(|e| e.within("metrics"))?;
        let shown = self.output.findings.len() as u64;
        if self.metrics.issues_count < shown {
            return Err(validate::ValidationError::new(
                "metrics.issues_count",
                format!(
                    "is {} but output lists {shown} findings",
                    self.metrics.issues_count
                ),
            ));
        }
        status_and_error(self.status, self.error.as_deref())
    }
}
