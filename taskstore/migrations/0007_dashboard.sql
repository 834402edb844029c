-- Agent Task Queue schema migration 0007_dashboard (postgres).

-- Generated from taskstore/schema.py; applying it twice is safe.

CREATE TABLE IF NOT EXISTS agentq_schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_created_idx ON ai_agent_tasks (created_at, id);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_status_created_idx ON ai_agent_tasks (status, created_at, id);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_agent_created_idx ON ai_agent_tasks (agent_id, created_at, id);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_organization_created_idx ON ai_agent_tasks (organization_id, created_at, id);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_live_idx ON ai_agent_tasks (status, organization_id, priority, run_at) WHERE archived_at IS NULL;

DROP INDEX IF EXISTS ai_agent_tasks_status_idx;
DROP INDEX IF EXISTS ai_agent_tasks_agent_idx;
DROP INDEX IF EXISTS ai_agent_tasks_organization_idx;

CREATE INDEX IF NOT EXISTS ai_agents_kind_idx ON ai_agents (kind);

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

-- Migration 0007_dashboard's functions (Postgres only; never edited once shipped): the dashboard's reads
-- and schedule actions, the same definitions as in functions.sql when 0007 shipped. Only these: a database
-- that applied a later migration first keeps that migration's versions of every other function.

-- Tasks matching the filters given (NULL: any), newest first, keyset-paged after (older than) or before
-- (newer than) a (created_at, id) key, each with its agent's name and kind. Dynamic SQL, so that only the
-- filters given reach the planner, which then picks the index made for them; p_title_pattern is a LIKE
-- pattern (escape character \, LIKE's default).
CREATE OR REPLACE FUNCTION agentq_list_tasks(
    p_limit integer, p_status text DEFAULT NULL, p_agent_id uuid DEFAULT NULL,
    p_organization_id uuid DEFAULT NULL, p_kind text DEFAULT NULL, p_created_from timestamptz DEFAULT NULL,
    p_created_to timestamptz DEFAULT NULL, p_title_pattern text DEFAULT NULL,
    p_after_created timestamptz DEFAULT NULL, p_after_id uuid DEFAULT NULL,
    p_before_created timestamptz DEFAULT NULL, p_before_id uuid DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = public AS $$
DECLARE
    filters text := '';
    direction text := 'DESC';
    page jsonb;
BEGIN
    IF p_status IS NOT NULL THEN
        filters := filters || ' AND t.status = $2';
    END IF;
    IF p_agent_id IS NOT NULL THEN
        filters := filters || ' AND t.agent_id = $3';
    END IF;
    IF p_organization_id IS NOT NULL THEN
        filters := filters || ' AND t.organization_id = $4';
    END IF;
    IF p_kind IS NOT NULL THEN
        filters := filters || ' AND t.agent_id IN (SELECT k.id FROM ai_agents k WHERE k.kind = $5)';
    END IF;
    IF p_created_from IS NOT NULL THEN
        filters := filters || ' AND t.created_at >= $6';
    END IF;
    IF p_created_to IS NOT NULL THEN
        filters := filters || ' AND t.created_at < $7';
    END IF;
    IF p_title_pattern IS NOT NULL THEN
        filters := filters || ' AND t.title ILIKE $8';
    END IF;
    IF p_after_created IS NOT NULL THEN
        filters := filters || ' AND (t.created_at, t.id) < ($9, $10)';
    ELSIF p_before_created IS NOT NULL THEN
        filters := filters || ' AND (t.created_at, t.id) > ($11, $12)';
        direction := 'ASC';
    END IF;
    EXECUTE format(
        'SELECT COALESCE(jsonb_agg(jsonb_build_object('
        '    ''id'', t.id, ''title'', t.title, ''status'', t.status, ''priority'', t.priority,'
        '    ''task_type'', t.task_type, ''agent_id'', t.agent_id, ''organization_id'', t.organization_id,'
        '    ''agent_name'', a.name, ''kind'', a.kind, ''attempts'', t.attempts,'
        '    ''max_attempts'', t.max_attempts, ''error'', left(t.error, 300), ''cost_usd'', t.cost_usd::text,'
        '    ''schedule_cron'', t.schedule_cron, ''next_run_at'', t.next_run_at,'
        '    ''created_at'', t.created_at, ''updated_at'', t.updated_at, ''started_at'', t.started_at,'
        '    ''completed_at'', t.completed_at, ''failed_at'', t.failed_at, ''archived_at'', t.archived_at)'
        '  ORDER BY t.created_at DESC, t.id DESC), ''[]''::jsonb)'
        '  FROM (SELECT t.id, t.title, t.status, t.priority, t.task_type, t.agent_id, t.organization_id,'
        '               t.attempts, t.max_attempts, t.error, t.cost_usd, t.schedule_cron, t.next_run_at,'
        '               t.created_at, t.updated_at, t.started_at, t.completed_at, t.failed_at, t.archived_at'
        '          FROM ai_agent_tasks t WHERE TRUE%s'
        '         ORDER BY t.created_at %s, t.id %s LIMIT $1) t'
        '  LEFT JOIN ai_agents a ON a.id = t.agent_id',
        filters, direction, direction)
      INTO page
     USING p_limit, p_status, p_agent_id, p_organization_id, p_kind, p_created_from, p_created_to,
           p_title_pattern, p_after_created, p_after_id, p_before_created, p_before_id;
    RETURN page;
END
$$;

-- The queue at a glance, of one organization or all: tasks by status (completed and failed ones not
-- archived) with the queued ones split into waiting and delayed; tasks finished in the last hour, minute by
-- minute; queued tasks by priority and by organization; spend per organization today and this month (each of
-- this month's runs finds its task by primary key: cheaper than joining the whole task table).
CREATE OR REPLACE FUNCTION agentq_overview(
    p_now timestamptz, p_hour_ago timestamptz, p_day_start timestamptz, p_month_start timestamptz,
    p_organization_id uuid DEFAULT NULL, p_top integer DEFAULT 20
) RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = public AS $$
DECLARE
    org text := CASE WHEN p_organization_id IS NULL THEN '' ELSE ' AND t.organization_id = $1' END;
    counts jsonb;
    minutes jsonb;
    priorities jsonb;
    organizations jsonb;
    spend jsonb;
BEGIN
    EXECUTE format(
        'SELECT jsonb_build_object(''by_status'', COALESCE((SELECT jsonb_object_agg(s.status, s.n) FROM ('
        '    SELECT t.status, count(*) AS n FROM ai_agent_tasks t WHERE t.archived_at IS NULL%1$s'
        '     GROUP BY t.status) s), ''{}''::jsonb),'
        '  ''waiting'', (SELECT count(*) FROM ai_agent_tasks t WHERE t.status = ''queued''%1$s'
        '                  AND t.archived_at IS NULL AND (t.run_at IS NULL OR t.run_at <= $2)),'
        '  ''delayed'', (SELECT count(*) FROM ai_agent_tasks t WHERE t.status = ''queued''%1$s'
        '                  AND t.archived_at IS NULL AND t.run_at > $2))', org)
      INTO counts USING p_organization_id, p_now;
    EXECUTE format(
        'SELECT COALESCE(jsonb_agg(jsonb_build_object(''minute'', m.minute, ''completed'', m.completed,'
        '                                             ''failed'', m.failed) ORDER BY m.minute), ''[]''::jsonb)'
        '  FROM (SELECT f.minute, count(*) FILTER (WHERE f.outcome = ''completed'') AS completed,'
        '               count(*) FILTER (WHERE f.outcome = ''failed'') AS failed'
        '          FROM (SELECT date_trunc(''minute'', t.completed_at) AS minute, ''completed'' AS outcome'
        '                  FROM ai_agent_tasks t WHERE t.status = ''completed'' AND t.completed_at >= $2%1$s'
        '                UNION ALL'
        '                SELECT date_trunc(''minute'', t.failed_at), ''failed'''
        '                  FROM ai_agent_tasks t WHERE t.status = ''failed'' AND t.failed_at >= $2%1$s) f'
        '         GROUP BY f.minute) m', org)
      INTO minutes USING p_organization_id, p_hour_ago;
    EXECUTE format(
        'SELECT COALESCE(jsonb_object_agg(p.priority, p.n), ''{}''::jsonb)'
        '  FROM (SELECT t.priority, count(*) AS n FROM ai_agent_tasks t'
        '         WHERE t.status = ''queued'' AND t.archived_at IS NULL%1$s GROUP BY t.priority) p', org)
      INTO priorities USING p_organization_id;
    EXECUTE format(
        'SELECT COALESCE(jsonb_agg(jsonb_build_array(o.organization_id, o.n) ORDER BY o.n DESC,'
        '                          o.organization_id), ''[]''::jsonb)'
        '  FROM (SELECT t.organization_id, count(*) AS n FROM ai_agent_tasks t'
        '         WHERE t.status = ''queued'' AND t.archived_at IS NULL%1$s'
        '         GROUP BY t.organization_id ORDER BY n DESC, t.organization_id LIMIT $2) o', org)
      INTO organizations USING p_organization_id, p_top;
    EXECUTE format(
        'SELECT COALESCE(jsonb_agg(jsonb_build_object(''organization_id'', s.organization_id,'
        '                          ''today'', s.today::text, ''month'', s.month::text)'
        '                          ORDER BY s.month DESC, s.organization_id), ''[]''::jsonb)'
        '  FROM (SELECT r.organization_id,'
        '               COALESCE(SUM(r.cost_usd) FILTER (WHERE r.started_at >= $3), 0) AS today,'
        '               COALESCE(SUM(r.cost_usd), 0) AS month'
        '          FROM (SELECT r.started_at, r.cost_usd,'
        '                       (SELECT t.organization_id FROM ai_agent_tasks t WHERE t.id = r.task_id) AS organization_id'
        '                  FROM ai_agent_task_runs r WHERE r.started_at >= $2 AND r.cost_usd IS NOT NULL) r'
        '         WHERE TRUE%1$s'
        '         GROUP BY r.organization_id ORDER BY month DESC, r.organization_id LIMIT $4) s',
        replace(org, 't.organization_id', 'r.organization_id'))
      INTO spend USING p_organization_id, p_month_start, p_day_start, p_top;
    RETURN jsonb_build_object('counts', counts, 'per_minute', minutes, 'depth_by_priority', priorities,
                              'depth_by_organization', organizations, 'spend', spend);
END
$$;

-- Stop a schedule from firing, keeping its cron and time zone (next_run_at NULL: never due).
CREATE OR REPLACE FUNCTION agentq_disable_schedule(p_task_id uuid, p_now timestamptz)
RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
    UPDATE ai_agent_tasks SET next_run_at = NULL, updated_at = p_now
     WHERE id = p_task_id AND schedule_cron IS NOT NULL AND next_run_at IS NOT NULL
 RETURNING *
$$;

-- Let a disabled schedule fire again from p_next_run_at.
CREATE OR REPLACE FUNCTION agentq_enable_schedule(p_task_id uuid, p_next_run_at timestamptz, p_now timestamptz)
RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
    UPDATE ai_agent_tasks SET next_run_at = p_next_run_at, updated_at = p_now
     WHERE id = p_task_id AND schedule_cron IS NOT NULL AND next_run_at IS NULL
 RETURNING *
$$;

-- Fire a schedule out of turn, as agentq_fire_schedules fires it (a new firing: firing + 1, the previous
-- firing's step ledger deleted), keeping next_run_at; not while its previous run is still in flight (queued,
-- running or awaiting approval).
CREATE OR REPLACE FUNCTION agentq_fire_schedule_now(p_task_id uuid, p_now timestamptz)
RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
WITH fired AS (
    UPDATE ai_agent_tasks
       SET status = 'queued', last_run_at = p_now, queued_at = p_now, run_at = p_now, attempts = 0,
           stalled_count = 0, postponed_count = 0, error = NULL, cancel_requested_at = NULL,
           archived_at = NULL, updated_at = p_now, firing = firing + 1
     WHERE id = p_task_id AND schedule_cron IS NOT NULL
       AND status NOT IN ('queued', 'running', 'awaiting_approval')
 RETURNING *
), cleared AS (
    DELETE FROM ai_agent_task_steps s USING fired WHERE s.task_id = fired.id
)
SELECT * FROM fired
$$;

-- Only service_role (workers, which bypass RLS) may call the agentq_* worker functions.
DO $agentq$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = current_schema() AND p.proname LIKE 'agentq\_%'
           AND p.proname NOT IN ('agentq_is_member', 'agentq_touch_updated_at', 'agentq_guard_member_task_writes')
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

INSERT INTO agentq_schema_migrations (name) VALUES ('0007_dashboard') ON CONFLICT (name) DO NOTHING;
