//! The service's settings: clap flags with environment fallbacks, named
//! after seeds 000 and 003 (`INSTANCE_ID`, `PGFLOW_*_WORKERS`,
//! `PGFLOW_MAX_RETRIES`, `PGFLOW_RETRY_DELAY_MS`, `PGFLOW_POLL_INTERVAL_MS`,
//! `PGFLOW_BATCH_SIZE`, `PGFLOW_TIMEOUT_MS`, `PGFLOW_TX_BATCH`) plus singularity's own
//! (`SINGULARITY_*`: workspace, verify command, pattern miner, vote floor,
//! the HTTP API's tokens, the sweeper of stuck proposals).
//! The genesis publisher's own flags live with its commands
//! ([`crate::cli::genesis`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use pgflow_core::ops::ApiTokens;

use crate::error::{Error, Result};

/// The default instance name (docker-compose names them `singularity_1..3`).
pub const DEFAULT_INSTANCE_ID: &str = "singularity_1";

/// Default of `SINGULARITY_STUCK_AFTER_MS`: 10 minutes, over three times
/// the execution budget at the default retry and timeout settings.
pub const DEFAULT_STUCK_AFTER_MS: u64 = 600_000;
/// Default of `SINGULARITY_SWEEP_INTERVAL_MS`.
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 30_000;

/// Which instance this process is (targeted messages name it; its rows in
/// the `singularity` schema carry it).
#[derive(Debug, Clone, clap::Args)]
pub struct InstanceArgs {
    /// This instance's id (targeted messages name it).
    #[arg(long, env = "INSTANCE_ID", default_value = DEFAULT_INSTANCE_ID)]
    pub instance_id: String,
}

/// Worker counts per consumer (seed 003's names and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Executions of approved proposals run at once (proposals_for_execution_queue).
    #[arg(long, env = "PGFLOW_PROPOSALS_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub proposals_workers: u16,
    /// Metric measurements (and verify commands) run at once.
    #[arg(long, env = "PGFLOW_METRICS_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub metrics_workers: u16,
    /// Pattern miners (each reports a disjoint set of applied changes).
    #[arg(long, env = "PGFLOW_PATTERNS_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub patterns_workers: u16,
    /// Consensus results and vote requests handled at once (each).
    #[arg(long, env = "PGFLOW_CONSENSUS_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub consensus_workers: u16,
    /// Rollback triggers handled at once.
    #[arg(long, env = "PGFLOW_ROLLBACK_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub rollback_workers: u16,
    /// Safety-profile updates handled at once.
    #[arg(long, env = "PGFLOW_SAFETY_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub safety_workers: u16,
    /// Genesis results handled at once, per results queue (rule updates,
    /// LLM-config updates, code analysis).
    #[arg(long, env = "PGFLOW_GENESIS_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub genesis_workers: u16,
}

/// How the consumers poll, retry and time out (shared with the other services).
pub use pgflow_core::service::ConsumerArgs;

/// Where submissions wait while PostgreSQL is unreachable (the service and
/// `singularity propose` share it).
#[derive(Debug, Clone, clap::Args)]
pub struct SpoolArgs {
    /// The spool directory (default: the workspace directory's sibling
    /// `<workspace>.spool`).
    #[arg(long, env = "SINGULARITY_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most submissions the spool holds; past it a submission is refused
    /// (503 from `POST /proposals`).
    #[arg(long, env = "SINGULARITY_SPOOL_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub spool_max: u32,
}

impl Default for SpoolArgs {
    fn default() -> Self {
        Self {
            spool_dir: None,
            spool_max: 10_000,
        }
    }
}

/// Shortest API token accepted.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// The bearer tokens of the HTTP API (`POST /proposals`,
/// `GET /proposals/{id}`, `/status`). Required when the server listens
/// beyond loopback; two may be set at once to rotate them.
#[derive(Clone, Default, clap::Args)]
pub struct ApiArgs {
    /// Bearer token the HTTP API requires (`Authorization: Bearer <token>`)
    /// on /proposals and /status. Required when PGFLOW_HTTP_ADDR is not a
    /// loopback address; at least 16 characters (e.g. `openssl rand -hex 32`).
    #[arg(long, env = "SINGULARITY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A second token accepted too, while clients move from it to
    /// SINGULARITY_API_TOKEN (rotation); unset it once they have.
    #[arg(long, env = "SINGULARITY_API_TOKEN_PREVIOUS", hide_env_values = true)]
    pub api_token_previous: Option<String>,
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |t: &Option<String>| if t.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("ApiArgs")
            .field("api_token", &set(&self.api_token))
            .field("api_token_previous", &set(&self.api_token_previous))
            .finish()
    }
}

impl ApiArgs {
    /// The tokens the API accepts when served on `http_addr`: `None` (an
    /// open API) only on a loopback address without a token. Refused: no
    /// token beyond loopback, or a token that is short or not printable ASCII.
    pub fn tokens(&self, http_addr: SocketAddr) -> Result<Option<ApiTokens>> {
        for (name, t) in [
            ("SINGULARITY_API_TOKEN", &self.api_token),
            ("SINGULARITY_API_TOKEN_PREVIOUS", &self.api_token_previous),
        ] {
            let Some(t) = t.as_deref().filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            if t.len() < MIN_API_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::Config(format!(
                    "{name} must be at least {MIN_API_TOKEN_LEN} printable ASCII characters \
                     without spaces (e.g. `openssl rand -hex 32`)"
                )));
            }
        }
        let tokens = ApiTokens::new(
            self.api_token.as_deref(),
            self.api_token_previous.as_deref(),
        );
        if tokens.is_none() && !http_addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "the HTTP API would listen on {http_addr}, beyond loopback, without a token: \
                 set SINGULARITY_API_TOKEN (--api-token; e.g. `openssl rand -hex 32`) or \
                 listen on a loopback address (PGFLOW_HTTP_ADDR=127.0.0.1:...)"
            )));
        }
        Ok(tokens)
    }
}

/// Everything the running service needs besides the database and HTTP settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The instance.
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Directory in which approved changes are applied
    /// (default `./workspace/<instance id>`; created when first needed).
    #[arg(long, env = "SINGULARITY_WORKSPACE")]
    pub workspace_dir: Option<PathBuf>,
    /// Command run with `sh -c` in the workspace before and after a change:
    /// a non-zero exit counts as an error, its duration as latency.
    #[arg(long, env = "SINGULARITY_VERIFY_CMD")]
    pub verify_cmd: Option<String>,
    /// The submission spool.
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// The HTTP API's tokens.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Longest run of the verify command, in milliseconds (past it, it is
    /// killed and counts as an error). At most a third of PGFLOW_TIMEOUT_MS
    /// (it runs twice per execution).
    #[arg(long, env = "SINGULARITY_VERIFY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub verify_timeout_ms: u64,
    /// How often the pattern miner looks for applied changes to report, in milliseconds.
    #[arg(long, env = "SINGULARITY_PATTERN_INTERVAL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pattern_interval_ms: u64,
    /// How long a change must stay applied (not rolled back) before it is
    /// reported as a pattern, in milliseconds.
    #[arg(long, env = "SINGULARITY_PATTERN_GRACE_MS", default_value_t = 60_000)]
    pub pattern_grace_ms: u64,
    /// Votes reject an agent type whose success rate (safety profile, or
    /// this instance's own history) is below this floor.
    #[arg(long, env = "SINGULARITY_MIN_SUCCESS_RATE", default_value_t = 0.8,
          value_parser = unit_interval)]
    pub min_success_rate: f64,
    /// Outcomes (applied or rolled back) of an agent type this instance
    /// needs before its own history counts in votes.
    #[arg(long, env = "SINGULARITY_MIN_HISTORY", default_value_t = 3)]
    pub min_history: u32,
    /// A proposal still pending, submitted, approved or executing this long
    /// after its last state change is stuck: the sweeper marks it failed
    /// and cancels its execution, in milliseconds. Never less than an
    /// execution may take with the retry and timeout settings (raised to it).
    #[arg(long, env = "SINGULARITY_STUCK_AFTER_MS", default_value_t = DEFAULT_STUCK_AFTER_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stuck_after_ms: u64,
    /// How often the sweeper looks for stuck proposals, in milliseconds.
    #[arg(long, env = "SINGULARITY_SWEEP_INTERVAL_MS", default_value_t = DEFAULT_SWEEP_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sweep_interval_ms: u64,
    /// Worker counts.
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// Polling, retries, timeouts.
    #[command(flatten)]
    pub consumers: ConsumerArgs,
}

impl ServiceArgs {
    /// Settings for `instance_id` with every other value at its default
    /// (the workspace defaults as documented on `--workspace-dir`).
    pub fn for_instance(instance_id: impl Into<String>) -> Self {
        Self {
            instance: InstanceArgs {
                instance_id: instance_id.into(),
            },
            workspace_dir: None,
            verify_cmd: None,
            spool: SpoolArgs::default(),
            api: ApiArgs::default(),
            verify_timeout_ms: 10_000,
            pattern_interval_ms: 30_000,
            pattern_grace_ms: 60_000,
            min_success_rate: 0.8,
            min_history: 3,
            stuck_after_ms: DEFAULT_STUCK_AFTER_MS,
            sweep_interval_ms: DEFAULT_SWEEP_INTERVAL_MS,
            workers: WorkerArgs {
                proposals_workers: 2,
                metrics_workers: 2,
                patterns_workers: 1,
                consensus_workers: 2,
                rollback_workers: 1,
                safety_workers: 1,
                genesis_workers: 1,
            },
            consumers: ConsumerArgs::default(),
        }
    }

    /// The workspace directory: `--workspace-dir`, else
    /// `./workspace/<instance id>`, made absolute against the current directory.
    pub fn workspace(&self) -> std::io::Result<PathBuf> {
        workspace_dir(self.workspace_dir.as_deref(), &self.instance.instance_id)
    }

    /// The submission spool directory (see [`spool_dir`]).
    pub fn spool_path(&self) -> std::io::Result<PathBuf> {
        spool_dir(self.spool.spool_dir.as_deref(), &self.workspace()?)
    }
}

/// The workspace directory: `dir` when given, else
/// `./workspace/<instance id>`, made absolute against the current directory.
pub fn workspace_dir(dir: Option<&std::path::Path>, instance_id: &str) -> std::io::Result<PathBuf> {
    std::path::absolute(match dir {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("workspace").join(instance_id),
    })
}

/// The submission spool directory: `spool_dir` when given, else the
/// workspace directory with `.spool` appended to its name (so the service
/// and `singularity propose` with the same settings share it).
pub fn spool_dir(
    spool_dir: Option<&std::path::Path>,
    workspace: &std::path::Path,
) -> std::io::Result<PathBuf> {
    match spool_dir {
        Some(d) => std::path::absolute(d),
        None => {
            let mut name = workspace.file_name().unwrap_or_default().to_os_string();
            name.push(".spool");
            Ok(workspace.with_file_name(name))
        }
    }
}

/// Parses a number in `[0, 1]`.
pub(crate) fn unit_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be in [0, 1], got {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_defaults_under_the_current_directory() {
        let a = ServiceArgs::for_instance("singularity_7");
        let ws = a.workspace().unwrap();
        assert!(ws.is_absolute());
        assert!(ws.ends_with("workspace/singularity_7"), "{ws:?}");
        assert!(unit_interval("0.5").is_ok());
        assert!(unit_interval("1.5").is_err());
        assert!(unit_interval("x").is_err());
    }

    #[test]
    fn a_token_is_required_beyond_loopback_and_must_be_long() {
        let api = |t: Option<&str>, p: Option<&str>| ApiArgs {
            api_token: t.map(str::to_string),
            api_token_previous: p.map(str::to_string),
        };
        let (lo, any) = (
            "127.0.0.1:8080".parse().unwrap(),
            "0.0.0.0:8080".parse().unwrap(),
        );
        assert!(api(None, None).tokens(lo).unwrap().is_none());
        assert!(api(None, None)
            .tokens("[::1]:1".parse().unwrap())
            .unwrap()
            .is_none());
        let e = api(None, None).tokens(any).unwrap_err().to_string();
        assert!(
            e.contains("SINGULARITY_API_TOKEN") && e.contains("0.0.0.0:8080"),
            "{e}"
        );
        assert!(api(Some(""), None).tokens(any).is_err());
        assert!(api(Some("short"), None).tokens(any).is_err());
        assert!(api(Some("0123456789abcdef"), Some("has space 0123456789"))
            .tokens(any)
            .is_err());
        assert!(api(Some("0123456789abcdef"), None)
            .tokens(any)
            .unwrap()
            .is_some());
        assert!(api(Some("0123456789abcdef"), None)
            .tokens(lo)
            .unwrap()
            .is_some());
        assert!(!format!("{:?}", api(Some("0123456789abcdef"), None)).contains("0123"));
    }
}
