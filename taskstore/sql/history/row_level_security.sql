CREATE OR REPLACE FUNCTION agentq_is_member(org uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.ai_organization_members m
         WHERE m.organization_id = org AND m.user_id = (SELECT auth.uid())
    )
$$;

ALTER TABLE ai_agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_agent_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_agent_task_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_organization_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentq_schema_migrations ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS agentq_members_read_agents ON ai_agents;
CREATE POLICY agentq_members_read_agents ON ai_agents
    FOR SELECT USING (agentq_is_member(organization_id));

DROP POLICY IF EXISTS agentq_members_read_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_read_tasks ON ai_agent_tasks
    FOR SELECT USING (agentq_is_member(organization_id));

DROP POLICY IF EXISTS agentq_members_create_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_create_tasks ON ai_agent_tasks
    FOR INSERT WITH CHECK (
        agentq_is_member(organization_id)
        AND EXISTS (
            SELECT 1 FROM ai_agents a
             WHERE a.id = ai_agent_tasks.agent_id AND a.organization_id = ai_agent_tasks.organization_id
        )
    );

DROP POLICY IF EXISTS agentq_members_update_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_update_tasks ON ai_agent_tasks
    FOR UPDATE USING (agentq_is_member(organization_id)) WITH CHECK (agentq_is_member(organization_id));

DROP POLICY IF EXISTS agentq_members_read_runs ON ai_agent_task_runs;
CREATE POLICY agentq_members_read_runs ON ai_agent_task_runs
    FOR SELECT USING (
        EXISTS (
            SELECT 1 FROM ai_agent_tasks t
             WHERE t.id = ai_agent_task_runs.task_id AND agentq_is_member(t.organization_id)
        )
    );

DROP POLICY IF EXISTS agentq_members_read_own_memberships ON ai_organization_members;
CREATE POLICY agentq_members_read_own_memberships ON ai_organization_members
    FOR SELECT USING (user_id = (SELECT auth.uid()));
