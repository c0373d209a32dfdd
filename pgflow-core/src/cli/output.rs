//! Rendering of CLI results: tables for people, JSON for scripts.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use uuid::Uuid;

use crate::client::{DlqMessage, MessageSummary, QueueStats};
use crate::error::Result;
use crate::queue_config::QueueConfig;

fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The queue table (`queues`, `stats`).
pub fn queues(json: bool, rows: &[QueueStats]) -> Result<()> {
    if json {
        return print_json(rows);
    }
    println!("{}", queues_table(rows));
    Ok(())
}

/// The queue table as text (also used by `pgflow up`).
pub fn queues_table(rows: &[QueueStats]) -> Table {
    let mut t = table(&[
        "queue",
        "delivery",
        "pending",
        "in flight",
        "delayed",
        "dlq",
        "done/min",
        "oldest",
    ]);
    for r in rows {
        t.add_row(vec![
            r.queue_name.clone(),
            r.delivery.clone(),
            r.pending.to_string(),
            r.in_flight.to_string(),
            r.delayed.to_string(),
            r.dlq.to_string(),
            r.processed_last_minute.to_string(),
            r.oldest_pending_age_secs
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// `pending`.
pub fn pending(json: bool, rows: &[MessageSummary]) -> Result<()> {
    if json {
        return print_json(rows);
    }
    let mut t = table(&[
        "id", "status", "prio", "type", "target", "attempts", "created", "payload",
    ]);
    for r in rows {
        t.add_row(vec![
            r.id.to_string(),
            r.status.clone(),
            r.priority.to_string(),
            r.msg_type.clone(),
            r.target.clone(),
            r.attempts.to_string(),
            r.created_at.format("%H:%M:%S%.3f").to_string(),
            short(&r.payload.to_string(), 60),
        ]);
    }
    println!("{t}\n{} message(s)", rows.len());
    Ok(())
}

/// `dlq list`.
pub fn dlq(json: bool, rows: &[DlqMessage]) -> Result<()> {
    if json {
        return print_json(rows);
    }
    let mut t = table(&["id", "queue", "type", "attempts", "error", "dead since"]);
    for r in rows {
        t.add_row(vec![
            r.id.to_string(),
            r.queue_name.clone(),
            r.msg_type.clone(),
            r.attempts.to_string(),
            short(&r.error, 70),
            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    println!("{t}\n{} dead letter(s)", rows.len());
    Ok(())
}

/// `send`.
pub fn sent(json: bool, id: Uuid) -> Result<()> {
    if json {
        return print_json(&serde_json::json!({ "id": id }));
    }
    println!("sent {id}");
    Ok(())
}

/// `queue create` / `queue show`.
pub fn queue_config(json: bool, cfg: &QueueConfig) -> Result<()> {
    if json {
        return print_json(cfg);
    }
    let mut t = table(&["setting", "value"]);
    t.add_row(vec!["queue".to_string(), cfg.name.to_string()]);
    t.add_row(vec![
        "delivery".to_string(),
        cfg.delivery.as_str().to_string(),
    ]);
    t.add_row(vec![
        "max_retries".to_string(),
        cfg.retry.max_retries.to_string(),
    ]);
    t.add_row(vec![
        "retry_delay_ms".to_string(),
        cfg.retry.base_delay_ms.to_string(),
    ]);
    t.add_row(vec![
        "visibility_timeout".to_string(),
        humantime::format_duration(cfg.visibility_timeout).to_string(),
    ]);
    t.add_row(vec![
        "archive_retention".to_string(),
        humantime::format_duration(cfg.archive_retention).to_string(),
    ]);
    t.add_row(vec![
        "batch_storage".to_string(),
        cfg.batch_storage.to_string(),
    ]);
    println!("{t}");
    Ok(())
}

/// A command that reports a count.
pub fn done(json: bool, message: &str, count: u64) -> Result<()> {
    if json {
        return print_json(&serde_json::json!({ "ok": true, "count": count, "message": message }));
    }
    println!("{message}");
    Ok(())
}
