//! `singularity genesis ...`: send requests to Genesis from the command
//! line, then print one line per request sent
//! (`request_id=.. kind=.. status=sent trace_id=.. <detail>`), or with
//! `--json` the whole [`Published`] document. Each takes the database
//! settings and `INSTANCE_ID` as `singularity propose` does; the results
//! reach the running service of that instance.
//!
//! * `publish-rules [--min-confidence 0.85]`: the rules learned from the
//!   instance's record ([`crate::genesis_publisher::rules`]);
//! * `publish-llm-config [--config file.json] [--provider p] [--complexity c]
//!   [--models a,b]`: an LLM configuration
//!   ([`crate::genesis_publisher::llm_config`] documents the defaults and
//!   how the flags combine);
//! * `analyze --language python --analysis-type security --code @file
//!   [--id job_1]`: a code analysis job (`--code` takes the code itself,
//!   `@path` or `@-` for stdin).

use std::path::PathBuf;

use pgflow_core::protocol::{AnalysisType, Complexity};
use pgflow_core::service::{self, DatabaseArgs};

use crate::config::{unit_interval, InstanceArgs};
use crate::error::Result;
use crate::genesis_publisher::llm_config::parse_complexity;
use crate::genesis_publisher::{CodeAnalysis, GenesisPublisher, LlmConfig, Overrides, Published};

/// The default of `--min-confidence` (seed 000's example, `min_confidence: 0.85`).
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.85;

/// `singularity genesis`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenesisArgs {
    /// What to send.
    #[command(subcommand)]
    pub command: GenesisCommand,
}

/// The Genesis requests the command line can send.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum GenesisCommand {
    /// Send the rules learned from this instance's applied changes (one per
    /// agent type, confidence = its success rate here) that reach --min-confidence.
    PublishRules(PublishRulesArgs),
    /// Send an LLM configuration (provider, complexity, models), one
    /// request per (provider, complexity).
    PublishLlmConfig(PublishLlmConfigArgs),
    /// Ask Genesis to analyse a piece of code (it is never run).
    Analyze(AnalyzeArgs),
}

/// Settings every `genesis` command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The requesting instance (Genesis addresses the results to it).
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Print `{"trace_id", "requests": [...]}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `singularity genesis publish-rules`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishRulesArgs {
    /// Database, instance, output.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Lowest confidence of a rule sent, in [0, 1].
    #[arg(long, env = "SINGULARITY_GENESIS_MIN_CONFIDENCE",
          default_value_t = DEFAULT_MIN_CONFIDENCE, value_parser = unit_interval)]
    pub min_confidence: f64,
}

/// `singularity genesis publish-llm-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishLlmConfigArgs {
    /// Database, instance, output.
    #[command(flatten)]
    pub common: CommonArgs,
    /// A JSON file with one `{"provider", "complexity", "models"}` entry or
    /// a list of them (default: provider claude, every complexity).
    #[arg(long = "config", env = "SINGULARITY_LLM_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Sets the provider of every entry (for example claude, openai).
    #[arg(long, env = "SINGULARITY_LLM_PROVIDER")]
    pub provider: Option<String>,
    /// Sends only this complexity: simple, medium or complex.
    #[arg(long, env = "SINGULARITY_LLM_COMPLEXITY", value_parser = parse_complexity)]
    pub complexity: Option<Complexity>,
    /// Sets the models, comma-separated, in order of preference.
    #[arg(long, env = "SINGULARITY_LLM_MODELS", value_delimiter = ',')]
    pub models: Option<Vec<String>>,
}

/// `singularity genesis analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Database, instance, output.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The code's language (Genesis analyses elixir, rust and python).
    #[arg(long)]
    pub language: String,
    /// What to analyse: quality, security, linting or testing.
    #[arg(long, value_parser = parse_analysis_type)]
    pub analysis_type: AnalysisType,
    /// The code; `@path` reads it from a file, `@-` from stdin.
    #[arg(long)]
    pub code: String,
    /// The job id (default: a new `job_<uuid>`).
    #[arg(long)]
    pub id: Option<String>,
}

/// Parses `quality`, `security`, `linting` or `testing` (case-insensitive).
pub fn parse_analysis_type(s: &str) -> std::result::Result<AnalysisType, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "quality" => Ok(AnalysisType::Quality),
        "security" => Ok(AnalysisType::Security),
        "linting" => Ok(AnalysisType::Linting),
        "testing" => Ok(AnalysisType::Testing),
        other => Err(format!(
            "unknown analysis type {other:?} (quality, security, linting or testing)"
        )),
    }
}

/// Runs a `genesis` command and returns the text to print.
pub async fn run(args: GenesisArgs) -> Result<String> {
    let (common, what) = match args.command {
        GenesisCommand::PublishRules(a) => (a.common, Request::Rules(a.min_confidence)),
        GenesisCommand::PublishLlmConfig(a) => {
            // Resolved before connecting: a bad configuration touches nothing.
            let config = LlmConfig::resolve(
                a.config_file.as_deref(),
                Overrides {
                    provider: a.provider,
                    complexity: a.complexity,
                    models: a.models,
                },
            )?;
            (a.common, Request::LlmConfig(config))
        }
        GenesisCommand::Analyze(a) => {
            let job = CodeAnalysis {
                id: a.id,
                code: super::read_arg("--code", &a.code)?,
                language: a.language,
                analysis_type: a.analysis_type,
            };
            (a.common, Request::Analyze(job))
        }
    };
    let pg = service::connect("singularity", &common.db).await?;
    let published = async {
        let publisher = GenesisPublisher::new(pg.clone(), &common.instance.instance_id)?;
        match &what {
            Request::Rules(min) => publisher.publish_rules(*min).await,
            Request::LlmConfig(config) => publisher.publish_llm_config_rules(config).await,
            Request::Analyze(job) => publisher.send_code_execution_request(job.clone()).await,
        }
    }
    .await;
    pg.close().await;
    let published = published?;
    if common.json {
        return Ok(serde_json::to_string(&published)?);
    }
    Ok(match (&what, published.requests.is_empty()) {
        (Request::Rules(min), true) => {
            format!(
                "no learned rule reaches confidence {min} (trace_id={})",
                published.trace_id
            )
        }
        _ => render(&published),
    })
}

/// What a command sends.
enum Request {
    Rules(f64),
    LlmConfig(LlmConfig),
    Analyze(CodeAnalysis),
}

/// One line per request: `request_id=.. kind=.. status=.. trace_id=..` and
/// the request's detail as `key=value` (lists comma-separated; values with
/// spaces quoted).
pub fn render(p: &Published) -> String {
    let mut out = String::new();
    for r in &p.requests {
        out.push_str(&format!(
            "request_id={} kind={} status={} trace_id={}",
            r.request_id, r.kind, r.status, p.trace_id
        ));
        if let Some(detail) = r.detail.as_object() {
            for (k, v) in detail {
                out.push_str(&format!(" {k}={}", plain(v)));
            }
        }
        out.push('\n');
    }
    out
}

fn plain(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    if s.is_empty() || s.contains(char::is_whitespace) {
        format!("{s:?}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis_publisher::SentRequest;
    use crate::genesis_requests::{RequestKind, RequestState};

    #[test]
    fn analysis_types_parse() {
        assert_eq!(parse_analysis_type("Security"), Ok(AnalysisType::Security));
        assert!(parse_analysis_type("speed").is_err());
    }

    #[test]
    fn requests_render_one_line_each() {
        let p = Published {
            trace_id: uuid::Uuid::nil(),
            requests: vec![SentRequest {
                request_id: "job_1".into(),
                kind: RequestKind::CodeExecution,
                status: RequestState::Sent,
                message_id: uuid::Uuid::nil(),
                detail: serde_json::json!({"agent_type": "my agent", "models": ["a", "b"]}),
            }],
        };
        assert_eq!(
            render(&p),
            format!(
                "request_id=job_1 kind=code_execution status=sent trace_id={} agent_type=\"my agent\" models=a,b\n",
                uuid::Uuid::nil()
            )
        );
    }
}
