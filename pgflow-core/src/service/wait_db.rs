//! Waiting for the database at service start. A service started while
//! PostgreSQL is down (or still starting) does not exit: it serves its ops
//! endpoints (`/healthz` 200, `/readyz` 503 with the reason), tries again
//! with a capped exponential backoff, logging each failure with the next
//! delay, and starts as soon as the database answers. A shutdown request
//! while waiting ends the wait at once.
//!
//! Only an unavailable database is waited for; anything else (a refused
//! password, an unmigrated schema) is an error the operator must fix, and
//! the service exits with it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{announce_ready_line, connect, DatabaseArgs};
use crate::client::Pgflow;
use crate::error::{report, Result};
use crate::ops::OpsState;

/// First pause after a failed connection attempt.
pub const DB_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest pause between two connection attempts: a service starts at most
/// this long after the database answers again.
pub const DB_RETRY_MAX: Duration = Duration::from_secs(2);

/// The pause before attempt `attempt + 1` after `attempt` failures
/// (1-based): doubling from [`DB_RETRY_INITIAL`], capped at [`DB_RETRY_MAX`].
pub fn retry_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    DB_RETRY_INITIAL
        .saturating_mul(1 << doublings)
        .min(DB_RETRY_MAX)
}

/// Connects as `service` (schema checked), waiting while the database is
/// unavailable; `/readyz` says why meanwhile, and the first failure prints
/// `<service> waiting for the database http=<addr>`. `None` when
/// `shutdown` fired first.
pub(super) async fn connect_waiting(
    service: &str,
    db: &DatabaseArgs,
    ops: &OpsState,
    http_addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Option<Pgflow>> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let tried = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = connect(service, db) => r,
        };
        let e = match tried {
            Ok(pg) => {
                if attempt > 1 {
                    tracing::info!(
                        service,
                        attempts = attempt,
                        "the database answers; starting"
                    );
                }
                ops.set_waiting(None);
                return Ok(Some(pg));
            }
            Err(e) if e.is_connection() => e,
            Err(e) => return Err(e),
        };
        let delay = retry_delay(attempt);
        let why = report(&e);
        ops.set_waiting(Some(format!(
            "waiting for the database (attempt {attempt}): {why}"
        )));
        if attempt == 1 {
            announce_ready_line(service, "waiting for the database", http_addr);
        }
        tracing::warn!(
            service, attempt, error = %why, retry_in = ?delay,
            "database unavailable; waiting for it"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_the_cap() {
        let ms: Vec<u128> = (1..=7).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX), DB_RETRY_MAX);
    }
}
