-- pgflow's ack_and_claim statement (client/claim.rs): ack this client's
-- previous claim (:ids, :leases), claim up to 100 more under a new lease,
-- and raise the floor about every tenth call (the client does it every
-- 100 ms). The claimed payloads go to the client as text.
-- The same call as ACK_CLAIM_SQL (client/claim.rs): change it with it.
-- (Before migration 15 this file held a copy of the whole statement; the
-- figures in BENCHMARKS.md's calibration table were made with that copy.)
\if random(1, 10) = 1
SELECT pgflow.advance_floor('calibration', '');
\endif
SELECT coalesce(array_agg(c.id) FILTER (WHERE c.id IS NOT NULL), '{}') AS ids,
       coalesce(array_agg(c.lease) FILTER (WHERE c.id IS NOT NULL), '{}') AS leases,
       length(string_agg(c.payload::text || c.msg_type || c.trace_id::text, ',')) AS got
  FROM pgflow.claim('calibration', '', 100, gen_random_uuid(), NULL,
                    :ids::uuid[], :leases::uuid[]) AS c \gset
