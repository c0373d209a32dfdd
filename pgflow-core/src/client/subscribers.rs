//! Subscribers of broadcast and targeted queues: registration, liveness
//! heartbeats and listing. A send to a broadcast queue copies the message
//! once for every subscriber that is live at that moment (see the
//! `subscribers` migration); a send to a targeted queue is refused for a
//! target never registered there, and messages for a target gone too long
//! are dead-lettered (migration 19).

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::Pgflow;
use crate::error::{Error, Result};
use crate::message::MAX_INSTANCE_LEN;
use crate::queue_name::QueueName;

/// One subscriber of a broadcast queue.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct Subscriber {
    /// Queue subscribed to.
    pub queue_name: String,
    /// Subscriber (instance) name; its copies carry it as target.
    pub subscriber: String,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Seen within the queue's subscriber TTL (receives new broadcasts).
    pub live: bool,
}

fn check_name(subscriber: &str) -> Result<()> {
    if subscriber.is_empty() || subscriber.len() > MAX_INSTANCE_LEN {
        return Err(Error::InvalidMessage(format!(
            "subscriber name must be 1-{MAX_INSTANCE_LEN} characters, got {}",
            subscriber.len()
        )));
    }
    Ok(())
}

impl Pgflow {
    /// Registers `subscriber` on `queue`, or refreshes its heartbeat.
    pub async fn register_subscriber(&self, queue: &QueueName, subscriber: &str) -> Result<()> {
        check_name(subscriber)?;
        let n = sqlx::query(
            "INSERT INTO pgflow.subscribers (queue_name, subscriber)
             SELECT queue_name, $2 FROM pgflow.queues WHERE queue_name = $1
             ON CONFLICT (queue_name, subscriber) DO UPDATE SET last_seen = now()",
        )
        .bind(queue.as_str())
        .bind(subscriber)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Error::UnknownQueue(queue.to_string()));
        }
        Ok(())
    }

    /// Removes a subscriber: it receives no further copies. Copies already
    /// addressed to it stay until claimed or purged. Returns whether it existed.
    pub async fn remove_subscriber(&self, queue: &QueueName, subscriber: &str) -> Result<bool> {
        let n =
            sqlx::query("DELETE FROM pgflow.subscribers WHERE queue_name = $1 AND subscriber = $2")
                .bind(queue.as_str())
                .bind(subscriber)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n > 0)
    }

    /// Dead-letters the unleased messages of targeted `queue` whose target
    /// has not been seen on it for the queue's `target_gone_after_ms`
    /// (default 24 h), each with the reason; returns how many (0 on other
    /// queues). A consumer of a targeted queue runs it with its heartbeat.
    pub async fn expire_gone_targets(&self, queue: &QueueName) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT pgflow.expire_gone_targets($1)")
            .bind(queue.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    /// The subscribers of `queue` (all queues when `None`), live or gone.
    pub async fn list_subscribers(&self, queue: Option<&QueueName>) -> Result<Vec<Subscriber>> {
        Ok(sqlx::query_as(
            "SELECT queue_name, subscriber, registered_at, last_seen, live
               FROM public.pgflow_subscribers
              WHERE $1::text IS NULL OR queue_name = $1
              ORDER BY queue_name, subscriber",
        )
        .bind(queue.map(QueueName::as_str))
        .fetch_all(&self.pool)
        .await?)
    }
}
