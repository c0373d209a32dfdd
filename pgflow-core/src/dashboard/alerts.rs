//! Alerts: the seeds' thresholds (a dead-letter queue holding more than 10
//! messages, a queue whose oldest ready message waits more than 5 s) as
//! defaults, configurable, evaluated on every sample. The same rules for
//! Prometheus are in `deploy/prometheus/pgflow-alerts.yml` (on the gauges
//! every service exports: `pgflow_dlq_messages`,
//! `pgflow_queue_oldest_age_seconds`).

use std::time::Duration;

use serde::Serialize;

use super::sampler::Sample;

/// The seeds' DLQ threshold: more than this many dead letters in a queue.
pub const DEFAULT_DLQ_MAX: i64 = 10;

/// The seeds' latency threshold: the oldest ready message waits longer.
pub const DEFAULT_LATENCY: Duration = Duration::from_secs(5);

/// When alerts fire.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AlertThresholds {
    /// Fire when a queue's DLQ holds more than this many messages.
    pub dlq_max: i64,
    /// Fire when a queue's oldest ready message has waited longer.
    #[serde(serialize_with = "as_secs")]
    pub latency: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            dlq_max: DEFAULT_DLQ_MAX,
            latency: DEFAULT_LATENCY,
        }
    }
}

/// One firing alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `DlqTooLarge` or `QueueLatencyHigh` (the Prometheus rules' names).
    pub name: &'static str,
    /// The queue.
    pub queue: String,
    /// The value that crossed the threshold (messages, or seconds).
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// For people.
    pub message: String,
}

/// The alerts that fire on `sample`, by queue name.
pub fn evaluate(sample: &Sample, t: &AlertThresholds) -> Vec<Alert> {
    let mut out = Vec::new();
    for (queue, p) in &sample.queues {
        if p.dlq > t.dlq_max {
            out.push(Alert {
                name: "DlqTooLarge",
                queue: queue.clone(),
                value: p.dlq as f64,
                threshold: t.dlq_max as f64,
                message: format!(
                    "{queue}: {} dead letters (more than {}); inspect them below, fix the cause, then retry or purge",
                    p.dlq, t.dlq_max
                ),
            });
        }
        let limit = t.latency.as_secs_f64();
        if p.oldest_age_s > limit {
            out.push(Alert {
                name: "QueueLatencyHigh",
                queue: queue.clone(),
                value: p.oldest_age_s,
                threshold: limit,
                message: format!(
                    "{queue}: the oldest ready message has waited {:.1} s (more than {limit} s); its consumers are down or too slow",
                    p.oldest_age_s
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::sampler::QueuePoint;

    fn sample(dlq: i64, age: f64) -> Sample {
        let mut s = Sample::empty(chrono::Utc::now());
        s.queues.insert(
            "q".into(),
            QueuePoint {
                dlq,
                oldest_age_s: age,
                ..QueuePoint::default()
            },
        );
        s
    }

    #[test]
    fn seeds_thresholds_are_the_defaults() {
        let t = AlertThresholds::default();
        assert!(evaluate(&sample(10, 5.0), &t).is_empty());
        let fired = evaluate(&sample(11, 5.5), &t);
        let names: Vec<_> = fired.iter().map(|a| a.name).collect();
        assert_eq!(names, ["DlqTooLarge", "QueueLatencyHigh"]);
    }

    #[test]
    fn thresholds_are_configurable() {
        let t = AlertThresholds {
            dlq_max: 0,
            latency: Duration::from_millis(100),
        };
        assert_eq!(evaluate(&sample(1, 0.2), &t).len(), 2);
    }
}
