-- The claim floor: claims start past the dead head of the queue.
--
-- Every acked message leaves a dead entry in the claim index until VACUUM
-- removes it, and those entries sit exactly where a claim starts: at the
-- head of the queue. Between two autovacuum visits (a minute apart by
-- default, longer on a new database) a busy queue gathers hundreds of
-- thousands of them, and every claim walked them all (2.5 ms per claim at
-- 180,000 dead entries, growing without bound).
--
-- The claim order becomes one number, `ord` (priority first, then seq), and
-- `pgflow.heads` keeps per queue and target a `floor` below which no live
-- message lies. Claims scan from the floor. The invariant "every row of
-- pgflow.messages has ord >= its floor" holds at every commit:
--
--   * every INSERT lowers the floor to its smallest ord when needed (the
--     trigger below, so no insert path can forget it), holding a shared
--     advisory lock on the queue and target until it commits;
--   * `pgflow.advance_floor` raises the floor to the smallest ord of the
--     rows still present (ready, delayed or in flight, so a retry, a
--     released lease or an expired one is never below it). It takes the
--     advisory lock exclusively first, so it waits for the inserts in
--     flight and then counts their rows; an insert that comes after it
--     compares its rows with the new floor.
--
-- Consumers call `advance_floor` now and then (a tenth of a second apart);
-- VACUUM stays the backstop that removes the dead entries themselves.

-- ord = (32767 - priority) * 2^47 + seq: ascending ord is "highest priority
-- first, FIFO within a priority". seq stays below 2^47. Adding the stored
-- column rewrites pgflow.messages under an exclusive lock: on an existing
-- installation, upgrade while the queues are short.
ALTER TABLE pgflow.messages ALTER COLUMN seq SET MAXVALUE 140737488355327;
ALTER TABLE pgflow.messages
    ADD COLUMN ord bigint NOT NULL
    GENERATED ALWAYS AS (((32767 - priority)::bigint << 47) | seq) STORED;

CREATE INDEX messages_claim_ord_idx ON pgflow.messages (queue_name, target, ord);
DROP INDEX pgflow.messages_claim_idx;

CREATE TABLE pgflow.heads (
    queue_name text NOT NULL REFERENCES pgflow.queues ON DELETE CASCADE,
    target     text NOT NULL,
    floor      bigint NOT NULL,
    PRIMARY KEY (queue_name, target)
);
COMMENT ON TABLE pgflow.heads IS
    'Per queue and target, an ord below which pgflow.messages holds no row: claims scan from it.';

INSERT INTO pgflow.heads (queue_name, target, floor)
SELECT queue_name, target, min(ord) FROM pgflow.messages GROUP BY queue_name, target;

-- The advisory lock that orders inserts (shared) against advances (exclusive).
CREATE FUNCTION pgflow.floor_lock_key(queue_name text, target text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashtext('pgflow.heads')::bigint << 32) | (hashtext(queue_name || '/' || target)::bigint & 4294967295) $$;

CREATE FUNCTION pgflow.lower_floor() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    cur bigint;
BEGIN
    -- In (queue, target) order, so two inserts never wait on each other in a cycle.
    FOR r IN SELECT n.queue_name, n.target, min(n.ord) AS low
               FROM new_rows n GROUP BY n.queue_name, n.target
              ORDER BY n.queue_name, n.target
    LOOP
        PERFORM pg_advisory_xact_lock_shared(pgflow.floor_lock_key(r.queue_name, r.target));
        -- A statement of its own: its snapshot sees any advance that ended
        -- before the lock was granted.
        IF current_setting('transaction_isolation') = 'read committed' THEN
            SELECT h.floor INTO cur FROM pgflow.heads h
             WHERE h.queue_name = r.queue_name AND h.target = r.target;
        ELSE
            -- The transaction's snapshot may predate the last advance:
            -- locking the row reads its latest version, or fails with a
            -- serialization error (retry the transaction) if it moved.
            SELECT h.floor INTO cur FROM pgflow.heads h
             WHERE h.queue_name = r.queue_name AND h.target = r.target
               FOR KEY SHARE;
        END IF;
        IF NOT FOUND THEN
            INSERT INTO pgflow.heads (queue_name, target, floor)
            VALUES (r.queue_name, r.target, r.low)
            ON CONFLICT DO NOTHING;
            cur := NULL;
        END IF;
        IF cur IS NULL OR cur > r.low THEN
            UPDATE pgflow.heads h SET floor = r.low
             WHERE h.queue_name = r.queue_name AND h.target = r.target AND h.floor > r.low;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_lower_floor
    AFTER INSERT ON pgflow.messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgflow.lower_floor();

-- Raises the floor of (q, t) to the smallest ord still present and returns
-- it; returns NULL when inserts hold the lock for longer than lock_timeout
-- (it is tried again later) or when the queue has no floor yet. Must be called outside an explicit transaction block of
-- REPEATABLE READ or stricter (each statement needs a fresh snapshot).
CREATE FUNCTION pgflow.advance_floor(q text, t text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '20ms'
AS $$
DECLARE
    cur bigint;
    low bigint;
BEGIN
    BEGIN
        PERFORM pg_advisory_xact_lock(pgflow.floor_lock_key(q, t));
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    -- Read under the lock (a statement of its own, so a fresh snapshot):
    -- an insert that committed meanwhile may have lowered the floor, and
    -- the scan must start from there.
    SELECT h.floor INTO cur FROM pgflow.heads h WHERE h.queue_name = q AND h.target = t;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT m.ord INTO low FROM pgflow.messages m
     WHERE m.queue_name = q AND m.target = t AND m.ord >= cur
     ORDER BY m.ord LIMIT 1;
    IF low IS NULL THEN
        -- Empty: any later insert of priority 0 lies above this; the rest
        -- (higher priorities, or a seq drawn before now and committed
        -- after) lower the floor themselves.
        SELECT (32767::bigint << 47) | s.last_value INTO low FROM pgflow.messages_seq_seq s;
    END IF;
    IF low > cur THEN
        UPDATE pgflow.heads h SET floor = low WHERE h.queue_name = q AND h.target = t;
        RETURN low;
    END IF;
    RETURN cur;
END
$$;
COMMENT ON FUNCTION pgflow.advance_floor(text, text) IS
    'Raises the claim floor of a queue and target past the messages already gone.';

GRANT SELECT ON pgflow.heads TO PUBLIC;
