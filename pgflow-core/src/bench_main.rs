//! `pgflow-bench`: see `pgflow_core::bench`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = pgflow_core::bench::BenchArgs::parse();
    pgflow_core::telemetry::init_tracing("warn");
    match pgflow_core::bench::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", pgflow_core::error::report(&e));
            ExitCode::FAILURE
        }
    }
}
