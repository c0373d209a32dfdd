-- Acks inside a caller's transaction, planned never to scan the table.
--
-- The queue's statements find their rows by key (the claim index, the
-- primary key), and a session plans each of them once and keeps the plan
-- (generic plans: planning these array statements on every execution cost
-- more than running them). A plan made while the queue table was small is a
-- sequential scan, the cheapest way to read a few pages, and it stays
-- cached while the queue grows: an ack then read the whole table (15 ms per
-- ack at 90,000 waiting, against 0.1 ms) in whichever sessions happened to
-- plan it early, which made the runtime benchmark bimodal.
--
-- The client runs the queue's own statements on sessions that never plan a
-- sequential scan (`enable_seqscan = off` on a pool of their own). An ack
-- inside a caller's transaction (transactional handlers) runs on the
-- caller's session instead, whose settings are the caller's; it goes through
-- this function, whose statement is planned with `enable_seqscan = off`
-- whatever the session's settings, when it is first planned and when it is
-- planned again after an invalidation. It runs with the caller's rights, so
-- row-level security applies as before. The statement is the client's ack
-- (`ack_ctes!` in pgflow-core/src/client.rs); change both together.

CREATE FUNCTION pgflow.ack(p_ids uuid[], p_leases uuid[])
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Fenced: only rows still held under the lease given for their id and
    -- not expired; the others (lease lost) are left untouched.
    RETURN QUERY
    WITH d AS (
        DELETE FROM pgflow.messages m
         WHERE m.id = ANY(p_ids)
           AND m.lease = p_leases[array_position(p_ids, m.id)]
           AND m.visible_at > now()
        RETURNING m.*
    ), a AS (
        INSERT INTO pgflow.archive
            (id, seq, queue_name, target, priority, msg_type, schema_version, trace_id, source,
             payload, attempts, created_at, history)
        SELECT d.id, d.seq, d.queue_name, d.target, d.priority, d.msg_type, d.schema_version,
               d.trace_id, d.source, d.payload, d.attempts, d.created_at, d.history
          FROM d JOIN pgflow.queues aq ON aq.queue_name = d.queue_name
         WHERE aq.archive_retention > interval '0'
    )
    SELECT d.id FROM d;
END
$$;
COMMENT ON FUNCTION pgflow.ack(uuid[], uuid[]) IS
    'Acks the messages p_ids still held under p_leases (archived or deleted); returns the ids acked.';
