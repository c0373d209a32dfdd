-- Every proposal reaches a final state (issue 16, points 5 and 6).
--
-- singularity.fail_proposal(id, instance, reason) is the one place where a
-- proposal still in a non-final state (pending, submitted,
-- consensus_reached, executing) becomes `failed` with its reason. It
-- returns false when the proposal is final already, or unknown. The
-- execution flow (a refused path), the sweeper and the trigger below call it.
--
-- A dead-lettered execution fails its proposal. Whatever moves a message of
-- proposals_for_execution_queue to pgflow.dlq (a fatal failure, a last
-- retry that fails or times out, a lease that kept expiring, a
-- cancellation), the trigger fails the proposal the message names, in the
-- same transaction, with the dead letter's error as the reason, when that
-- proposal is approved or executing (an execution message for a proposal
-- consensus has not approved decides nothing about it). Retrying such a
-- dead letter later changes nothing: the execution finds the proposal
-- failed and does nothing.

CREATE FUNCTION singularity.fail_proposal(p_id uuid, p_instance text, p_reason text)
RETURNS boolean
LANGUAGE sql AS $$
    WITH failed AS (
        UPDATE singularity.proposals
           SET status = 'failed', error = p_reason, updated_at = now()
         WHERE id = p_id AND instance_id = p_instance
           AND status IN ('pending', 'submitted', 'consensus_reached', 'executing')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM failed)
$$;

COMMENT ON FUNCTION singularity.fail_proposal(uuid, text, text) IS
    'Marks a non-final proposal failed with the reason; false when it is final or unknown.';

-- Runs as the owner, so the proposal is failed whichever role moved the
-- message (the consuming instance, an operator); it touches only the
-- proposal the dead letter names, at the instance it was targeted at.
CREATE FUNCTION singularity.execution_dead_lettered() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    proposal text := CASE WHEN jsonb_typeof(NEW.payload) = 'object'
                          THEN NEW.payload ->> 'proposal_id' END;
BEGIN
    -- A payload that names no proposal (a malformed message) fails nothing.
    IF proposal IS NULL OR proposal !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM singularity.proposals p
      WHERE p.id = proposal::uuid AND p.instance_id = NEW.target
        AND p.status IN ('consensus_reached', 'executing')
        FOR UPDATE;
    IF FOUND THEN
        PERFORM singularity.fail_proposal(
            proposal::uuid, NEW.target,
            'execution dead-lettered after ' || NEW.attempts || ' attempt(s): ' || NEW.error);
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION singularity.execution_dead_lettered() FROM PUBLIC;

CREATE TRIGGER execution_dead_lettered
    AFTER INSERT ON pgflow.dlq
    FOR EACH ROW WHEN (NEW.queue_name = 'proposals_for_execution_queue')
    EXECUTE FUNCTION singularity.execution_dead_lettered();
