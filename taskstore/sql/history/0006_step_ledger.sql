-- Migration 0006_step_ledger (Postgres only; never edited once shipped).
-- The step ledger is written by workers (service_role, through the agentq_* functions) and read by the
-- members of the task's organization; nobody else may read it, and no client role may write it.
ALTER TABLE ai_agent_task_steps ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS agentq_members_read_steps ON ai_agent_task_steps;
CREATE POLICY agentq_members_read_steps ON ai_agent_task_steps
    FOR SELECT USING (
        EXISTS (
            SELECT 1 FROM ai_agent_tasks t
             WHERE t.id = ai_agent_task_steps.task_id AND agentq_is_member(t.organization_id)
        )
    );

DO $agentq$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON ai_agent_task_steps FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON ai_agent_task_steps FROM authenticated;
        GRANT SELECT ON ai_agent_task_steps TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON ai_agent_task_steps TO service_role;
    END IF;
END
$agentq$;

-- Functions whose arguments changed in this migration: dropped, so that functions.sql (installed next)
-- defines them once instead of adding an overload.
DROP FUNCTION IF EXISTS agentq_requeue_failed(uuid, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS agentq_finish(
    uuid, uuid, text, text, timestamptz, text, text, jsonb, timestamptz, integer, integer, integer, integer,
    numeric, jsonb
);
