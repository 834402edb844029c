-- Agent Task Queue schema migration 0003_bulk_enqueue (postgres).

-- Generated from taskstore/schema.py; applying it twice is safe.

CREATE TABLE IF NOT EXISTS agentq_schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE OR REPLACE FUNCTION agentq_get_tasks(p_task_ids uuid[])
RETURNS SETOF ai_agent_tasks LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT * FROM ai_agent_tasks WHERE id = ANY(p_task_ids)
$$;

-- pending -> queued for every task of p_task_ids or, if any is missing or not pending, for none (no rows).
-- The rows are locked in id order (two batches never deadlock) and re-checked after any wait.
CREATE OR REPLACE FUNCTION agentq_mark_queued_many(
    p_task_ids uuid[], p_priority integer, p_run_at timestamptz, p_now timestamptz
) RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
WITH target AS (
    SELECT id FROM ai_agent_tasks
     WHERE id = ANY(p_task_ids) AND status = 'pending'
     ORDER BY id
       FOR UPDATE
)
UPDATE ai_agent_tasks t
   SET status = 'queued', priority = COALESCE(p_priority, t.priority), run_at = p_run_at,
       queued_at = p_now, archived_at = NULL, updated_at = p_now
  FROM target
 WHERE t.id = target.id AND (SELECT count(*) FROM target) = cardinality(p_task_ids)
RETURNING t.*
$$;

-- queued -> pending for the tasks of one enqueue (made at p_queued_at) that the broker refused.
CREATE OR REPLACE FUNCTION agentq_revert_queued_many(
    p_task_ids uuid[], p_queued_at timestamptz, p_now timestamptz
) RETURNS integer LANGUAGE sql SET search_path = public AS $$
WITH reverted AS (
    UPDATE ai_agent_tasks SET status = 'pending', run_at = NULL, queued_at = NULL, updated_at = p_now
     WHERE id = ANY(p_task_ids) AND status = 'queued' AND queued_at = p_queued_at
 RETURNING id
)
SELECT count(*)::integer FROM reverted
$$;

DO $agentq$
DECLARE
    fn regprocedure;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON ai_agents, ai_agent_tasks, ai_agent_task_runs, ai_organization_members,
            agentq_schema_migrations FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON ai_agents, ai_agent_tasks, ai_agent_task_runs, ai_organization_members,
            agentq_schema_migrations FROM authenticated;
        GRANT SELECT ON ai_agents, ai_agent_task_runs, ai_organization_members TO authenticated;
        GRANT SELECT, INSERT, UPDATE ON ai_agent_tasks TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON ai_agents, ai_agent_tasks, ai_agent_task_runs, ai_organization_members
            TO service_role;
        GRANT SELECT ON agentq_schema_migrations TO service_role;
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = current_schema() AND p.proname LIKE 'agentq\_%'
           AND p.proname NOT IN ('agentq_is_member', 'agentq_touch_updated_at')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM anon', fn);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM authenticated', fn);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END IF;
    END LOOP;
END
$agentq$;

INSERT INTO agentq_schema_migrations (name) VALUES ('0003_bulk_enqueue') ON CONFLICT (name) DO NOTHING;
