//! The job executor: analyses submitted code, never runs it.
//!
//! The code is parsed with a real parser (tree-sitter, with the grammars of
//! Elixir, Rust and Python) and the syntax tree is checked for what the
//! request's `analysis_type` asks:
//!
//! * every type reports syntax errors (`ERROR` / `MISSING` nodes) with their line;
//! * `quality`: long functions, deep nesting, TODO / FIXME comments, long lines;
//! * `security`: code evaluation, shell commands, `unsafe`, `.unwrap()`, unsafe
//!   deserialization (see each language's module);
//! * `linting`: naming conventions, trailing whitespace;
//! * `testing`: whether there are tests (`#[test]`, `def test_`, ExUnit
//!   `test "..."`) and whether they assert anything.
//!
//! The analysis is CPU-bound: [`run`] does it on the blocking pool and stops
//! it when the workflow's timeout drops the future (a cancellation flag the
//! parser and the tree walk both check). Input size is bounded by the
//! protocol (1 MiB of code).

mod checks;
mod elixir;
mod python;
mod rust;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use pgflow_core::protocol::{
    AnalysisType, CodeExecutionRequest, CodeExecutionResult, Finding, JobMetrics, JobOutput,
    ResultStatus,
};
use tree_sitter::{ParseOptions, ParseState, Parser};

use checks::LanguageRules;

/// Most findings a result lists (a result must stay well below the queue's
/// 1 MiB payload limit); `issues_count` counts them all.
pub const MAX_REPORTED_FINDINGS: usize = 1000;

/// A language genesis can analyse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// Elixir (`elixir`, `ex`, `exs`).
    Elixir,
    /// Rust (`rust`, `rs`).
    Rust,
    /// Python (`python`, `python3`, `py`).
    Python,
}

impl Language {
    /// Every supported language, by canonical name.
    pub const ALL: [Language; 3] = [Language::Elixir, Language::Rust, Language::Python];

    /// The language a request's `language` names (case-insensitive, common
    /// file extensions accepted), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "elixir" | "ex" | "exs" => Some(Self::Elixir),
            "rust" | "rs" => Some(Self::Rust),
            "python" | "python3" | "py" => Some(Self::Python),
            _ => None,
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Elixir => "elixir",
            Self::Rust => "rust",
            Self::Python => "python",
        }
    }

    fn rules(self) -> &'static dyn LanguageRules {
        match self {
            Self::Elixir => &elixir::Elixir,
            Self::Rust => &rust::Rust,
            Self::Python => &python::Python,
        }
    }
}

/// Why a job produced no analysis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The request names a language genesis has no parser for.
    #[error("unsupported language {0:?} (genesis analyses elixir, rust and python)")]
    UnsupportedLanguage(String),
    /// The grammar could not be loaded (a build problem).
    #[error("the {0} grammar could not be loaded: {1}")]
    Grammar(&'static str, String),
    /// The analysis was stopped (its workflow timed out).
    #[error("analysis cancelled")]
    Cancelled,
    /// The analysis thread panicked.
    #[error("analysis crashed: {0}")]
    Crashed(String),
}

/// What an analysis found.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The language analysed.
    pub language: Language,
    /// The findings, by line, at most [`MAX_REPORTED_FINDINGS`].
    pub findings: Vec<Finding>,
    /// Every finding, including those not listed.
    pub issues_count: u64,
    /// In `[0, 1]`, 1 is best: `1 / (1 + penalty per 10 lines)`, where an
    /// error weighs 1, a warning 0.4 and an info 0.1.
    pub quality_score: f64,
    /// Lines of code analysed.
    pub lines: usize,
    /// Test cases found (counted for `testing`).
    pub tests: usize,
    /// One-line summary.
    pub summary: String,
    /// Time the job took (including any simulated extra work).
    pub execution: Duration,
}

/// Analyses `code` as `language` for `kind`, on the calling thread.
/// Returns [`JobError::Cancelled`] soon after `cancel` is set.
pub fn analyse(
    language: Language,
    code: &str,
    kind: AnalysisType,
    cancel: &AtomicBool,
) -> Result<Analysis, JobError> {
    let started = Instant::now();
    let rules = language.rules();
    let mut parser = Parser::new();
    parser
        .set_language(&rules.grammar())
        .map_err(|e| JobError::Grammar(language.name(), e.to_string()))?;
    let bytes = code.as_bytes();
    let mut stop = |_: &ParseState| cancel.load(Ordering::Relaxed);
    let tree = parser
        .parse_with_options(
            &mut |offset, _| bytes.get(offset..).unwrap_or_default(),
            None,
            Some(ParseOptions::new().progress_callback(&mut stop)),
        )
        .ok_or(JobError::Cancelled)?;
    let collected = checks::collect(rules, &tree, code, kind, cancel)?;
    Ok(collected.into_analysis(language, kind, started.elapsed()))
}

/// Sets a cancellation flag when dropped: a timed-out workflow drops the
/// future of [`run`], which stops the analysis on the blocking pool.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs a job: analyses `code` on the blocking pool, then, if the job took
/// less than `min_duration` (simulated extra work), waits for the rest.
/// Dropping the future cancels the analysis.
pub async fn run(
    language: &str,
    code: &str,
    kind: AnalysisType,
    min_duration: Duration,
) -> Result<Analysis, JobError> {
    let started = Instant::now();
    let language =
        Language::parse(language).ok_or_else(|| JobError::UnsupportedLanguage(language.into()))?;
    let guard = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = guard.0.clone();
    let code = code.to_string();
    let mut analysis = tokio::task::spawn_blocking(move || analyse(language, &code, kind, &flag))
        .await
        .map_err(|e| JobError::Crashed(e.to_string()))??;
    if let Some(rest) = min_duration.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    drop(guard);
    analysis.execution = started.elapsed();
    Ok(analysis)
}

/// The result of `job` for `instance`: completed with the analysis, or
/// failed with the reason (`execution` is the time spent either way).
pub fn result(
    job: &CodeExecutionRequest,
    instance: &str,
    outcome: Result<Analysis, String>,
    execution: Duration,
) -> CodeExecutionResult {
    let execution_ms = u64::try_from(execution.as_millis()).unwrap_or(u64::MAX);
    let (status, output, metrics, error) = match outcome {
        Ok(a) => (
            ResultStatus::Completed,
            JobOutput {
                summary: a.summary,
                findings: a.findings,
            },
            JobMetrics {
                execution_ms,
                quality_score: a.quality_score,
                issues_count: a.issues_count,
            },
            None,
        ),
        Err(reason) => (
            ResultStatus::Failed,
            JobOutput {
                summary: "analysis failed".to_string(),
                findings: Vec::new(),
            },
            JobMetrics {
                execution_ms,
                quality_score: 0.0,
                issues_count: 0,
            },
            Some(reason),
        ),
    };
    CodeExecutionResult {
        request_id: job.id.clone(),
        instance_id: instance.to_string(),
        status,
        analysis_type: job.analysis_type,
        output,
        metrics,
        error,
        timestamp: Utc::now(),
    }
}

#[cfg(test)]
mod tests;
