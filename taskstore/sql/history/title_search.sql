-- Title search in the dashboard's task list (agentq_list_tasks: title ILIKE '%text%') through a trigram
-- index, where the pg_trgm extension is available and may be created (Supabase ships it; so do most
-- distributions, in postgresql-contrib); elsewhere the search works without it, scanning instead.
DO $agentq$
DECLARE
    trgm_schema text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        RAISE NOTICE 'agentq: pg_trgm is not available; title search scans instead of using an index';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'agentq: no privilege to create pg_trgm; title search scans instead of using an index';
        RETURN;
    END;
    SELECT n.nspname INTO trgm_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS ai_agent_tasks_title_trgm_idx ON ai_agent_tasks USING gin (title %I.gin_trgm_ops)',
        trgm_schema
    );
END
$agentq$;
