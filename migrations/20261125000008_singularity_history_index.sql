-- An instance's history for an agent type (applied vs rolled back), read on
-- every vote and every submit, counted from the index alone instead of
-- visiting every proposal row of that agent type.
CREATE INDEX proposals_history_idx
    ON singularity.proposals (instance_id, agent_type, status);
DROP INDEX singularity.proposals_instance_agent_idx;
