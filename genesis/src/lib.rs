//! The genesis service (DESIGN.md, "Genesis"; seed 000).
//!
//! Genesis consumes four queues (`genesis_rule_updates`,
//! `genesis_llm_config_updates`, `code_execution_requests`,
//! `learning_loop_completed_queue`), routes each request on its `type` and
//! runs it as a workflow (pending -> running -> completed | failed, recorded
//! in the `genesis` schema), in parallel up to `max_parallel_workers` with a
//! per-workflow timeout. Each result goes to the matching `*_results` queue,
//! addressed to the requesting instance and carrying the request's trace id,
//! in the transaction that acks the request.
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | the command line: run the service, `genesis status` |
//! | [`config`] | the knobs and their environment variables |
//! | [`service`] | the consumers on one worker pool, the service around them |
//! | `workflows` (private) | routing on `type` and the workflow life cycle |
//! | [`rules`] | the rule engine |
//! | [`llm_config`] | the LLM-config manager |
//! | [`jobs`] | the job executor: code analysis with tree-sitter |
//! | [`learning`] | learning-loop reports |
//! | [`store`] | the workflow table |
//! | [`status`] | the state an operator asks for |
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod error;
pub mod jobs;
pub mod learning;
pub mod llm_config;
pub mod rules;
pub mod service;
pub mod status;
pub mod store;
mod workflows;

pub use cli::{run, Cli};
pub use config::{WorkflowArgs, WorkflowConfig};
pub use error::{Error, Result};
pub use service::Genesis;
