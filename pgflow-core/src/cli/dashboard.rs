//! `pgflow dashboard`: serve the operator dashboard ([`crate::dashboard`])
//! until Ctrl-C / SIGTERM. Prints `dashboard ready http://ADDR/` once it
//! serves.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::client::Pgflow;
use crate::dashboard::{self, AlertThresholds, DashboardConfig};
use crate::error::{Error, Result};
use crate::ops::{self, OpsState};

/// Arguments of `pgflow dashboard` (also used by `pgflow up`).
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Address to serve on (loopback by default; 0.0.0.0 exposes it).
    #[arg(long = "dashboard-addr", env = "PGFLOW_DASHBOARD_ADDR", default_value = dashboard::DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Token that unlocks retry and purge (sent by the page as a bearer
    /// token). Without one the dashboard is read-only.
    #[arg(
        long = "dashboard-token",
        env = "PGFLOW_DASHBOARD_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A host name the page may be opened under besides loopback names and
    /// the bound address (repeat, or comma-separate in the variable); other
    /// `Host` headers are refused (DNS rebinding).
    #[arg(
        long = "dashboard-allowed-host",
        env = "PGFLOW_DASHBOARD_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Time between two samples of the queue statistics.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// How much history the charts keep.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub chart_window: Duration,
    /// Alert when a queue's DLQ holds more than this many messages.
    #[arg(long, env = "PGFLOW_ALERT_DLQ_MAX", default_value_t = dashboard::alerts::DEFAULT_DLQ_MAX)]
    pub alert_dlq_max: i64,
    /// Alert when a queue's oldest ready message waits longer than this.
    #[arg(long, env = "PGFLOW_ALERT_LATENCY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub alert_latency: Duration,
}

impl DashboardArgs {
    /// The dashboard configuration these arguments describe.
    pub fn config(&self) -> Result<DashboardConfig> {
        if self.alert_dlq_max < 0 {
            return Err(Error::Usage(format!(
                "--alert-dlq-max must be 0 or more, got {}",
                self.alert_dlq_max
            )));
        }
        let token = self.token.clone().filter(|t| !t.trim().is_empty());
        if token.as_ref().is_some_and(|t| t.len() < 8) {
            return Err(Error::Usage(
                "the dashboard token is shorter than 8 characters: use a long random one (e.g. `openssl rand -hex 16`)".into(),
            ));
        }
        Ok(DashboardConfig {
            token,
            sample_every: self.sample_interval,
            window: self.chart_window,
            thresholds: AlertThresholds {
                dlq_max: self.alert_dlq_max,
                latency: self.alert_latency,
            },
            allowed_hosts: self.allowed_hosts.clone(),
        })
    }

    /// Starts the dashboard on `pg` (for `up`, which keeps running it).
    pub async fn start(
        &self,
        pg: &Pgflow,
        shutdown: CancellationToken,
    ) -> Result<dashboard::Dashboard> {
        let metrics = ops::prometheus::install_recorder()?;
        dashboard::serve(
            pg.clone(),
            self.config()?,
            self.addr,
            OpsState::new(metrics),
            shutdown,
        )
        .await
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn run(pg: &Pgflow, args: &DashboardArgs, shutdown: CancellationToken) -> Result<()> {
    let d = args.start(pg, shutdown.clone()).await?;
    let mode = if args.config()?.token.is_some() {
        "retry and purge need the token"
    } else {
        "read-only: no token given"
    };
    println!("dashboard ready http://{}/ ({mode})", d.addr);
    shutdown.cancelled().await;
    let _ = d.server.await;
    let _ = d.sampler.await;
    eprintln!("dashboard stopped");
    Ok(())
}
