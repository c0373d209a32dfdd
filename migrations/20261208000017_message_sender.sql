-- The sender of a message is established by the database, not by the
-- payload.
--
-- Before, `source` was whatever the producer wrote, so any holder of a
-- service role could send a message in another instance's name (a vote
-- as `ghost_1`, metrics as `singularity_3`). Now:
--
-- * A role restricted by row-level security (every service role, and the
--   per-instance roles that are members of one) may insert a message only
--   with `source` = its login role (`session_user`: inside a SECURITY
--   DEFINER function `current_user` is the function's owner, the login
--   stays). So an instance that logs in as its own role (`singularity_2`,
--   a member of `singularity`) speaks only for itself, and the shared
--   `singularity` role speaks only as `singularity`.
-- * It may not change the `source` of a queued message, nor its payload,
--   type, target or queue (UPDATE privilege only on the lease columns).
-- * An unrestricted session (superuser, a role that bypasses row-level
--   security, or the queue tables' owner: the operator running `pgflow`)
--   may write any source; a send of its without one is marked
--   `operator:<login>` (`pgflow.default_source()`).
--
-- Consumers of messages that name an instance compare the name with the
-- source (`pgflow_core::protocol::decode`).

CREATE FUNCTION pgflow.default_source() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    -- PL/pgSQL: its plan is cached per session (a LANGUAGE sql function
    -- with a FROM is planned again on every statement that calls it).
    RETURN (SELECT CASE WHEN r.rolsuper OR r.rolbypassrls
                             OR pg_has_role(session_user, c.relowner, 'USAGE')
                        THEN 'operator:' || session_user
                        ELSE session_user::text END
              FROM pg_catalog.pg_roles r, pg_catalog.pg_class c
             WHERE r.rolname = session_user AND c.oid = 'pgflow.messages'::regclass);
END
$$;
COMMENT ON FUNCTION pgflow.default_source() IS
    'The source of a message sent without one: the login role, marked operator:<login> for unrestricted sessions.';
GRANT EXECUTE ON FUNCTION pgflow.default_source() TO PUBLIC;

DROP POLICY produce ON pgflow.messages;
CREATE POLICY produce ON pgflow.messages FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues))
                AND source = session_user);

DROP POLICY produce ON pgflow.batches;
CREATE POLICY produce ON pgflow.batches FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_producible_queues))
                AND sources <@ ARRAY[session_user::text]);

-- A service role may update only what claiming and settling change (the
-- lease, its expiry, attempts and the failure record), never what a
-- message says or who it is from or for: before, a consumer of a queue
-- could rewrite the payload of a message addressed to another instance.
REVOKE UPDATE ON pgflow.messages, pgflow.batches FROM singularity, centralcloud, genesis;
GRANT UPDATE (attempts, lease, claimed_at, visible_at, last_error, history)
    ON pgflow.messages TO singularity, centralcloud, genesis;
GRANT UPDATE (attempts, lease, claimed_at, visible_at)
    ON pgflow.batches TO singularity, centralcloud, genesis;

-- A restricted role dead-letters only messages it could have been handed:
-- untargeted ones, or those addressed to itself. Before, an instance could
-- insert a dead letter for another instance's execution (and so fail that
-- instance's proposal, migration 30). Operators and SECURITY DEFINER
-- maintenance (pgflow.expire_gone_targets) are not restricted.
DROP POLICY dlq_write ON pgflow.dlq;
CREATE POLICY dlq_write ON pgflow.dlq FOR INSERT
    WITH CHECK (queue_name = ANY (ARRAY(SELECT queue_name FROM pgflow.my_consumable_queues))
                AND (target = '' OR target = session_user));

-- A login role for one member of a service role (an instance), created when
-- missing: `pgflow init --instances` and `pgflow up` call it, so each
-- instance logs in as itself and inherits its service's permissions. The
-- caller needs CREATEROLE (the operator). Name and group are checked, then
-- quoted by format(%I).
CREATE FUNCTION pgflow.ensure_member_role(p_role text, p_group text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF p_role !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid role name %: expected [a-z][a-z0-9_]{0,62}', p_role
            USING ERRCODE = 'invalid_name';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = p_group) THEN
        RAISE EXCEPTION 'role % does not exist', p_group USING ERRCODE = 'undefined_object';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = p_role) THEN
        -- An existing role is used only if it already is a member: never
        -- grant a group to a role made for something else (a service, an
        -- operator) by naming it here.
        IF NOT pg_has_role(p_role, p_group, 'MEMBER') THEN
            RAISE EXCEPTION 'role % exists and is not a member of %: choose another instance id', p_role, p_group
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE ROLE %I LOGIN IN ROLE %I', p_role, p_group);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        RETURN false; -- created meanwhile (roles are cluster-wide)
    END;
    RETURN true;
END
$$;
COMMENT ON FUNCTION pgflow.ensure_member_role(text, text) IS
    'Creates LOGIN role p_role as a member of p_group when missing; true when created.';
REVOKE ALL ON FUNCTION pgflow.ensure_member_role(text, text) FROM PUBLIC;
