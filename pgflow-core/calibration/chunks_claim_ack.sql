-- A consumer of the chunk model: lease the oldest chunk (its 100 payloads go
-- to the client), then ack it.
WITH c AS (SELECT id FROM ch WHERE vt <= now() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED),
u AS (UPDATE ch SET vt = now() + interval '30 s', lease = gen_random_uuid(), attempts = attempts + 1 FROM c WHERE ch.id = c.id RETURNING ch.id, ch.payloads)
SELECT coalesce(max(id), -1) AS cid, length(max(payloads::text)) AS got FROM u \gset
DELETE FROM ch WHERE id = :cid;
