-- Targeted messages always have a target that exists.
--
-- Before, a message sent to a targeted queue without a target, or to an
-- instance that never registered, was accepted and sat forever: no claim
-- ever asks for it. Now:
--
-- * A consumer of a targeted queue registers its instance in
--   `pgflow.subscribers` and keeps it live (as on broadcast queues), and a
--   send refuses a message without a target, or for a target that never
--   registered on that queue (the client's `Error::NoTarget` /
--   `Error::UnknownTarget`). An instance that is only down (restarting)
--   is still registered: sends to it are accepted and wait for it.
-- * Messages for an instance whose last heartbeat on the queue is older
--   than the queue's `target_gone_after_ms` (default 24 h) move to the DLQ
--   with the reason (`pgflow.expire_gone_targets`, run by the queue's live
--   consumers with their heartbeat).

ALTER TABLE pgflow.queues
    ADD COLUMN target_gone_after_ms bigint NOT NULL DEFAULT 86400000
        CHECK (target_gone_after_ms > 0);
-- Instances that consumed targeted queues before this migration never
-- registered there: every target of a queued message counts as registered
-- now (seen now), so no message waiting for an instance that is only down
-- is refused or expired after the upgrade.
INSERT INTO pgflow.subscribers (queue_name, subscriber)
SELECT DISTINCT t.queue_name, t.target
  FROM (SELECT queue_name, target FROM pgflow.messages
        UNION ALL
        SELECT queue_name, target FROM pgflow.batches) t
  JOIN pgflow.queues q ON q.queue_name = t.queue_name AND q.delivery = 'targeted'
 WHERE t.target <> '' AND length(t.target) <= 100
ON CONFLICT (queue_name, subscriber) DO NOTHING;

COMMENT ON COLUMN pgflow.queues.target_gone_after_ms IS
    'Targeted queues: messages for an instance not seen for this long are dead-lettered.';

-- Dead-letters the unleased rows of targeted queue p_queue whose target has
-- not been seen on it for the queue's target_gone_after_ms (or never
-- registered), each with the reason; returns how many. A leased row stays
-- (its holder settles it). Batch-stored messages are not looked at: a send
-- stores a batch only for a registered target, and its claim turns it into
-- rows.
-- SECURITY DEFINER: the queue's consumers run it for every target, and a
-- restricted role may dead-letter only its own messages (migration 17).
-- What it removes is fixed here (the queue's own rule), not chosen by the
-- caller.
CREATE FUNCTION pgflow.expire_gone_targets(p_queue text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    WITH q AS (
        SELECT queue_name, target_gone_after_ms FROM pgflow.queues
         WHERE queue_name = p_queue AND delivery = 'targeted'
    ), gone AS (
        SELECT m.id, m.target, s.last_seen
          FROM pgflow.messages m
          JOIN q ON m.queue_name = q.queue_name
          LEFT JOIN pgflow.subscribers s
                 ON s.queue_name = m.queue_name AND s.subscriber = m.target
         WHERE m.lease IS NULL
           AND (s.last_seen IS NULL
                OR s.last_seen < now() - q.target_gone_after_ms * interval '1 millisecond')
         FOR UPDATE OF m SKIP LOCKED
    ), dead AS (
        DELETE FROM pgflow.messages m USING gone
         WHERE m.id = gone.id
        RETURNING m.*,
                  CASE WHEN gone.last_seen IS NULL
                       THEN format('target instance %s is not registered on %s', m.target, m.queue_name)
                       ELSE format('target instance %s gone: last seen on %s at %s, over the queue''s target_gone_after_ms',
                                   m.target, m.queue_name, gone.last_seen)
                  END AS dlq_error
    ), ins AS (
        INSERT INTO pgflow.dlq
            (id, queue_name, target, priority, msg_type, schema_version, trace_id, source,
             payload, attempts, error, history, enqueued_at)
        SELECT id, queue_name, target, priority, msg_type, schema_version, trace_id, source,
               payload, attempts, dlq_error,
               history || jsonb_build_array(jsonb_build_object(
                   'attempt', attempts, 'error', dlq_error, 'at', now(), 'outcome', 'dead_letter')),
               created_at
          FROM dead
        RETURNING 1
    )
    SELECT count(*) INTO n FROM ins;
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgflow.expire_gone_targets(text) IS
    'Dead-letters the unleased messages of a targeted queue whose target instance is gone (see target_gone_after_ms).';
REVOKE ALL ON FUNCTION pgflow.expire_gone_targets(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgflow.expire_gone_targets(text) TO singularity, centralcloud, genesis;
