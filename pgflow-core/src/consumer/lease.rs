//! The lease keeper (heartbeat): a consumer claims for its queue's
//! visibility timeout, a short lease, and extends the leases of every
//! message it is still handling, in one fenced statement, every
//! 1/[`EXTENSIONS_PER_LEASE`] of that lease. A long handler keeps its
//! message however long it runs (up to its own timeout), while the message
//! of a process that died is claimable again one lease after its last
//! extension: seconds, not the handler timeout.
//!
//! An extension the database refuses means the lease was lost (it expired
//! meanwhile, or the message was claimed again): the message's
//! [`Held::lost`] token fires, the handler is stopped and its outcome is not
//! settled (the new holder owns the message; the ack would be refused
//! anyway, since every settlement is fenced).
//!
//! A transactional handler's message is [`set_settling`] while its ack
//! commits: the keeper leaves it alone then, so an extension never waits
//! on the ack's row locks (and never mistakes the acked message for a lost
//! one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::state::{ConsumerState, Count};
use crate::client::Pgflow;
use crate::delivery::Receipt;
use crate::error::report;
use crate::ops::prometheus::{LEASE_EXTENSIONS_TOTAL, LEASE_EXTENSION_ERRORS_TOTAL};
use crate::queue_name::QueueName;

/// Extensions per lease period: with a 3 s lease the keeper extends every
/// 750 ms, so three extensions in a row may fail (a slow statement, a
/// busy pool) before a live handler loses its message.
pub const EXTENSIONS_PER_LEASE: u32 = 4;
/// Shortest pause between two extension rounds (for very short leases).
const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// A message being handled, with its claim's receipt.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The receipt of the claim.
    pub receipt: Receipt,
    /// Fires when an extension found the lease lost.
    pub lost: CancellationToken,
    /// Its ack is being committed: not extended meanwhile.
    pub settling: Arc<AtomicBool>,
}

impl Held {
    pub(crate) fn new(receipt: Receipt) -> Self {
        Held {
            receipt,
            lost: CancellationToken::new(),
            settling: Arc::default(),
        }
    }
}

/// Marks message `id` as being settled in its handler's transaction (`on`),
/// or handled again (`!on`).
pub(crate) fn set_settling(in_flight: &InFlight, id: Uuid, on: bool) {
    if let Some(h) = in_flight.lock().ok().and_then(|m| m.get(&id).cloned()) {
        h.settling.store(on, Ordering::SeqCst);
    }
}

/// Messages being handled now, by id: their leases are extended while they
/// are here, and released at shutdown if still unfinished.
pub(crate) type InFlight = Arc<Mutex<HashMap<Uuid, Held>>>;

/// The pause between two extension rounds for a lease of `lease`.
pub(crate) fn interval(lease: Duration) -> Duration {
    (lease / EXTENSIONS_PER_LEASE).max(MIN_INTERVAL)
}

/// The `lost` token of message `id` (one that never fires when the message
/// is not tracked).
pub(crate) fn lost_token(in_flight: &InFlight, id: Uuid) -> CancellationToken {
    in_flight
        .lock()
        .ok()
        .and_then(|m| m.get(&id).map(|h| h.lost.clone()))
        .unwrap_or_default()
}

/// Extends the leases of everything in `in_flight` to `lease` from now,
/// every [`interval`], until `stop`. A failed statement is logged and
/// counted and tried again on the next round (the leases last
/// [`EXTENSIONS_PER_LEASE`] rounds).
pub(crate) async fn keep(
    pg: Pgflow,
    queue: QueueName,
    lease: Duration,
    in_flight: InFlight,
    state: Arc<ConsumerState>,
    stop: CancellationToken,
) {
    let every = interval(lease);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let held: Vec<Receipt> = in_flight
            .lock()
            .map(|m| {
                m.values()
                    .filter(|h| !h.lost.is_cancelled() && !h.settling.load(Ordering::SeqCst))
                    .map(|h| h.receipt)
                    .collect()
            })
            .unwrap_or_default();
        if held.is_empty() {
            continue;
        }
        match pg.extend_leases(&held, lease).await {
            Ok(kept) => {
                metrics::counter!(LEASE_EXTENSIONS_TOTAL, "queue" => queue.to_string())
                    .increment(kept.len() as u64);
                if kept.len() < held.len() {
                    flag_lost(&queue, &held, &kept, &in_flight, &state);
                }
            }
            Err(e) => {
                metrics::counter!(LEASE_EXTENSION_ERRORS_TOTAL, "queue" => queue.to_string())
                    .increment(1);
                tracing::warn!(
                    queue = %queue, messages = held.len(), error = %report(&e), retry_in = ?every,
                    "lease extension failed; trying again"
                );
            }
        }
    }
}

/// Fires the `lost` token of every message of `asked` that the extension
/// did not `kept` and that is still being handled.
fn flag_lost(
    queue: &QueueName,
    asked: &[Receipt],
    kept: &[Uuid],
    in_flight: &InFlight,
    state: &ConsumerState,
) {
    let Ok(m) = in_flight.lock() else { return };
    for r in asked.iter().filter(|r| !kept.contains(&r.id)) {
        // Finished meanwhile (its ack may have raced the extension): not lost.
        let Some(h) = m.get(&r.id).filter(|h| h.receipt == *r) else {
            continue;
        };
        if !h.lost.is_cancelled() {
            h.lost.cancel();
            state.add(Count::LeaseLost, 1);
            tracing::warn!(
                queue = %queue, message_id = %r.id,
                "lease lost while the handler ran (it expired or the message was claimed again): \
                 the handler is stopped and its outcome will not be settled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_extended_several_times_per_period() {
        assert_eq!(interval(Duration::from_secs(3)), Duration::from_millis(750));
        assert_eq!(interval(Duration::from_millis(1)), MIN_INTERVAL);
    }

    #[test]
    fn an_untracked_message_never_counts_as_lost() {
        let m: InFlight = Arc::default();
        let id = Uuid::now_v7();
        assert!(!lost_token(&m, id).is_cancelled());
        let held = Held::new(Receipt {
            id,
            lease: Uuid::now_v7(),
        });
        m.lock().unwrap().insert(id, held.clone());
        held.lost.cancel();
        assert!(lost_token(&m, id).is_cancelled());
    }
}
