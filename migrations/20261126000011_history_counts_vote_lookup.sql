-- Two lookups that grew with the data, made constant-time.
--
-- 1. An instance's history for an agent type (proposals applied and rolled
--    back), read on every vote and every submit, was counted from an index:
--    its cost grew with every proposal stored (2 ms per call after 3,000
--    proposals per instance). It is now kept in counters per instance and
--    agent type by a trigger on every status change; readers sum them. Each
--    proposal counts in one of 8 slots (by a hash of its id), so that
--    executions running side by side do not all wait on one counter row.
CREATE TABLE singularity.agent_history (
    instance_id  text     NOT NULL,
    agent_type   text     NOT NULL,
    slot         smallint NOT NULL,
    applied      bigint   NOT NULL DEFAULT 0,
    rolled_back  bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, agent_type, slot)
);

CREATE FUNCTION singularity.history_slot(id uuid) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashtext(id::text) & 7)::smallint $$;

CREATE FUNCTION singularity.count_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d_applied     bigint := 0;
    d_rolled_back bigint := 0;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        d_applied := d_applied - (OLD.status = 'applied')::int;
        d_rolled_back := d_rolled_back - (OLD.status = 'rolled_back')::int;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        d_applied := d_applied + (NEW.status = 'applied')::int;
        d_rolled_back := d_rolled_back + (NEW.status = 'rolled_back')::int;
    END IF;
    IF TG_OP = 'UPDATE' AND (OLD.instance_id, OLD.agent_type) IS DISTINCT FROM (NEW.instance_id, NEW.agent_type) THEN
        RAISE EXCEPTION 'a proposal''s instance and agent type do not change';
    END IF;
    IF d_applied <> 0 OR d_rolled_back <> 0 THEN
        INSERT INTO singularity.agent_history AS h
               (instance_id, agent_type, slot, applied, rolled_back)
        VALUES (COALESCE(NEW.instance_id, OLD.instance_id), COALESCE(NEW.agent_type, OLD.agent_type),
                singularity.history_slot(COALESCE(NEW.id, OLD.id)), d_applied, d_rolled_back)
        ON CONFLICT (instance_id, agent_type, slot) DO UPDATE
           SET applied = h.applied + EXCLUDED.applied,
               rolled_back = h.rolled_back + EXCLUDED.rolled_back;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER proposals_count_history
    AFTER INSERT OR DELETE OR UPDATE OF status ON singularity.proposals
    FOR EACH ROW EXECUTE FUNCTION singularity.count_history();

INSERT INTO singularity.agent_history (instance_id, agent_type, slot, applied, rolled_back)
SELECT instance_id, agent_type, singularity.history_slot(id),
       count(*) FILTER (WHERE status = 'applied'),
       count(*) FILTER (WHERE status = 'rolled_back')
  FROM singularity.proposals
 GROUP BY 1, 2, 3;

GRANT SELECT, INSERT, UPDATE ON singularity.agent_history TO singularity;

-- 2. The consensus engine asks whether votes on a proposal, sent in time,
--    still wait in the votes queue (the deadline decider for every due
--    proposal, and a late vote's handler). That scanned the whole votes
--    queue per proposal, quadratic when the queue backs up; this partial
--    index on the vote's queue and proposal id makes it one index probe.
--    Row-level security keeps a role's queries from using an index on an
--    expression that is not leakproof (`payload ->> ...`): the lookup is a
--    function that runs as the schema's owner, answers only this yes/no
--    question about the queue centralcloud consumes anyway, and only
--    centralcloud may call it.
CREATE INDEX messages_consensus_vote_proposal_idx
    ON pgflow.messages (queue_name, (payload ->> 'proposal_id'))
 WHERE msg_type = 'consensus_vote';

CREATE FUNCTION centralcloud.votes_queued(proposal uuid, sent_by timestamptz, except_id uuid)
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
           AND m.id IS DISTINCT FROM except_id);
END
$$;
COMMENT ON FUNCTION centralcloud.votes_queued(uuid, timestamptz, uuid) IS
    'Whether a vote on the proposal sent by sent_by (other than message except_id) waits in consensus_votes_queue.';
REVOKE ALL ON FUNCTION centralcloud.votes_queued(uuid, timestamptz, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION centralcloud.votes_queued(uuid, timestamptz, uuid) TO centralcloud;
