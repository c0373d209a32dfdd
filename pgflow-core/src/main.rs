//! `pgflow`: the admin command line of the durable queue.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pgflow_core::cli::{run, Cli};

/// mimalloc instead of glibc malloc: in the batched benchmark glibc's
/// malloc and free took ~11% of the machine's CPU (many small allocations
/// freed on other threads); mimalloc gave 3-9% more throughput.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pgflow_core::telemetry::init_tracing("warn");
    let result = async {
        let shutdown =
            pgflow_core::shutdown::shutdown_token().context("installing signal handlers")?;
        run(cli, shutdown).await.map_err(anyhow::Error::from)
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", pgflow_core::error::report(e.as_ref()));
            // The README's promise: 2 for a usage error (as clap's own), 1 otherwise.
            match e.downcast_ref::<pgflow_core::Error>() {
                Some(pgflow_core::Error::Usage(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
