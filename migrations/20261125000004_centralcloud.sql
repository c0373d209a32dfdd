-- CentralCloud's own state, in its schema `centralcloud` (created, with
-- USAGE for the role `centralcloud`, by the service-roles migration). No
-- other service role gets any privilege here: the services share no table.
--
--   proposals        one row per proposal sent for consensus: who proposed it,
--                    the live instances asked to vote, the deadline, and the
--                    decision (status collecting -> approved | rejected)
--   votes            one row per (proposal, voter); `counted` is false for a
--                    vote sent after the deadline or after the decision
--   metrics          execution metrics reported to the guardian, with the
--                    breach found (if any) and the rollback trigger sent
--   patterns         patterns merged across instances: reports, instances,
--                    success rate per instance and overall
--   pattern_reports  each pattern report (idempotency and learning evidence)
--   learning_runs    passes of the learning loop and what they produced
--   safety_profiles  versioned safety profile per agent type (the current
--                    one is the highest version)
--
-- Evidence rows (decided proposals, metrics, pattern reports) carry the
-- learning run that consumed them, so each pass learns from new evidence
-- exactly once.

CREATE TABLE centralcloud.learning_runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger            text NOT NULL CHECK (trigger IN ('interval', 'cli', 'api')),
    trace_id           uuid NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    proposals_seen     bigint NOT NULL DEFAULT 0,
    metrics_seen       bigint NOT NULL DEFAULT 0,
    patterns_processed bigint NOT NULL DEFAULT 0,
    rules_generated    bigint NOT NULL DEFAULT 0,
    thresholds_updated bigint NOT NULL DEFAULT 0,
    profiles_updated   bigint NOT NULL DEFAULT 0
);

CREATE TABLE centralcloud.proposals (
    proposal_id      uuid PRIMARY KEY,
    instance_id      text NOT NULL,
    agent_type       text NOT NULL,
    code_change      jsonb NOT NULL,
    impact_score     double precision NOT NULL,
    risk_score       double precision NOT NULL,
    -- The proposer's view of the agent's record, as sent.
    proposer_safety  jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'collecting'
                     CHECK (status IN ('collecting', 'approved', 'rejected')),
    -- Live subscribers of the vote-request queue when the request was sent.
    expected_voters  text[] NOT NULL DEFAULT '{}',
    quorum           double precision NOT NULL CHECK (quorum > 0 AND quorum <= 1),
    deadline         timestamptz NOT NULL,
    confidence       double precision CHECK (confidence BETWEEN 0 AND 1),
    rationale        text,
    decided_by       text CHECK (decided_by IN ('all_voted', 'deadline', 'no_voters')),
    trace_id         uuid NOT NULL,
    message_id       uuid NOT NULL,
    proposed_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    result_message_id uuid,
    learning_run_id  bigint REFERENCES centralcloud.learning_runs (id),
    CHECK ((status = 'collecting') = (decided_at IS NULL))
);

-- The deadline decider's scan; the status constant is literal so the
-- partial index is usable.
CREATE INDEX proposals_due_idx ON centralcloud.proposals (deadline)
    WHERE status = 'collecting';
CREATE INDEX proposals_unlearned_idx ON centralcloud.proposals (agent_type)
    WHERE status <> 'collecting' AND learning_run_id IS NULL;

CREATE TABLE centralcloud.votes (
    proposal_id uuid NOT NULL REFERENCES centralcloud.proposals (proposal_id) ON DELETE CASCADE,
    voter       text NOT NULL,
    vote        text NOT NULL CHECK (vote IN ('approve', 'reject')),
    reason      text NOT NULL,
    counted     boolean NOT NULL,
    trace_id    uuid NOT NULL,
    message_id  uuid NOT NULL,
    sent_at     timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (proposal_id, voter)
);

CREATE TABLE centralcloud.metrics (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id          uuid NOT NULL UNIQUE,
    proposal_id         uuid NOT NULL,
    instance_id         text NOT NULL,
    agent_type          text NOT NULL,
    status              text NOT NULL,
    metrics_before      jsonb NOT NULL,
    metrics_after       jsonb NOT NULL,
    -- The safety profile compared against (0 = the built-in defaults).
    profile_version     integer NOT NULL,
    breach              text CHECK (breach IN ('error_rate_breach', 'latency_breach', 'cost_breach')),
    threshold           double precision,
    actual              double precision,
    rollback_message_id uuid,
    trace_id            uuid NOT NULL,
    measured_at         timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    learning_run_id     bigint REFERENCES centralcloud.learning_runs (id),
    CHECK ((breach IS NULL) = (threshold IS NULL AND actual IS NULL))
);

CREATE INDEX metrics_proposal_idx ON centralcloud.metrics (proposal_id);
CREATE INDEX metrics_unlearned_idx ON centralcloud.metrics (agent_type)
    WHERE learning_run_id IS NULL;

CREATE TABLE centralcloud.patterns (
    pattern_key      text PRIMARY KEY,
    pattern_type     text NOT NULL,
    agent_type       text NOT NULL,
    code_pattern     jsonb NOT NULL,
    -- Reports received (an instance may report the same pattern again).
    occurrences      bigint NOT NULL CHECK (occurrences > 0),
    -- Distinct instances that reported it, sorted.
    instances        text[] NOT NULL,
    -- Latest success rate reported by each instance.
    instance_success jsonb NOT NULL DEFAULT '{}',
    -- Mean of `instance_success`.
    success_rate     double precision NOT NULL CHECK (success_rate BETWEEN 0 AND 1),
    first_seen       timestamptz NOT NULL DEFAULT now(),
    last_seen        timestamptz NOT NULL DEFAULT now(),
    -- Set when the learning loop promoted it to a rule for Genesis.
    promoted_at      timestamptz,
    promoted_by_run  bigint REFERENCES centralcloud.learning_runs (id)
);

CREATE INDEX patterns_agent_idx ON centralcloud.patterns (agent_type);

CREATE TABLE centralcloud.pattern_reports (
    message_id      uuid PRIMARY KEY,
    pattern_key     text NOT NULL REFERENCES centralcloud.patterns (pattern_key) ON DELETE CASCADE,
    instance_id     text NOT NULL,
    agent_type      text NOT NULL,
    success_rate    double precision NOT NULL CHECK (success_rate BETWEEN 0 AND 1),
    trace_id        uuid NOT NULL,
    discovered_at   timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    learning_run_id bigint REFERENCES centralcloud.learning_runs (id)
);

CREATE INDEX pattern_reports_unlearned_idx ON centralcloud.pattern_reports (agent_type)
    WHERE learning_run_id IS NULL;

CREATE TABLE centralcloud.safety_profiles (
    agent_type        text NOT NULL,
    version           integer NOT NULL CHECK (version > 0),
    success_rate      double precision NOT NULL CHECK (success_rate BETWEEN 0 AND 1),
    error_threshold   double precision NOT NULL CHECK (error_threshold BETWEEN 0 AND 1),
    latency_threshold double precision NOT NULL CHECK (latency_threshold >= 0),
    cost_threshold    double precision NOT NULL CHECK (cost_threshold >= 0),
    -- What the learning loop saw when it produced this version.
    evidence          jsonb NOT NULL DEFAULT '{}',
    learning_run_id   bigint REFERENCES centralcloud.learning_runs (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_type, version)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA centralcloud TO centralcloud;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA centralcloud TO centralcloud;
