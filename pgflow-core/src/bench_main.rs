//! `pgflow-bench`: see `pgflow_core::bench`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: in the batched benchmark glibc's
/// malloc and free took ~11% of the machine's CPU (many small allocations
/// freed on other threads); mimalloc gave 3-9% more throughput.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
