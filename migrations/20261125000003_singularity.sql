-- Singularity's own state, in its schema `singularity` (created, with USAGE
-- for the role `singularity`, by the service-roles migration). Several
-- instances share the schema, so every row names its instance. No other
-- service role gets any privilege here: the services share no table.
--
--   proposals        one row per proposal of an instance, through its life
--                    pending -> submitted -> consensus_reached | consensus_failed
--                    -> executing -> applied -> rolled_back (or failed, when
--                    the change could not be applied: the reason is in `error`)
--   safety_profiles  the current safety profile per (instance, agent type),
--                    with a version counting the updates applied
--   votes_cast       one row per (instance, proposal voted on): the vote and
--                    its reason (a vote request delivered twice is answered once)

CREATE TABLE singularity.proposals (
    id                    uuid PRIMARY KEY,
    instance_id           text NOT NULL,
    agent_type            text NOT NULL,
    -- The change: `file` relative to the instance's workspace, `change` its
    -- complete new content.
    file                  text NOT NULL,
    change                text NOT NULL,
    impact_score          double precision NOT NULL CHECK (impact_score >= 0),
    risk_score            double precision NOT NULL CHECK (risk_score >= 0),
    cost_factor           double precision NOT NULL DEFAULT 1 CHECK (cost_factor >= 0),
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'submitted', 'consensus_reached',
                                            'consensus_failed', 'executing', 'applied',
                                            'rolled_back', 'failed')),
    -- One trace id per proposal journey, carried on every message of it.
    trace_id              uuid NOT NULL,
    -- The decision of consensus.
    votes                 jsonb,
    confidence            double precision CHECK (confidence BETWEEN 0 AND 1),
    rationale             text,
    -- The file before the change: its content, or backup_existed = false
    -- when it did not exist. Both NULL until execution starts; recorded
    -- (and committed) before the file is written, so a redelivered execution
    -- never takes the new content for the old.
    backup_existed        boolean,
    backup_content        bytea,
    metrics_before        jsonb,
    metrics_after         jsonb,
    -- Why execution failed (status failed), or the rollback's reason.
    error                 text,
    rollback_reason       text,
    -- Deliveries that found the work already done (redelivered execution
    -- of an applied proposal, rollback of a rolled-back one, repeated
    -- consensus result).
    duplicate_deliveries  integer NOT NULL DEFAULT 0,
    pattern_reported_at   timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    submitted_at          timestamptz,
    decided_at            timestamptz,
    applied_at            timestamptz,
    rolled_back_at        timestamptz,
    CHECK (backup_existed IS NOT FALSE OR backup_content IS NULL)
);

CREATE INDEX proposals_instance_status_idx ON singularity.proposals (instance_id, status);
CREATE INDEX proposals_instance_agent_idx ON singularity.proposals (instance_id, agent_type);
-- The pattern miner's work: applied changes not reported yet.
CREATE INDEX proposals_unreported_idx ON singularity.proposals (instance_id, applied_at)
    WHERE status = 'applied' AND pattern_reported_at IS NULL;

CREATE TABLE singularity.safety_profiles (
    instance_id   text NOT NULL,
    agent_type    text NOT NULL,
    -- protocol::SafetyProfile (success_rate, error_threshold,
    -- latency_threshold, cost_threshold).
    profile       jsonb NOT NULL,
    -- Updates applied so far (1 for the first).
    version       integer NOT NULL CHECK (version > 0),
    source        text NOT NULL,
    -- When the guardian produced the update in effect (older ones are ignored).
    produced_at   timestamptz NOT NULL,
    message_id    uuid NOT NULL,
    trace_id      uuid NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, agent_type)
);

CREATE TABLE singularity.votes_cast (
    instance_id   text NOT NULL,
    proposal_id   uuid NOT NULL,
    agent_type    text NOT NULL,
    vote          text NOT NULL CHECK (vote IN ('approve', 'reject')),
    reason        text NOT NULL,
    -- The profile version the vote used (NULL: the default profile).
    profile_version integer,
    trace_id      uuid NOT NULL,
    cast_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, proposal_id)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA singularity TO singularity;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA singularity TO singularity;
