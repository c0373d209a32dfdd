-- A consumer of the one-row-per-message model: claim up to 100 from the floor
-- with a lease (their payloads go to the client), ack them, and now and
-- then raise the floor.
WITH c AS (SELECT id FROM r WHERE id >= (SELECT floor FROM head) AND vt <= now()
            ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED),
u AS (UPDATE r SET vt = now() + interval '30 s', lease = gen_random_uuid()
        FROM c WHERE r.id = c.id RETURNING r.id, r.payload, r.lease)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(lease), '{}') AS leases,
       length(string_agg(payload::text, ',')) AS got FROM u \gset
DELETE FROM r WHERE id = ANY(:ids::bigint[]) AND lease = ANY(:leases::uuid[]);
UPDATE head SET floor = coalesce((SELECT min(id) FROM r WHERE id >= head.floor), floor)
 WHERE random() < 0.1;
