-- Row-level security without a function call per statement.
--
-- Migration 7 wrote each policy as "the row's queue is in the set this role
-- may consume/produce", the set coming from a LANGUAGE sql function. Such a
-- function cannot be inlined (it aggregates), so PostgreSQL parsed and
-- planned its body again on every call: in the full-loop load test that was
-- about a quarter of the server's CPU (perf: fmgr_sql -> raw_parser). The
-- policies now hold the same set as an ARRAY(sub-select): it is planned
-- once with the statement (and cached with it) and still evaluated once per
-- statement as an InitPlan. Same rule, same results.
--
-- The two functions stay (for operators' ad-hoc queries), as PL/pgSQL so
-- that a call runs a cached plan.

-- The sets come from two views (a view is expanded into the statement, so
-- the planner sees the sub-select itself).
CREATE VIEW pgflow.my_consumable_queues AS
    SELECT a.queue_name FROM pgflow.queue_access a
     WHERE a.consume AND pg_has_role(current_user, a.role_name, 'MEMBER');
CREATE VIEW pgflow.my_producible_queues AS
    SELECT a.queue_name FROM pgflow.queue_access a
     WHERE a.produce AND pg_has_role(current_user, a.role_name, 'MEMBER');
GRANT SELECT ON pgflow.my_consumable_queues, pgflow.my_producible_queues TO PUBLIC;

CREATE OR REPLACE FUNCTION pgflow.consumable_queues() RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues);
END
$$;

CREATE OR REPLACE FUNCTION pgflow.producible_queues() RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN ARRAY(SELECT queue_name FROM pgflow.my_producible_queues);
END
$$;

DROP POLICY produce ON pgflow.messages;
DROP POLICY read ON pgflow.messages;
DROP POLICY consume ON pgflow.messages;
DROP POLICY settle ON pgflow.messages;
CREATE POLICY produce ON pgflow.messages FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));
CREATE POLICY read ON pgflow.messages FOR SELECT
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues))
           OR queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));
CREATE POLICY consume ON pgflow.messages FOR UPDATE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)))
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY settle ON pgflow.messages FOR DELETE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));

DROP POLICY archive_write ON pgflow.archive;
DROP POLICY archive_read ON pgflow.archive;
CREATE POLICY archive_write ON pgflow.archive FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY archive_read ON pgflow.archive FOR SELECT
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues))
           OR queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));

DROP POLICY dlq_write ON pgflow.dlq;
DROP POLICY dlq_read ON pgflow.dlq;
CREATE POLICY dlq_write ON pgflow.dlq FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY dlq_read ON pgflow.dlq FOR SELECT
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues))
           OR queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));

DROP POLICY subscribe ON pgflow.subscribers;
DROP POLICY heartbeat ON pgflow.subscribers;
DROP POLICY unsubscribe ON pgflow.subscribers;
CREATE POLICY subscribe ON pgflow.subscribers FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY heartbeat ON pgflow.subscribers FOR UPDATE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)))
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY unsubscribe ON pgflow.subscribers FOR DELETE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));

DROP POLICY queues_tune ON pgflow.queues;
CREATE POLICY queues_tune ON pgflow.queues FOR UPDATE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)))
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
