//! Logging set-up shared by the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info`), as JSON lines when `PGFLOW_LOG_FORMAT=json`;
//! and the named telemetry events of the seeds ([`Event`], [`emit`]).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if std::env::var("PGFLOW_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The named telemetry events of the seeds (`[:evolution, :pgflow, :name]`
/// in seed 003), emitted where they happen by [`emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// singularity: a proposal was sent for consensus.
    ProposalPublished,
    /// singularity: execution metrics were sent to the guardian.
    MetricsPublished,
    /// singularity: a pattern was sent to the aggregator.
    PatternPublished,
    /// A publish failed (or was spooled because the database is unreachable).
    PublishFailed,
    /// singularity: consensus approved one of its proposals.
    ConsensusApproved,
    /// singularity: consensus rejected one of its proposals.
    ConsensusRejected,
    /// singularity: a rollback was carried out.
    RollbackCompleted,
    /// singularity: a safety profile was updated.
    ProfileUpdated,
    /// centralcloud: a proposal arrived.
    ProposalReceived,
    /// centralcloud: execution metrics arrived.
    MetricsReceived,
    /// centralcloud: a pattern arrived.
    PatternReceived,
    /// centralcloud: a consensus result was sent.
    ConsensusResultPublished,
    /// centralcloud: a rollback trigger was sent.
    RollbackTriggerPublished,
    /// centralcloud: a safety-profile update was broadcast.
    ProfileUpdatePublished,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 14] = [
        Event::ProposalPublished,
        Event::MetricsPublished,
        Event::PatternPublished,
        Event::PublishFailed,
        Event::ConsensusApproved,
        Event::ConsensusRejected,
        Event::RollbackCompleted,
        Event::ProfileUpdated,
        Event::ProposalReceived,
        Event::MetricsReceived,
        Event::PatternReceived,
        Event::ConsensusResultPublished,
        Event::RollbackTriggerPublished,
        Event::ProfileUpdatePublished,
    ];

    /// The seed's name of the event.
    pub fn name(self) -> &'static str {
        match self {
            Event::ProposalPublished => "proposal_published",
            Event::MetricsPublished => "metrics_published",
            Event::PatternPublished => "pattern_published",
            Event::PublishFailed => "publish_failed",
            Event::ConsensusApproved => "consensus_approved",
            Event::ConsensusRejected => "consensus_rejected",
            Event::RollbackCompleted => "rollback_completed",
            Event::ProfileUpdated => "profile_updated",
            Event::ProposalReceived => "proposal_received",
            Event::MetricsReceived => "metrics_received",
            Event::PatternReceived => "pattern_received",
            Event::ConsensusResultPublished => "consensus_result_published",
            Event::RollbackTriggerPublished => "rollback_trigger_published",
            Event::ProfileUpdatePublished => "profile_update_published",
        }
    }
}

/// Emits `event`: one `tracing` event on target `pgflow::telemetry` with
/// the seed's name as `event` (plus `detail`), and one increment of the
/// counter `pgflow_events_total{event}`.
pub fn emit(event: Event, detail: &str) {
    tracing::info!(target: "pgflow::telemetry", event = event.name(), detail, "telemetry event");
    metrics::counter!("pgflow_events_total", "event" => event.name()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_the_seeds() {
        let names: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
        // Seed 003's `config :telemetry, :events` lists, singularity then centralcloud.
        let seed = [
            "proposal_published",
            "metrics_published",
            "pattern_published",
            "publish_failed",
            "consensus_approved",
            "consensus_rejected",
            "rollback_completed",
            "profile_updated",
            "proposal_received",
            "metrics_received",
            "pattern_received",
            "consensus_result_published",
            "rollback_trigger_published",
            "profile_update_published",
        ];
        assert_eq!(names, seed);
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
