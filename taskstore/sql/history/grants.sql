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
