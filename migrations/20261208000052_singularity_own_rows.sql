-- Each instance sees and changes only its own rows in the `singularity`
-- schema.
--
-- Since migration 17 every instance logs in as its own role (named by its
-- instance id, a member of `singularity`), but the schema's grants went to
-- `singularity` as a whole: one instance could rewrite another's stored
-- proposal (whose change the executor applies), votes, profiles or
-- Genesis requests. Row-level security now ties every row to the login:
-- `instance_id = session_user`. The schema's owner (the operator, `pgflow
-- up`'s status view, the tests' admin) is not restricted.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['proposals', 'safety_profiles', 'votes_cast', 'genesis_requests',
                             'agent_history'] LOOP
        EXECUTE format('ALTER TABLE singularity.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY own_rows ON singularity.%I TO singularity
                            USING (instance_id = session_user)
                            WITH CHECK (instance_id = session_user)', t);
    END LOOP;
END
$$;
