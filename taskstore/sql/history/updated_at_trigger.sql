CREATE OR REPLACE FUNCTION agentq_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := CURRENT_TIMESTAMP;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS agentq_touch_updated_at ON ai_agents;
CREATE TRIGGER agentq_touch_updated_at BEFORE UPDATE ON ai_agents
    FOR EACH ROW EXECUTE FUNCTION agentq_touch_updated_at();

DROP TRIGGER IF EXISTS agentq_touch_updated_at ON ai_agent_tasks;
CREATE TRIGGER agentq_touch_updated_at BEFORE UPDATE ON ai_agent_tasks
    FOR EACH ROW EXECUTE FUNCTION agentq_touch_updated_at();
