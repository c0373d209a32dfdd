//! The claim floor (migration 12): per queue and target, an `ord` below
//! which no message lies, so a claim starts past the dead index entries
//! that acked messages leave at the head of the queue until VACUUM.
//! Inserts lower the floor themselves (a trigger); this module raises it,
//! at most once per [`ADVANCE_EVERY`] for each queue and target a handle
//! claims from.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Pgflow;
use crate::error::Result;
use crate::queue_name::QueueName;

/// How often a handle raises the floor of a queue and target it claims from.
/// Between two advances a claim walks at most the entries of the messages
/// acked meanwhile.
pub const ADVANCE_EVERY: Duration = Duration::from_millis(100);

/// When this handle last advanced each queue (outer key) and target.
#[derive(Debug, Default)]
pub(super) struct Advances {
    last: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Advances {
    /// Whether (queue, target) is due an advance; if so, marks it done now.
    /// Called on every claim: a known pair is looked up without allocating.
    fn due(&self, queue: &str, target: &str) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        let targets = match last.get_mut(queue) {
            Some(t) => t,
            None => last.entry(queue.to_owned()).or_default(),
        };
        match targets.get_mut(target) {
            Some(t) if now.duration_since(*t) < ADVANCE_EVERY => false,
            Some(t) => {
                *t = now;
                true
            }
            None => {
                targets.insert(target.to_owned(), now);
                true
            }
        }
    }
}

impl Pgflow {
    /// Raises the claim floor of `queue` for `target` (`""`: competing
    /// consumers) past the messages already gone, and returns it; `None`
    /// when nothing was ever sent there, or when sends in flight held it
    /// for longer than 20 ms (it is tried again later; sends queued behind
    /// it wait at most that long). Claims call this by themselves every
    /// [`ADVANCE_EVERY`]; it never hides a message: the floor stops at the
    /// oldest message still present, whether ready, delayed or in flight.
    pub async fn advance_floor(&self, queue: &QueueName, target: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT pgflow.advance_floor($1, $2)")
            .bind(queue.as_str())
            .bind(target)
            .fetch_one(&self.queue_pool)
            .await?)
    }

    /// Advances the floor if this handle has not done so for a while.
    pub(super) async fn advance_floor_if_due(&self, queue: &QueueName, target: &str) -> Result<()> {
        if self.floors.due(queue.as_str(), target) {
            self.advance_floor(queue, target).await?;
        }
        Ok(())
    }
}
