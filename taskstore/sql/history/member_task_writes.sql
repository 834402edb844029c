DROP POLICY IF EXISTS agentq_members_create_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_create_tasks ON ai_agent_tasks
    FOR INSERT WITH CHECK (
        status = 'pending'
        AND agentq_is_member(organization_id)
        AND EXISTS (
            SELECT 1 FROM ai_agents a
             WHERE a.id = ai_agent_tasks.agent_id AND a.organization_id = ai_agent_tasks.organization_id
        )
    );

DROP POLICY IF EXISTS agentq_members_update_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_update_tasks ON ai_agent_tasks
    FOR UPDATE USING (agentq_is_member(organization_id))
    WITH CHECK (
        agentq_is_member(organization_id)
        AND EXISTS (
            SELECT 1 FROM ai_agents a
             WHERE a.id = ai_agent_tasks.agent_id AND a.organization_id = ai_agent_tasks.organization_id
        )
    );

CREATE OR REPLACE FUNCTION agentq_guard_member_task_writes() RETURNS trigger
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    member_owned constant text[] := ARRAY['agent_id', 'organization_id', 'title', 'description', 'context', 'priority', 'updated_at'];
    agent_org uuid;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'pending' OR NEW.attempts <> 0 OR NEW.schedule_cron IS NOT NULL
           OR NEW.next_run_at IS NOT NULL OR NEW.task_type <> 'adhoc' THEN
            RAISE EXCEPTION 'agentq row-level security: % may insert task % only as a pending ad-hoc task',
                current_user, NEW.id USING ERRCODE = '42501';
        END IF;
    ELSIF to_jsonb(NEW) - member_owned IS DISTINCT FROM to_jsonb(OLD) - member_owned THEN
        RAISE EXCEPTION 'agentq row-level security: % may not change worker-owned columns of task %',
            current_user, NEW.id USING ERRCODE = '42501';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.agent_id IS DISTINCT FROM OLD.agent_id
       OR NEW.organization_id IS DISTINCT FROM OLD.organization_id THEN
        -- As the caller: an agent the caller may not read counts as another organization's.
        SELECT organization_id INTO agent_org FROM ai_agents WHERE id = NEW.agent_id;
        IF agent_org IS DISTINCT FROM NEW.organization_id THEN
            RAISE EXCEPTION 'agentq row-level security: agent % is not an agent of organization % (task %)',
                NEW.agent_id, NEW.organization_id, NEW.id USING ERRCODE = '42501';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS agentq_guard_member_task_writes ON ai_agent_tasks;
CREATE TRIGGER agentq_guard_member_task_writes BEFORE INSERT OR UPDATE ON ai_agent_tasks
    FOR EACH ROW WHEN (row_security_active('ai_agent_tasks'::regclass))
    EXECUTE FUNCTION agentq_guard_member_task_writes();

DO $agentq$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        -- Revoking the table privilege also drops earlier column grants, so this applies twice.
        REVOKE INSERT, UPDATE ON ai_agent_tasks FROM authenticated;
        GRANT INSERT (id, agent_id, organization_id, title, description, context, priority, status, task_type)
            ON ai_agent_tasks TO authenticated;
        GRANT UPDATE (agent_id, organization_id, title, description, context, priority)
            ON ai_agent_tasks TO authenticated;
    END IF;
END
$agentq$;
