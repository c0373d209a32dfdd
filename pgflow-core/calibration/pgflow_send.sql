-- pgflow's send statement (client/send.rs, no ON CONFLICT, no NOTIFY) with
-- its nine parameter arrays built on the server: 100 messages.
-- A copy for pgbench: change it with send.rs.
WITH q AS (
    SELECT queue_name, delivery = 'broadcast' AS fan_out, subscriber_ttl_ms
      FROM pgflow.queues WHERE queue_name = 'calibration'
), u AS (
    SELECT gen_random_uuid() AS id, ''::text AS target, 0::int2 AS priority,
           'proposal_for_consensus'::text AS msg_type, 1::int4 AS schema_version,
           gen_random_uuid() AS trace_id, NULL::text AS source,
           ('{"type":"proposal_for_consensus","proposal_id":"123e4567-e89b-12d3-a456-' || lpad(g::text,12,'0') || '","instance_id":"singularity_1","agent_type":"BugFixerAgent","code_change":{"file":"lib/foo.ex","change":"x"},"impact_score":8.0,"risk_score":1.0,"safety_profile":{"success_rate":0.95,"cost_factor":2.0}}')::jsonb AS payload, 0::float8 AS delay_ms, g::bigint AS ord
      FROM generate_series(1, 100) g
), subs AS (
    SELECT s.subscriber
      FROM pgflow.subscribers s JOIN q ON s.queue_name = q.queue_name
     WHERE q.fan_out AND s.last_seen > now() - q.subscriber_ttl_ms * interval '1 millisecond'
), r AS (
    SELECT u.*, u.id AS row_id, u.target AS row_target
      FROM u, q WHERE NOT (q.fan_out AND u.target = '')
    UNION ALL
    SELECT u.*, md5(u.id::text || '/' || subs.subscriber)::uuid, subs.subscriber
      FROM u, q, subs WHERE q.fan_out AND u.target = ''
), ins AS (
    INSERT INTO pgflow.messages
        (id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload, visible_at)
    SELECT r.row_id, q.queue_name, r.row_target, r.priority, r.msg_type, r.schema_version,
           r.trace_id, r.source, r.payload,
           CASE WHEN r.delay_ms > 0 THEN now() + r.delay_ms * interval '1 millisecond' ELSE now() END
      FROM r, q
     ORDER BY r.ord, r.row_target
    RETURNING 1
)
SELECT (SELECT count(*) FROM q) AS queue_exists, (SELECT count(*) FROM ins) AS inserted;
