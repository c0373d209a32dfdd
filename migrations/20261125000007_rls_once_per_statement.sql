-- Row-level security evaluated once per statement, not once per row.
--
-- The policies of 20261125000002 called pgflow.can_consume(queue_name) /
-- can_produce(queue_name) for every row a statement touched: a sub-select
-- on pgflow.queue_access plus pg_has_role per row, on every claim, ack and
-- poll of every service. The same rule is now written as "the row's queue
-- is in the set of queues this role may consume/produce", and that set is
-- an uncorrelated sub-select, which PostgreSQL evaluates once per statement
-- (an InitPlan); per row only an array lookup remains.

CREATE FUNCTION pgflow.consumable_queues() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(a.queue_name), '{}')
      FROM pgflow.queue_access a
     WHERE a.consume AND pg_has_role(current_user, a.role_name, 'MEMBER')
$$;

CREATE FUNCTION pgflow.producible_queues() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(a.queue_name), '{}')
      FROM pgflow.queue_access a
     WHERE a.produce AND pg_has_role(current_user, a.role_name, 'MEMBER')
$$;

DROP POLICY produce ON pgflow.messages;
DROP POLICY read ON pgflow.messages;
DROP POLICY consume ON pgflow.messages;
DROP POLICY settle ON pgflow.messages;
CREATE POLICY produce ON pgflow.messages FOR INSERT
    WITH CHECK (queue_name = ANY ((SELECT pgflow.producible_queues())::text[]));
CREATE POLICY read ON pgflow.messages FOR SELECT
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[])
           OR queue_name = ANY ((SELECT pgflow.producible_queues())::text[]));
CREATE POLICY consume ON pgflow.messages FOR UPDATE
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]))
    WITH CHECK (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));
CREATE POLICY settle ON pgflow.messages FOR DELETE
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));

DROP POLICY archive_write ON pgflow.archive;
DROP POLICY archive_read ON pgflow.archive;
CREATE POLICY archive_write ON pgflow.archive FOR INSERT
    WITH CHECK (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));
CREATE POLICY archive_read ON pgflow.archive FOR SELECT
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[])
           OR queue_name = ANY ((SELECT pgflow.producible_queues())::text[]));

DROP POLICY dlq_write ON pgflow.dlq;
DROP POLICY dlq_read ON pgflow.dlq;
CREATE POLICY dlq_write ON pgflow.dlq FOR INSERT
    WITH CHECK (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));
CREATE POLICY dlq_read ON pgflow.dlq FOR SELECT
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[])
           OR queue_name = ANY ((SELECT pgflow.producible_queues())::text[]));

DROP POLICY subscribe ON pgflow.subscribers;
DROP POLICY heartbeat ON pgflow.subscribers;
DROP POLICY unsubscribe ON pgflow.subscribers;
CREATE POLICY subscribe ON pgflow.subscribers FOR INSERT
    WITH CHECK (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));
CREATE POLICY heartbeat ON pgflow.subscribers FOR UPDATE
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]))
    WITH CHECK (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));
CREATE POLICY unsubscribe ON pgflow.subscribers FOR DELETE
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));

DROP POLICY queues_tune ON pgflow.queues;
CREATE POLICY queues_tune ON pgflow.queues FOR UPDATE
    USING (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]))
    WITH CHECK (queue_name = ANY ((SELECT pgflow.consumable_queues())::text[]));
