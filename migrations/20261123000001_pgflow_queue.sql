-- The durable queue: its own schema `pgflow`, plus the monitoring views
-- `public.pgflow_queues`, `public.pgflow_messages` and `public.pgflow_dlq`
-- that the operator SQL of the seeds queries verbatim.
--
-- Layout (see pgflow-core/src/lib.rs for the reasoning):
--   pgflow.queues    one row per queue: delivery kind, retry policy, lease, retention
--   pgflow.messages  the hot table: only live messages (ready, delayed, in flight)
--   pgflow.archive   processed messages kept for audit, pruned by age (BRIN on time)
--   pgflow.dlq       dead letters with their error, attempts and history
--
-- A claim only updates columns that no index covers (visible_at, lease,
-- attempts, claimed_at), so with the fillfactor below claims are HOT updates
-- and leave no dead index entries behind.

CREATE SCHEMA IF NOT EXISTS pgflow;

CREATE TABLE pgflow.queues (
    queue_name            text PRIMARY KEY
                          CHECK (queue_name ~ '^[a-z][a-z0-9_]{0,62}$'),
    delivery              text NOT NULL DEFAULT 'competing'
                          CHECK (delivery IN ('competing', 'targeted', 'broadcast')),
    max_retries           integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 1000),
    retry_delay_ms        integer NOT NULL DEFAULT 1000 CHECK (retry_delay_ms >= 0),
    retry_max_delay_ms    integer NOT NULL DEFAULT 300000 CHECK (retry_max_delay_ms >= 0),
    visibility_timeout_ms integer NOT NULL DEFAULT 30000 CHECK (visibility_timeout_ms > 0),
    archive_retention     interval NOT NULL DEFAULT interval '7 days'
                          CHECK (archive_retention >= interval '0'),
    description           text NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgflow.messages (
    id             uuid PRIMARY KEY,
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    queue_name     text NOT NULL,
    -- '' for competing consumers, else the instance the message is for.
    target         text NOT NULL DEFAULT '',
    priority       smallint NOT NULL DEFAULT 0,
    msg_type       text NOT NULL,
    schema_version integer NOT NULL DEFAULT 1,
    trace_id       uuid NOT NULL,
    source         text,
    payload        jsonb NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    visible_at     timestamptz NOT NULL DEFAULT now(),
    lease          uuid,
    claimed_at     timestamptz,
    last_error     text,
    history        jsonb NOT NULL DEFAULT '[]'
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim order: highest priority first, FIFO (by seq) within a priority.
CREATE INDEX messages_claim_idx
    ON pgflow.messages (queue_name, target, priority DESC, seq);

CREATE TABLE pgflow.archive (
    id             uuid NOT NULL,
    seq            bigint NOT NULL,
    queue_name     text NOT NULL,
    target         text NOT NULL,
    priority       smallint NOT NULL,
    msg_type       text NOT NULL,
    schema_version integer NOT NULL,
    trace_id       uuid NOT NULL,
    source         text,
    payload        jsonb NOT NULL,
    attempts       integer NOT NULL,
    created_at     timestamptz NOT NULL,
    history        jsonb NOT NULL,
    archived_at    timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);

CREATE INDEX archive_archived_at_brin ON pgflow.archive USING brin (archived_at);

CREATE TABLE pgflow.dlq (
    id             uuid PRIMARY KEY,
    queue_name     text NOT NULL,
    target         text NOT NULL,
    priority       smallint NOT NULL,
    msg_type       text NOT NULL,
    schema_version integer NOT NULL,
    trace_id       uuid NOT NULL,
    source         text,
    payload        jsonb NOT NULL,
    attempts       integer NOT NULL,
    error          text NOT NULL,
    history        jsonb NOT NULL,
    enqueued_at    timestamptz NOT NULL,
    -- When the message was dead-lettered (the seeds sort the DLQ by it).
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dlq_queue_created_idx ON pgflow.dlq (queue_name, created_at);

-- Exponential backoff with "equal jitter": the delay before retry number
-- `attempt` (1-based) is uniformly drawn from [d/2, d] where
-- d = min(base * 2^(attempt-1), max). `jitter` is a number in [0, 1).
CREATE FUNCTION pgflow.retry_delay_ms(base_ms integer, max_ms integer, attempt integer, jitter float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT least(base_ms::float8 * power(2::float8, least(greatest(attempt - 1, 0), 40)), max_ms::float8)
           * (0.5 + 0.5 * jitter)
$$;

-- Monitoring views, queried verbatim by the seeds' operator SQL.
--   status: pending (ready now), delayed (not yet visible), processing (leased), archived.
CREATE VIEW public.pgflow_messages AS
    SELECT m.id, m.queue_name, m.payload,
           CASE
               WHEN m.visible_at <= now() THEN 'pending'
               WHEN m.lease IS NOT NULL THEN 'processing'
               ELSE 'delayed'
           END AS status,
           m.priority,
           CASE WHEN m.lease IS NOT NULL AND m.visible_at > now()
                THEN greatest(m.attempts - 1, 0) ELSE m.attempts END AS retry_count,
           m.created_at, m.msg_type, m.trace_id, m.target, m.source, m.visible_at, m.attempts,
           m.last_error AS error
      FROM pgflow.messages m
    UNION ALL
    SELECT a.id, a.queue_name, a.payload, 'archived' AS status, a.priority,
           greatest(a.attempts - 1, 0) AS retry_count,
           a.created_at, a.msg_type, a.trace_id, a.target, a.source, a.archived_at AS visible_at,
           a.attempts, NULL::text AS error
      FROM pgflow.archive a;

CREATE VIEW public.pgflow_dlq AS
    SELECT id, queue_name, error, created_at, payload, msg_type, trace_id, target, source,
           attempts, history, enqueued_at
      FROM pgflow.dlq;

CREATE VIEW public.pgflow_queues AS
    SELECT queue_name, delivery, max_retries, retry_delay_ms, retry_max_delay_ms,
           visibility_timeout_ms, archive_retention, description, created_at
      FROM pgflow.queues;
