-- Genesis's own state, in its schema `genesis` (created with the service
-- roles): the workflows it runs, the rules and LLM configurations it
-- applies (with their history) and the learning-loop reports it received.
-- Only the `genesis` role (and the migration owner) may touch these tables.

-- One row per request message: pending (claimed, waiting for a worker) ->
-- running -> completed | failed. The id is the request's message id, so a
-- redelivered message resumes its own row.
CREATE TABLE genesis.workflows (
    id          uuid PRIMARY KEY,
    queue       text NOT NULL,
    msg_type    text NOT NULL,
    -- The request's own id (`request_id` of rule / config updates, the job
    -- `id` of code analysis requests); NULL when it has none.
    request_id  text,
    -- The requesting instance the result is addressed to.
    instance    text,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    error       text,
    trace_id    uuid NOT NULL,
    -- Deliveries of the request that reached this table.
    attempts    integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms bigint,
    -- The result payload sent (or, for learning-loop reports, what was recorded).
    result      jsonb,
    CHECK ((status IN ('completed', 'failed')) = (finished_at IS NOT NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
CREATE INDEX workflows_queue_status ON genesis.workflows (queue, status);
CREATE INDEX workflows_created_at ON genesis.workflows (created_at);
CREATE INDEX workflows_request ON genesis.workflows (request_id);

-- Every state a workflow entered, in order.
CREATE TABLE genesis.workflow_events (
    seq         bigserial PRIMARY KEY,
    workflow_id uuid NOT NULL REFERENCES genesis.workflows (id) ON DELETE CASCADE,
    status      text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail      text
);
CREATE INDEX workflow_events_workflow ON genesis.workflow_events (workflow_id, seq);

-- The active version of each rule: one per (namespace, name).
CREATE TABLE genesis.rules (
    namespace  text NOT NULL,
    name       text NOT NULL,
    version    integer NOT NULL CHECK (version > 0),
    rule       jsonb NOT NULL,
    confidence double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

-- Every version of every rule ever applied.
CREATE TABLE genesis.rule_versions (
    namespace    text NOT NULL,
    name         text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    rule         jsonb NOT NULL,
    confidence   double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    request_id   uuid NOT NULL UNIQUE,
    instance_id  text NOT NULL,
    trace_id     uuid NOT NULL,
    published_at timestamptz NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name, version)
);

-- The active model list of each provider for each complexity.
CREATE TABLE genesis.llm_configs (
    provider   text NOT NULL,
    complexity text NOT NULL CHECK (complexity IN ('simple', 'medium', 'complex')),
    version    integer NOT NULL CHECK (version > 0),
    models     text[] NOT NULL CHECK (cardinality(models) > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, complexity)
);

-- Every configuration ever applied.
CREATE TABLE genesis.llm_config_history (
    provider     text NOT NULL,
    complexity   text NOT NULL CHECK (complexity IN ('simple', 'medium', 'complex')),
    version      integer NOT NULL CHECK (version > 0),
    models       text[] NOT NULL CHECK (cardinality(models) > 0),
    request_id   uuid NOT NULL UNIQUE,
    instance_id  text NOT NULL,
    trace_id     uuid NOT NULL,
    published_at timestamptz NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, complexity, version)
);

-- Learning-loop reports from centralcloud (`learning_loop_completed`).
CREATE TABLE genesis.learning_events (
    id                 uuid PRIMARY KEY, -- the message id
    patterns_processed bigint NOT NULL CHECK (patterns_processed >= 0),
    rules_generated    bigint NOT NULL CHECK (rules_generated >= 0),
    thresholds_updated bigint NOT NULL CHECK (thresholds_updated >= 0),
    completed_at       timestamptz NOT NULL,
    source             text,
    trace_id           uuid NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA genesis TO genesis;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA genesis TO genesis;
