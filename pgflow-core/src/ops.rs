//! The operational surface every service exposes: Prometheus metrics
//! ([`prometheus`]), a sampler that turns queue statistics into gauges
//! ([`depth`]), and a small HTTP server with `/healthz`, `/readyz`,
//! `/metrics` and `/status` ([`http`]), and bearer tokens for APIs ([`token`]).
//!
//! A service installs the recorder once, starts the server and the sampler,
//! and flips the readiness flag once it is connected (see
//! [`crate::service::ServiceRuntime`], which does all of this).

pub mod depth;
pub mod http;
pub mod prometheus;
pub mod token;

pub use depth::spawn_depth_sampler;
pub use http::{serve, OpsState, StatusProvider};
pub use prometheus::{describe_metrics, install_recorder};
pub use token::ApiTokens;
