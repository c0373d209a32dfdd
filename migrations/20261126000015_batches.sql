-- Batch storage: a `send_batch` of many messages is one row until it is
-- claimed, acked whole, or has to be split.
--
-- With one row per message, every message costs three row operations (an
-- insert at send, an update at claim, a delete at ack), each with its index
-- entries, WAL and later VACUUM work. On two cores that caps the batched
-- round trip (send 100, claim 100, ack 100) near 40,000 messages a second
-- whatever the client does (pgflow-core/calibration: pgflow's own
-- statements, run by pgbench with no Rust client). One row per send of 100
-- does the same work at 150,000.
--
-- `pgflow.batches` holds such sends: the messages' columns as parallel
-- arrays, one lease for all of them. The rules:
--
--   * On a queue with `batch_storage` (a competing or targeted one), a
--     `send_batch` of two or more messages, all with the same target and
--     priority and none delayed, writes one batch; anything else writes
--     rows as before. A batch draws one seq per
--     message from the messages' own sequence, so its messages keep their
--     place in the queue's FIFO order, and its `ord` is its first message's.
--   * A claim (`pgflow.claim`) merges rows and batches in claim order. A
--     batch that fits in what the claim may still take is leased whole
--     under a batch lease (below); one that does not fit becomes rows, its
--     head leased to this claim (`pgflow.split_batch`).
--   * An ack of every message of a leased batch deletes it, or archives it
--     as one row of `pgflow.archive_batches` when the queue keeps an archive.
--     Any other settle turns the batch into rows first, each keeping the
--     batch's lease, attempts and lease expiry: a partial ack (the acked
--     messages are done, the others become rows), a nack, a lease
--     extension, a release. From then on they are ordinary messages.
--   * A batch whose lease expired is claimed again whole (or split), its
--     attempts counted once for all its messages, as a row's would be.
--
-- A batch lease is a UUID whose version nibble is 8 and whose first 48 bits
-- are the batch id (the other 76 bits come from the claim's random lease).
-- An ack finds its batch by primary key from the lease alone, without an
-- index on the lease that would make every claim a non-HOT update; the
-- lease is compared whole, so fencing is as strict as for rows. Row leases
-- are version 4: a client tells the two apart without a round trip.
--
-- Readers see both forms through `pgflow.live_messages` (one row per live
-- message, the columns of pgflow.messages) and `pgflow.archived_messages`
-- (the same for the archive), which `public.pgflow_messages`, the client's
-- listings and the dashboard now read.

-- Per queue: whether a send_batch is stored as a batch. Off by default:
-- it pays off when consumers claim at least a sender's batch at a time. A
-- consumer claiming its free worker slots (16 of a batch of 100) turns
-- each batch into rows: in alternating runs of the runtime benchmark,
-- 12,200-13,600 msg/s with batch storage against 17,200-18,100 without.
ALTER TABLE pgflow.queues ADD COLUMN batch_storage boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN pgflow.queues.batch_storage IS
    'Store each send_batch as one row of pgflow.batches until claimed and acked whole.';

CREATE TABLE pgflow.batches (
    batch_id        bigint GENERATED ALWAYS AS IDENTITY (MAXVALUE 281474976710655) PRIMARY KEY,
    -- Identifies the send: a re-send of the same ids (a replay) is skipped.
    batch_key       uuid NOT NULL UNIQUE,
    queue_name      text NOT NULL,
    target          text NOT NULL DEFAULT '',
    priority        smallint NOT NULL DEFAULT 0,
    -- The claim order of its first message (see migration 12).
    ord             bigint NOT NULL,
    -- How many messages (read by claims without opening the arrays).
    n               integer NOT NULL,
    ids             uuid[] NOT NULL,
    seqs            bigint[] NOT NULL,
    msg_types       text[] NOT NULL,
    schema_versions integer[] NOT NULL,
    trace_ids       uuid[] NOT NULL,
    sources         text[] NOT NULL,
    -- JSON text as the producer sent it (validated, not converted to
    -- jsonb: a claim returns it as it is, and converting 100 payloads to
    -- jsonb and back cost more than the rest of the send). Rows made from
    -- a batch, the archive and the views hold it as jsonb.
    payloads        json[] NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    visible_at      timestamptz NOT NULL DEFAULT now(),
    lease           uuid,
    claimed_at      timestamptz,
    CHECK (n > 0 AND cardinality(ids) = n
           AND cardinality(seqs) = cardinality(ids)
           AND cardinality(msg_types) = cardinality(ids)
           AND cardinality(schema_versions) = cardinality(ids)
           AND cardinality(trace_ids) = cardinality(ids)
           AND cardinality(sources) = cardinality(ids)
           AND cardinality(payloads) = cardinality(ids))
) WITH (
    -- A claim rewrites the small main tuple (the arrays live in TOAST and
    -- are not copied); room for it on the page keeps the update HOT.
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 100,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE pgflow.batches IS
    'Messages of one send_batch call, stored as one row until claimed whole, acked whole or split (migration 15).';

-- The arrays go out of line uncompressed: compressing a send's payloads
-- cost more CPU than the WAL it saved.
ALTER TABLE pgflow.batches
    ALTER COLUMN ids SET STORAGE EXTERNAL,
    ALTER COLUMN seqs SET STORAGE EXTERNAL,
    ALTER COLUMN msg_types SET STORAGE EXTERNAL,
    ALTER COLUMN trace_ids SET STORAGE EXTERNAL,
    ALTER COLUMN sources SET STORAGE EXTERNAL,
    ALTER COLUMN payloads SET STORAGE EXTERNAL;

CREATE INDEX batches_claim_ord_idx ON pgflow.batches (queue_name, target, ord);

-- A batch acked whole on a queue that keeps an archive is archived as it
-- is, one row (the archive's other readers see its messages through
-- `pgflow.archived_messages`); pruned by age like the rows.
CREATE TABLE pgflow.archive_batches (
    batch_id        bigint NOT NULL,
    queue_name      text NOT NULL,
    target          text NOT NULL,
    priority        smallint NOT NULL,
    n               integer NOT NULL,
    ids             uuid[] NOT NULL,
    seqs            bigint[] NOT NULL,
    msg_types       text[] NOT NULL,
    schema_versions integer[] NOT NULL,
    trace_ids       uuid[] NOT NULL,
    sources         text[] NOT NULL,
    payloads        json[] NOT NULL,
    attempts        integer NOT NULL,
    created_at      timestamptz NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE pgflow.archive_batches
    ALTER COLUMN ids SET STORAGE EXTERNAL,
    ALTER COLUMN seqs SET STORAGE EXTERNAL,
    ALTER COLUMN msg_types SET STORAGE EXTERNAL,
    ALTER COLUMN trace_ids SET STORAGE EXTERNAL,
    ALTER COLUMN sources SET STORAGE EXTERNAL,
    ALTER COLUMN payloads SET STORAGE EXTERNAL;
COMMENT ON TABLE pgflow.archive_batches IS
    'Batches acked whole, archived as one row each (migration 15); pruned by age.';
CREATE INDEX archive_batches_archived_at_brin ON pgflow.archive_batches USING brin (archived_at);
-- Journeys look messages up by trace id (migration 10 did the same for rows).
CREATE INDEX archive_batches_trace_ids_idx ON pgflow.archive_batches USING gin (trace_ids);


-- The claim floor counts batches too: inserts lower it (the same trigger as
-- for rows), advances stop at the oldest batch still present.
CREATE TRIGGER batches_lower_floor
    AFTER INSERT ON pgflow.batches
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgflow.lower_floor();

CREATE OR REPLACE FUNCTION pgflow.advance_floor(q text, t text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '20ms'
AS $$
DECLARE
    cur bigint;
    low bigint;
    low_batch bigint;
BEGIN
    BEGIN
        PERFORM pg_advisory_xact_lock(pgflow.floor_lock_key(q, t));
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    SELECT h.floor INTO cur FROM pgflow.heads h WHERE h.queue_name = q AND h.target = t;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT m.ord INTO low FROM pgflow.messages m
     WHERE m.queue_name = q AND m.target = t AND m.ord >= cur
     ORDER BY m.ord LIMIT 1;
    SELECT b.ord INTO low_batch FROM pgflow.batches b
     WHERE b.queue_name = q AND b.target = t AND b.ord >= cur
     ORDER BY b.ord LIMIT 1;
    low := least(low, low_batch);
    IF low IS NULL THEN
        SELECT (32767::bigint << 47) | s.last_value INTO low FROM pgflow.messages_seq_seq s;
    END IF;
    IF low > cur THEN
        UPDATE pgflow.heads h SET floor = low WHERE h.queue_name = q AND h.target = t;
        RETURN low;
    END IF;
    RETURN cur;
END
$$;

-- The lease of a claimed batch: batch id in the first 48 bits, version 8,
-- the rest from the claim's lease.
CREATE FUNCTION pgflow.batch_lease(b bigint, l uuid) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (lpad(to_hex(b), 12, '0') || '8' || substr(replace(l::text, '-', ''), 14))::uuid $$;

-- The batch a lease names, or NULL for a row's lease.
CREATE FUNCTION pgflow.lease_batch(l uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN substr(l::text, 15, 1) = '8'
                THEN ('x' || lpad(replace(substr(l::text, 1, 13), '-', ''), 16, '0'))::bit(64)::bigint
           END
$$;

-- One row per live message, whichever form it is stored in.
CREATE VIEW pgflow.live_messages WITH (security_invoker = true) AS
    SELECT m.id, m.seq, m.queue_name, m.target, m.priority, m.msg_type, m.schema_version,
           m.trace_id, m.source, m.payload, m.attempts, m.created_at, m.visible_at, m.lease,
           m.claimed_at, m.last_error, m.history, m.ord
      FROM pgflow.messages m
    UNION ALL
    SELECT x.id, x.seq, b.queue_name, b.target, b.priority, x.msg_type, x.schema_version,
           x.trace_id, x.source, x.payload::jsonb, b.attempts, b.created_at, b.visible_at,
           b.lease, b.claimed_at, NULL::text, '[]'::jsonb,
           ((32767 - b.priority)::bigint << 47) | x.seq
      FROM pgflow.batches b,
           unnest(b.ids, b.seqs, b.msg_types, b.schema_versions, b.trace_ids, b.sources,
                  b.payloads) AS x(id, seq, msg_type, schema_version, trace_id, source, payload);
GRANT SELECT ON pgflow.live_messages TO PUBLIC;

-- One row per archived message, whichever form it was archived in.
CREATE VIEW pgflow.archived_messages WITH (security_invoker = true) AS
    SELECT a.id, a.seq, a.queue_name, a.target, a.priority, a.msg_type, a.schema_version,
           a.trace_id, a.source, a.payload, a.attempts, a.created_at, a.history, a.archived_at
      FROM pgflow.archive a
    UNION ALL
    SELECT x.id, x.seq, b.queue_name, b.target, b.priority, x.msg_type, x.schema_version,
           x.trace_id, x.source, x.payload::jsonb, b.attempts, b.created_at, '[]'::jsonb,
           b.archived_at
      FROM pgflow.archive_batches b,
           unnest(b.ids, b.seqs, b.msg_types, b.schema_versions, b.trace_ids, b.sources,
                  b.payloads) AS x(id, seq, msg_type, schema_version, trace_id, source, payload);
GRANT SELECT ON pgflow.archived_messages TO PUBLIC;

CREATE OR REPLACE VIEW public.pgflow_messages AS
    SELECT m.id, m.queue_name, m.payload,
           CASE
               WHEN m.visible_at <= now() THEN 'pending'
               WHEN m.lease IS NOT NULL THEN 'processing'
               ELSE 'delayed'
           END AS status,
           m.priority,
           CASE WHEN m.lease IS NOT NULL AND m.visible_at > now()
                THEN greatest(m.attempts - 1, 0) ELSE m.attempts END AS retry_count,
           m.created_at, m.msg_type, m.trace_id, m.target, m.source, m.visible_at, m.attempts,
           m.last_error AS error
      FROM pgflow.live_messages m
    UNION ALL
    SELECT a.id, a.queue_name, a.payload, 'archived' AS status, a.priority,
           greatest(a.attempts - 1, 0) AS retry_count,
           a.created_at, a.msg_type, a.trace_id, a.target, a.source, a.archived_at AS visible_at,
           a.attempts, NULL::text AS error
      FROM pgflow.archived_messages a;

-- Turns the live batches named by p_leases (lease held, not expired) into
-- rows that keep the batch's lease, attempts and expiry; returns how many
-- messages. A nack, an extension, a release or a partial ack of a batch
-- message does this first and then settles rows.
-- SECURITY DEFINER: the consumer that holds a batch's lease may turn it
-- into rows even where row-level security lets it insert no message (it
-- consumes the queue, it does not produce to it). The lease is the
-- capability: only a claim, made under the consume policy, returns it.
CREATE FUNCTION pgflow.unbatch(p_leases uuid[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    WITH b AS (
        DELETE FROM pgflow.batches b
         WHERE b.batch_id = ANY (ARRAY(SELECT pgflow.lease_batch(l) FROM unnest(p_leases) l))
           AND b.lease = ANY (p_leases)
           AND b.visible_at > now()
        RETURNING b.*
    ), ins AS (
        INSERT INTO pgflow.messages
            (id, seq, queue_name, target, priority, msg_type, schema_version, trace_id, source,
             payload, attempts, created_at, visible_at, lease, claimed_at)
        OVERRIDING SYSTEM VALUE
        SELECT x.id, x.seq, b.queue_name, b.target, b.priority, x.msg_type, x.schema_version,
               x.trace_id, x.source, x.payload::jsonb, b.attempts, b.created_at, b.visible_at,
               b.lease, b.claimed_at
          FROM b, unnest(b.ids, b.seqs, b.msg_types, b.schema_versions, b.trace_ids, b.sources,
                         b.payloads) AS x(id, seq, msg_type, schema_version, trace_id, source, payload)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM ins;
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgflow.unbatch(uuid[]) IS
    'Turns the live batches leased under p_leases into rows that keep the lease; returns how many messages.';

-- Turns the live batch leased under p_lease into rows: the first p_take
-- keep the lease, the others are ready again as they were before it (the
-- attempts and visibility p_visible they had). Called by a claim with less
-- room than the batch holds. (Keeping the rest as a smaller batch instead
-- copied the rest at every claim: consumers that claim their free worker
-- slots, 16 at a time, split each batch six times; the runtime benchmark
-- was slower still than with the rest as rows.) SECURITY DEFINER for the
-- same reason as pgflow.unbatch (the lease is the capability).
CREATE FUNCTION pgflow.split_batch(p_lease uuid, p_take integer, p_visible timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgflow.batches%ROWTYPE;
BEGIN
    DELETE FROM pgflow.batches b
     WHERE b.batch_id = pgflow.lease_batch(p_lease) AND b.lease = p_lease
       AND b.visible_at > now()
    RETURNING b.* INTO r;
    IF NOT FOUND OR p_take < 1 OR p_take >= r.n THEN
        RAISE EXCEPTION 'pgflow.split_batch: no live batch of % messages leased under % to split at %',
            r.n, p_lease, p_take;
    END IF;
    INSERT INTO pgflow.messages
        (id, seq, queue_name, target, priority, msg_type, schema_version, trace_id, source,
         payload, attempts, created_at, visible_at, lease, claimed_at)
    OVERRIDING SYSTEM VALUE
    SELECT x.id, x.seq, r.queue_name, r.target, r.priority, x.msg_type, x.schema_version,
           x.trace_id, x.source, x.payload::jsonb,
           CASE WHEN x.k <= p_take THEN r.attempts ELSE r.attempts - 1 END, r.created_at,
           CASE WHEN x.k <= p_take THEN r.visible_at ELSE p_visible END,
           CASE WHEN x.k <= p_take THEN r.lease END,
           CASE WHEN x.k <= p_take THEN r.claimed_at END
      FROM unnest(r.ids, r.seqs, r.msg_types, r.schema_versions, r.trace_ids, r.sources,
                  r.payloads)
           WITH ORDINALITY AS x(id, seq, msg_type, schema_version, trace_id, source, payload, k);
END
$$;
COMMENT ON FUNCTION pgflow.split_batch(uuid, integer, timestamptz) IS
    'Turns the batch leased under p_lease into rows: the first p_take keep the lease, the others are ready again.';

-- Claims up to p_max messages of (p_queue, p_target): rows and batches
-- merged in claim order (highest priority first, FIFO within one), skipping
-- what other claimers hold. Rows and whole batches are leased for p_vt_ms
-- (NULL: the queue's visibility timeout); a batch larger than the room
-- left becomes rows, its head leased to this claim. With p_ack_ids it first acks those
-- (`pgflow.ack`): what a busy consumer does between batches, in one round
-- trip and one commit; the first row then carries the acked ids and no
-- message (the others have acked NULL). Planned never to scan a table (see
-- migration 13).
CREATE FUNCTION pgflow.claim(p_queue text, p_target text, p_max integer, p_lease uuid,
                             p_vt_ms bigint, p_ack_ids uuid[] DEFAULT NULL,
                             p_ack_leases uuid[] DEFAULT NULL,
                             p_ack_batches bigint[] DEFAULT NULL)
RETURNS TABLE (acked uuid[], id uuid, seq bigint, queue_name text, target text, priority smallint,
               msg_type text, schema_version integer, trace_id uuid, source text,
               payload json, attempts integer, max_retries integer, created_at timestamptz,
               lease_expires_at timestamptz, lease uuid, last_error text)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_retries integer;
    v_until timestamptz;
    v_floor bigint;
    row_ctids tid[];
    row_ords bigint[];
    n_rows integer;
    i integer := 1;
    room integer;
    take tid[] := '{}';
    whole bigint[] := '{}';
    split_id bigint;
    split_take integer;
    split_visible timestamptz;
    split_lease uuid;
    split_taken uuid[];
    cur refcursor;
    b_id bigint;
    b_ord bigint;
    b_n integer;
    b_visible timestamptz;
BEGIN
    IF p_ack_ids IS NOT NULL THEN
        -- The first row reports the ack (the claimed rows do not repeat it).
        acked := ARRAY(SELECT pgflow.ack(p_ack_ids, p_ack_leases, p_ack_batches));
        RETURN NEXT;
        acked := NULL;
    END IF;
    SELECT q.max_retries, now() + COALESCE(p_vt_ms, q.visibility_timeout_ms) * interval '1 millisecond'
      INTO v_retries, v_until
      FROM pgflow.queues q WHERE q.queue_name = p_queue;
    IF NOT FOUND OR p_max < 1 THEN
        p_max := 0;
    END IF;
    room := p_max;
    SELECT COALESCE((SELECT h.floor FROM pgflow.heads h
                      WHERE h.queue_name = p_queue AND h.target = p_target),
                    -9223372036854775808)
      INTO v_floor;

    -- The rows, locked, in claim order.
    SELECT array_agg(c.ctid ORDER BY c.ord), array_agg(c.ord ORDER BY c.ord)
      INTO row_ctids, row_ords
      FROM (SELECT m.ctid, m.ord FROM pgflow.messages m
             WHERE m.queue_name = p_queue AND m.target = p_target AND m.visible_at <= now()
               AND m.ord >= v_floor
             ORDER BY m.ord
             LIMIT p_max
               FOR UPDATE SKIP LOCKED) c;
    n_rows := COALESCE(cardinality(row_ctids), 0);

    -- The batches, locked one at a time (a FETCH locks one row), merged
    -- with the rows until the claim is full.
    OPEN cur FOR
        SELECT b.batch_id, b.ord, b.n, b.visible_at FROM pgflow.batches b
         WHERE b.queue_name = p_queue AND b.target = p_target AND b.visible_at <= now()
           AND b.ord >= v_floor
         ORDER BY b.ord
           FOR UPDATE SKIP LOCKED;
    WHILE room > 0 LOOP
        FETCH cur INTO b_id, b_ord, b_n, b_visible;
        EXIT WHEN NOT FOUND;
        WHILE i <= n_rows AND room > 0 AND row_ords[i] < b_ord LOOP
            take := take || row_ctids[i];
            i := i + 1;
            room := room - 1;
        END LOOP;
        EXIT WHEN room = 0;
        IF b_n <= room THEN
            whole := whole || b_id;
            room := room - b_n;
        ELSE
            split_id := b_id;
            split_take := room;
            split_visible := b_visible;
            room := 0;
        END IF;
    END LOOP;
    CLOSE cur;
    WHILE i <= n_rows AND room > 0 LOOP
        take := take || row_ctids[i];
        i := i + 1;
        room := room - 1;
    END LOOP;

    IF cardinality(take) > 0 THEN
        RETURN QUERY
        UPDATE pgflow.messages m
           SET attempts = m.attempts + 1, lease = p_lease, claimed_at = now(), visible_at = v_until
         WHERE m.ctid = ANY (take)
        RETURNING NULL::uuid[], m.id, m.seq, m.queue_name, m.target, m.priority, m.msg_type,
                  m.schema_version, m.trace_id, m.source, m.payload::json, m.attempts, v_retries,
                  m.created_at, m.visible_at, m.lease, m.last_error;
    END IF;

    IF cardinality(whole) > 0 THEN
        RETURN QUERY
        WITH u AS (
            UPDATE pgflow.batches b
               SET attempts = b.attempts + 1, lease = pgflow.batch_lease(b.batch_id, p_lease),
                   claimed_at = now(), visible_at = v_until
             WHERE b.batch_id = ANY (whole)
            RETURNING b.*
        )
        SELECT NULL::uuid[], x.id, x.seq, u.queue_name, u.target, u.priority, x.msg_type,
               x.schema_version, x.trace_id, x.source, x.payload, u.attempts, v_retries,
               u.created_at, u.visible_at, u.lease, NULL::text
          FROM u, unnest(u.ids, u.seqs, u.msg_types, u.schema_versions, u.trace_ids, u.sources,
                         u.payloads) AS x(id, seq, msg_type, schema_version, trace_id, source, payload);
    END IF;

    IF split_id IS NOT NULL THEN
        -- Lease the batch whole, then turn it into rows: its head leased,
        -- the rest ready again as it was before this claim.
        UPDATE pgflow.batches b
           SET attempts = b.attempts + 1, lease = pgflow.batch_lease(b.batch_id, p_lease),
               claimed_at = now(), visible_at = v_until
         WHERE b.batch_id = split_id
        RETURNING b.lease, b.ids[1:split_take] INTO split_lease, split_taken;
        PERFORM pgflow.split_batch(split_lease, split_take, split_visible);
        RETURN QUERY
        SELECT NULL::uuid[], m.id, m.seq, m.queue_name, m.target, m.priority, m.msg_type,
               m.schema_version, m.trace_id, m.source, m.payload::json, m.attempts, v_retries,
               m.created_at, m.visible_at, m.lease, m.last_error
          FROM pgflow.messages m
         WHERE m.id = ANY (split_taken) AND m.lease = split_lease;
    END IF;
END
$$;
COMMENT ON FUNCTION pgflow.claim(text, text, integer, uuid, bigint, uuid[], uuid[], bigint[]) IS
    'Acks p_ack_ids under p_ack_leases if given, then claims up to p_max messages (rows and batches, in claim order) under lease p_lease.';

-- The ack (migration 13), now for both forms: the batches the leases name
-- are deleted (archived) when every message is acked, else they become
-- rows that keep the lease (`pgflow.unbatch`); then the rows are acked. Used by the
-- client for every ack, in its own transaction or in a caller's.
DROP FUNCTION pgflow.ack(uuid[], uuid[]);
CREATE FUNCTION pgflow.ack(p_ids uuid[], p_leases uuid[], p_batches bigint[] DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batches bigint[];
    done uuid[] := '{}';
BEGIN
    -- The batches the leases name (the client decodes them itself).
    v_batches := COALESCE(p_batches,
                          ARRAY(SELECT pgflow.lease_batch(d.l)
                                  FROM (SELECT DISTINCT l FROM unnest(p_leases) l) d
                                 WHERE pgflow.lease_batch(d.l) IS NOT NULL));
    IF cardinality(v_batches) > 0 THEN
        -- Batches whose every message is acked under the batch's lease
        -- (the receipts of one claim carry distinct ids of its batches).
        WITH b AS (
            DELETE FROM pgflow.batches b
             WHERE b.batch_id = ANY (v_batches) AND b.lease = ANY (p_leases)
               AND b.visible_at > now()
               AND b.n = (SELECT count(DISTINCT r.i) FROM unnest(p_ids, p_leases) AS r(i, l)
                           WHERE r.l = b.lease)
            RETURNING b.*
        ), a AS (
            INSERT INTO pgflow.archive_batches
                (batch_id, queue_name, target, priority, n, ids, seqs, msg_types,
                 schema_versions, trace_ids, sources, payloads, attempts, created_at)
            SELECT b.batch_id, b.queue_name, b.target, b.priority, b.n, b.ids, b.seqs,
                   b.msg_types, b.schema_versions, b.trace_ids, b.sources, b.payloads,
                   b.attempts, b.created_at
              FROM b JOIN pgflow.queues aq ON aq.queue_name = b.queue_name
             WHERE aq.archive_retention > interval '0'
        )
        SELECT COALESCE(array_agg(x.id), '{}') INTO done FROM b, unnest(b.ids) AS x(id);
        RETURN QUERY SELECT unnest(done);
        IF cardinality(done) = cardinality(p_ids) THEN
            RETURN;
        END IF;
        -- The others (a partial ack) become rows, acked below.
        PERFORM pgflow.unbatch(p_leases);
    END IF;
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

COMMENT ON FUNCTION pgflow.ack(uuid[], uuid[], bigint[]) IS
    'Acks the messages p_ids still held under p_leases (archived or deleted), rows and batches (p_batches: the batch ids the leases name, decoded from them when NULL); returns the ids acked.';

-- The services' roles: the same rules as for rows (migration 9).
GRANT SELECT, INSERT, UPDATE, DELETE ON pgflow.batches TO singularity, centralcloud, genesis;
ALTER TABLE pgflow.batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY produce ON pgflow.batches FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));
CREATE POLICY read ON pgflow.batches FOR SELECT
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues))
           OR queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));
CREATE POLICY consume ON pgflow.batches FOR UPDATE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)))
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY settle ON pgflow.batches FOR DELETE
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));

GRANT SELECT, INSERT ON pgflow.archive_batches TO singularity, centralcloud, genesis;
ALTER TABLE pgflow.archive_batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY archive_write ON pgflow.archive_batches FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues)));
CREATE POLICY archive_read ON pgflow.archive_batches FOR SELECT
    USING (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues))
           OR queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues)));

-- "Is a vote on this proposal still queued?" (migration 11) looks at
-- batches too (their claim index narrows the scan to the votes queue).
CREATE OR REPLACE FUNCTION centralcloud.votes_queued(proposal uuid, sent_by timestamptz, except_id uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM pgflow.messages m
         WHERE m.queue_name = 'consensus_votes_queue'
           AND m.msg_type = 'consensus_vote'
           AND m.payload ->> 'proposal_id' = proposal::text
           AND m.created_at <= sent_by
           AND m.id IS DISTINCT FROM except_id)
        OR EXISTS (
        SELECT 1 FROM pgflow.batches b,
               unnest(b.ids, b.msg_types, b.payloads) AS x(id, msg_type, payload)
         WHERE b.queue_name = 'consensus_votes_queue'
           AND b.created_at <= sent_by
           AND x.msg_type = 'consensus_vote'
           AND x.payload ->> 'proposal_id' = proposal::text
           AND x.id IS DISTINCT FROM except_id);
END
$$;
