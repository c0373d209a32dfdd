-- An instance's own history with an agent type ages, so a locked-out agent
-- type has a way back.
--
-- Singularity rejects proposals of an agent type once its own history holds
-- `SINGULARITY_MIN_HISTORY` outcomes and the share it kept is below the
-- floor (voting.rs, rule 3). The counters of migration 11 never forgot:
-- once every instance's share was under the floor, nothing of that agent
-- type was applied again, so no new outcome could ever lift it. Now each
-- counter row also keeps its outcomes weighted by age, halving every
-- `singularity.history_half_life()` (the setting
-- `singularity.history_half_life`, e.g. `ALTER DATABASE ... SET
-- singularity.history_half_life = '12 hours'`; default one day, as
-- centralcloud's learning half-life): the vote reads the weighted counts,
-- so as failures age the history holds fewer than the minimum recent
-- outcomes and stops deciding, and the profile alone decides again. The
-- plain counts stay for the record.

ALTER TABLE singularity.agent_history
    ADD COLUMN applied_w     float8      NOT NULL DEFAULT 0,
    ADD COLUMN rolled_back_w float8      NOT NULL DEFAULT 0,
    ADD COLUMN as_of         timestamptz NOT NULL DEFAULT now();
UPDATE singularity.agent_history SET applied_w = applied, rolled_back_w = rolled_back;

CREATE FUNCTION singularity.history_half_life() RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('singularity.history_half_life', true), '')::interval,
                    interval '1 day')
$$;

-- The factor by which an outcome weighed at `since` weighs now.
CREATE FUNCTION singularity.history_decay(since timestamptz) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT power(0.5, greatest(extract(epoch FROM now() - since), 0)
                      / greatest(extract(epoch FROM singularity.history_half_life()), 1))::float8
$$;

CREATE OR REPLACE FUNCTION singularity.count_history() RETURNS trigger
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
        -- The weights decay to now, then take the change (a change undone,
        -- applied then rolled back, is taken off at full weight: rollbacks
        -- follow their application within seconds).
        INSERT INTO singularity.agent_history AS h
               (instance_id, agent_type, slot, applied, rolled_back, applied_w, rolled_back_w, as_of)
        VALUES (COALESCE(NEW.instance_id, OLD.instance_id), COALESCE(NEW.agent_type, OLD.agent_type),
                singularity.history_slot(COALESCE(NEW.id, OLD.id)), d_applied, d_rolled_back,
                greatest(d_applied, 0), greatest(d_rolled_back, 0), now())
        ON CONFLICT (instance_id, agent_type, slot) DO UPDATE
           SET applied = h.applied + EXCLUDED.applied,
               rolled_back = h.rolled_back + EXCLUDED.rolled_back,
               applied_w = greatest(h.applied_w * singularity.history_decay(h.as_of)
                                    + (EXCLUDED.applied)::float8, 0),
               rolled_back_w = greatest(h.rolled_back_w * singularity.history_decay(h.as_of)
                                        + (EXCLUDED.rolled_back)::float8, 0),
               as_of = now();
    END IF;
    RETURN NULL;
END
$$;
