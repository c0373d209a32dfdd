-- A client's idempotency key for a proposal (`POST /proposals` with an
-- `Idempotency-Key` header or an `idempotency_key` field): a client that
-- retries a submission after a timeout gets the first proposal back
-- instead of submitting the change a second time.
--
-- NULL for proposals submitted without a key. Unique per instance: the
-- insert of a repeat (also a concurrent one, which waits for the first
-- to commit) conflicts and inserts nothing, and the repeat is answered
-- with the stored proposal.
ALTER TABLE singularity.proposals
    ADD COLUMN idempotency_key text
        CHECK (length(idempotency_key) BETWEEN 1 AND 255);

CREATE UNIQUE INDEX proposals_idempotency_key_idx
    ON singularity.proposals (instance_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
