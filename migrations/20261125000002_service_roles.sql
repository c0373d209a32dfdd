-- Service roles and queue permissions: the design's rule "services share
-- no table; they talk only through queues" made physical.
--
-- Each service connects as its own LOGIN role (`singularity`,
-- `centralcloud`, `genesis`). The roles are created without a password:
-- with password authentication they cannot log in until a deployment sets
-- one (docker-compose does, from its environment / secrets); local trust
-- authentication (tests, `pgflow up`) needs none.
--
-- `pgflow.queue_access` says which role produces and which consumes each
-- queue (the design's topology table). Row-level security on the queue
-- tables enforces it for those roles: a role can insert messages only into
-- queues it produces, and claim, ack, nack or subscribe only on queues it
-- consumes; messages of other queues are invisible to it. The migration
-- owner (the admin running `pgflow init`) is not restricted.
--
-- Roles are cluster-wide while this migration runs once per database, so
-- creating them tolerates their existing (and a concurrent creation).

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['singularity', 'centralcloud', 'genesis'] LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('CREATE ROLE %I LOGIN', r);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created meanwhile by a migration of another database
        END;
    END LOOP;
END
$$;

CREATE TABLE pgflow.queue_access (
    queue_name text NOT NULL REFERENCES pgflow.queues (queue_name) ON DELETE CASCADE,
    role_name  name NOT NULL,
    produce    boolean NOT NULL DEFAULT false,
    consume    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue_name, role_name)
);

INSERT INTO pgflow.queue_access (queue_name, role_name, produce, consume) VALUES
    ('proposals_for_consensus_queue',      'singularity',  true,  false),
    ('proposals_for_consensus_queue',      'centralcloud', false, true),
    ('consensus_vote_requests_queue',      'centralcloud', true,  false),
    ('consensus_vote_requests_queue',      'singularity',  false, true),
    ('consensus_votes_queue',              'singularity',  true,  false),
    ('consensus_votes_queue',              'centralcloud', false, true),
    ('consensus_results_queue',            'centralcloud', true,  false),
    ('consensus_results_queue',            'singularity',  false, true),
    ('proposals_for_execution_queue',      'singularity',  true,  true),
    ('metrics_to_guardian_queue',          'singularity',  true,  false),
    ('metrics_to_guardian_queue',          'centralcloud', false, true),
    ('patterns_for_aggregator_queue',      'singularity',  true,  false),
    ('patterns_for_aggregator_queue',      'centralcloud', false, true),
    ('rollback_triggers_queue',            'centralcloud', true,  false),
    ('rollback_triggers_queue',            'singularity',  false, true),
    ('guardian_safety_profiles_queue',     'centralcloud', true,  false),
    ('guardian_safety_profiles_queue',     'singularity',  false, true),
    ('learning_loop_completed_queue',      'centralcloud', true,  false),
    ('learning_loop_completed_queue',      'genesis',      false, true),
    ('genesis_rule_updates',               'singularity',  true,  false),
    ('genesis_rule_updates',               'genesis',      false, true),
    ('genesis_rule_updates_results',       'genesis',      true,  false),
    ('genesis_rule_updates_results',       'singularity',  false, true),
    ('genesis_llm_config_updates',         'singularity',  true,  false),
    ('genesis_llm_config_updates',         'genesis',      false, true),
    ('genesis_llm_config_updates_results', 'genesis',      true,  false),
    ('genesis_llm_config_updates_results', 'singularity',  false, true),
    ('code_execution_requests',            'singularity',  true,  false),
    ('code_execution_requests',            'genesis',      false, true),
    ('code_execution_results',             'genesis',      true,  false),
    ('code_execution_results',             'singularity',  false, true);

-- May the current role produce to / consume from `q`?
CREATE FUNCTION pgflow.can_produce(q text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM pgflow.queue_access a
                    WHERE a.queue_name = q AND a.produce
                      AND pg_has_role(current_user, a.role_name, 'MEMBER'))
$$;

CREATE FUNCTION pgflow.can_consume(q text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM pgflow.queue_access a
                    WHERE a.queue_name = q AND a.consume
                      AND pg_has_role(current_user, a.role_name, 'MEMBER'))
$$;

-- Table privileges (what a role may do at all) ...
GRANT USAGE ON SCHEMA pgflow TO singularity, centralcloud, genesis;
GRANT SELECT ON pgflow.queues, pgflow.queue_access, pgflow.subscribers
    TO singularity, centralcloud, genesis;
GRANT UPDATE (max_retries, retry_delay_ms, retry_max_delay_ms) ON pgflow.queues
    TO singularity, centralcloud, genesis;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgflow.messages TO singularity, centralcloud, genesis;
GRANT SELECT, INSERT ON pgflow.archive, pgflow.dlq TO singularity, centralcloud, genesis;
GRANT INSERT, UPDATE, DELETE ON pgflow.subscribers TO singularity, centralcloud, genesis;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgflow TO singularity, centralcloud, genesis;
GRANT SELECT ON public._sqlx_migrations, public.pgflow_subscribers TO singularity, centralcloud, genesis;

-- ... and row-level security (which queues' rows).
ALTER TABLE pgflow.messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY produce ON pgflow.messages FOR INSERT WITH CHECK (pgflow.can_produce(queue_name));
CREATE POLICY read ON pgflow.messages FOR SELECT
    USING (pgflow.can_consume(queue_name) OR pgflow.can_produce(queue_name));
CREATE POLICY consume ON pgflow.messages FOR UPDATE
    USING (pgflow.can_consume(queue_name)) WITH CHECK (pgflow.can_consume(queue_name));
CREATE POLICY settle ON pgflow.messages FOR DELETE USING (pgflow.can_consume(queue_name));

ALTER TABLE pgflow.archive ENABLE ROW LEVEL SECURITY;
CREATE POLICY archive_write ON pgflow.archive FOR INSERT WITH CHECK (pgflow.can_consume(queue_name));
CREATE POLICY archive_read ON pgflow.archive FOR SELECT
    USING (pgflow.can_consume(queue_name) OR pgflow.can_produce(queue_name));

ALTER TABLE pgflow.dlq ENABLE ROW LEVEL SECURITY;
CREATE POLICY dlq_write ON pgflow.dlq FOR INSERT WITH CHECK (pgflow.can_consume(queue_name));
CREATE POLICY dlq_read ON pgflow.dlq FOR SELECT
    USING (pgflow.can_consume(queue_name) OR pgflow.can_produce(queue_name));

ALTER TABLE pgflow.subscribers ENABLE ROW LEVEL SECURITY;
CREATE POLICY subscribers_read ON pgflow.subscribers FOR SELECT USING (true);
CREATE POLICY subscribe ON pgflow.subscribers FOR INSERT WITH CHECK (pgflow.can_consume(queue_name));
CREATE POLICY heartbeat ON pgflow.subscribers FOR UPDATE
    USING (pgflow.can_consume(queue_name)) WITH CHECK (pgflow.can_consume(queue_name));
CREATE POLICY unsubscribe ON pgflow.subscribers FOR DELETE USING (pgflow.can_consume(queue_name));

ALTER TABLE pgflow.queues ENABLE ROW LEVEL SECURITY;
CREATE POLICY queues_read ON pgflow.queues FOR SELECT USING (true);
CREATE POLICY queues_tune ON pgflow.queues FOR UPDATE
    USING (pgflow.can_consume(queue_name)) WITH CHECK (pgflow.can_consume(queue_name));

-- The service schemas, owned by the migration owner; each service role
-- gets its own schema only (tables are added by later migrations, which
-- grant on them).
CREATE SCHEMA singularity;
CREATE SCHEMA centralcloud;
CREATE SCHEMA genesis;
GRANT USAGE ON SCHEMA singularity TO singularity;
GRANT USAGE ON SCHEMA centralcloud TO centralcloud;
GRANT USAGE ON SCHEMA genesis TO genesis;
