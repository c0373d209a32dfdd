-- pgflow's ack_and_claim statement (client/claim.rs): ack this client's
-- previous claim (:ids, :leases), claim up to 100 more under a new lease,
-- and raise the floor about every tenth call (the client does it every
-- 100 ms). The claimed payloads go to the client as text.
-- A copy for pgbench of ACK_CLAIM_ROWS_SQL (client/row_sql.rs): change it
-- with it. (A queue holding batches goes through pgflow.claim instead.)
\if random(1, 10) = 1
SELECT pgflow.advance_floor('calibration', '');
\endif
WITH d AS (
    DELETE FROM pgflow.messages m
     WHERE m.id = ANY(:ids::uuid[])
       AND m.lease = (:leases::uuid[])[array_position(:ids::uuid[], m.id)]
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
), w AS MATERIALIZED (
    SELECT EXISTS (SELECT 1 FROM pgflow.batches b
                    WHERE b.queue_name = 'calibration' AND b.target = '') AS batches_waiting
), q AS MATERIALIZED (
    SELECT queue_name, max_retries, visibility_timeout_ms FROM pgflow.queues WHERE queue_name = 'calibration'
), c AS (
    SELECT m.ctid
      FROM pgflow.messages m
     WHERE m.queue_name = 'calibration' AND m.target = '' AND m.visible_at <= now()
       AND m.ord >= COALESCE((SELECT h.floor FROM pgflow.heads h
                               WHERE h.queue_name = 'calibration' AND h.target = ''),
                             -9223372036854775808)
       AND NOT (SELECT batches_waiting FROM w)
     ORDER BY m.ord
     LIMIT 100
       FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE pgflow.messages m
       SET attempts = m.attempts + 1,
           lease = gen_random_uuid(),
           claimed_at = now(),
           visible_at = now() + q.visibility_timeout_ms * interval '1 millisecond'
      FROM c, q
     WHERE m.ctid = c.ctid
    RETURNING m.id, m.seq, m.queue_name, m.target, m.priority, m.msg_type, m.schema_version,
              m.trace_id, m.source, m.payload, m.attempts, q.max_retries, m.created_at,
              m.visible_at AS lease_expires_at, m.lease, m.last_error
)
SELECT (SELECT count(*) FROM d) AS acked,
       coalesce(array_agg(u.id), '{}') AS ids, coalesce(array_agg(u.lease), '{}') AS leases,
       length(string_agg(u.payload::text || u.msg_type || u.trace_id::text, ',')) AS got
  FROM u \gset
