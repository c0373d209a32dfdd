//! The `centralcloud` binary: parse, set up tracing, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// mimalloc instead of glibc malloc: in the batched benchmark glibc's
/// malloc and free took ~11% of the machine's CPU (many small allocations
/// freed on other threads); mimalloc gave 3-9% more throughput.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = centralcloud::Cli::parse();
    pgflow_core::telemetry::init_tracing("info");
    let result = async {
        let shutdown =
            pgflow_core::shutdown::shutdown_token().context("installing signal handlers")?;
        centralcloud::run(cli, shutdown)
            .await
            .context("centralcloud failed")
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", pgflow_core::error::report(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
