"""Postgres-only SQL of migration ``0002_supabase``: Supabase roles, row-level security and the
``agentq_*`` functions the Supabase store calls through PostgREST's ``rpc``.

Every statement is idempotent (``CREATE OR REPLACE``, ``IF NOT EXISTS``, ``DROP … IF EXISTS`` then
``CREATE``), so the rendered file applies twice, and applies unchanged both to a Supabase project
(where ``auth.uid()`` and the ``anon``/``authenticated``/``service_role`` roles exist) and to a plain
PostgreSQL (where this creates a compatible ``auth.uid()`` shim and the roles, when allowed to).

The functions mirror the statements of :mod:`taskstore.postgres`; each is one compare-and-set keyed
by ids the caller generated (task id, run id) and the caller's ``now``.
"""

from __future__ import annotations

#: ``auth.uid()`` and Supabase's API roles, created only where missing (a plain PostgreSQL).
SUPABASE_COMPAT = r"""-- Supabase compatibility: on a plain PostgreSQL, create what Supabase provides.
DO $agentq$
DECLARE
    role_name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'auth' AND p.proname = 'uid'
    ) THEN
        -- The same definition as Supabase's: the "sub" claim of the request's JWT.
        EXECUTE $fn$
            CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $body$
                SELECT COALESCE(
                    NULLIF(current_setting('request.jwt.claim.sub', true), ''),
                    (NULLIF(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
                )::uuid
            $body$
        $fn$;
    END IF;
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                IF role_name = 'service_role' THEN
                    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT BYPASSRLS', role_name);
                ELSE
                    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', role_name);
                END IF;
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- another session created it meanwhile
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'agentq: cannot create role %, its grants are skipped', role_name;
            END;
        END IF;
    END LOOP;
END
$agentq$;"""

#: Who belongs to which organization: the basis of every row-level security policy.
MEMBERS_TABLE = """CREATE TABLE IF NOT EXISTS ai_organization_members (
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'member',
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (organization_id, user_id)
);

CREATE INDEX IF NOT EXISTS ai_organization_members_user_idx ON ai_organization_members (user_id);"""

#: ``updated_at`` maintenance: an UPDATE that leaves it unchanged (an application's own update)
#: gets the current time; the stores' updates, which set it to their clock, keep theirs.
UPDATED_AT_TRIGGER = """CREATE OR REPLACE FUNCTION agentq_touch_updated_at() RETURNS trigger
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
    FOR EACH ROW EXECUTE FUNCTION agentq_touch_updated_at();"""

#: Row-level security in Supabase's recommended style: a SECURITY DEFINER membership check
#: (``(SELECT auth.uid())`` evaluated once per statement) used by every policy.
ROW_LEVEL_SECURITY = """CREATE OR REPLACE FUNCTION agentq_is_member(org uuid) RETURNS boolean
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
    FOR SELECT USING (user_id = (SELECT auth.uid()));"""

_USAGE_ARGS = (
    "p_input_tokens integer DEFAULT 0, p_output_tokens integer DEFAULT 0,"
    " p_cached_input_tokens integer DEFAULT 0, p_reasoning_tokens integer DEFAULT 0,"
    " p_cost_usd numeric DEFAULT NULL, p_transcript jsonb DEFAULT NULL"
)
_TASK_USAGE = (
    "input_tokens = input_tokens + p_input_tokens, output_tokens = output_tokens + p_output_tokens,"
    " cached_input_tokens = cached_input_tokens + p_cached_input_tokens,"
    " reasoning_tokens = reasoning_tokens + p_reasoning_tokens,"
    " cost_usd = cost_usd + COALESCE(p_cost_usd, 0)"
)
_RUN_USAGE = (
    "input_tokens = p_input_tokens, output_tokens = p_output_tokens,"
    " cached_input_tokens = p_cached_input_tokens, reasoning_tokens = p_reasoning_tokens,"
    " cost_usd = p_cost_usd, transcript = p_transcript"
)

#: The functions :class:`taskstore.supabase.SupabaseTaskStore` calls; workers only (service role).
FUNCTIONS = f"""CREATE OR REPLACE FUNCTION agentq_schema_version() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT COALESCE(jsonb_agg(name ORDER BY name), '[]'::jsonb) FROM agentq_schema_migrations
$$;

-- queued -> running: counts an attempt, opens run p_run_id, returns {{"task", "agent"}} (NULL: lost race).
CREATE OR REPLACE FUNCTION agentq_claim(
    p_task_id uuid, p_run_id uuid, p_worker_id text, p_lease_until timestamptz, p_now timestamptz,
    p_max_running_in_org integer DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    t ai_agent_tasks;
    a ai_agents;
    org uuid;
BEGIN
    IF p_max_running_in_org IS NOT NULL THEN
        SELECT organization_id INTO org FROM ai_agent_tasks WHERE id = p_task_id AND status = 'queued';
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- Serialise the organization's claims; the count below runs after the lock (a fresh snapshot
        -- per statement under READ COMMITTED), so the cap holds under concurrency.
        PERFORM pg_advisory_xact_lock(hashtext(org::text));
        IF (SELECT count(*) FROM ai_agent_tasks WHERE organization_id = org AND status = 'running')
           >= p_max_running_in_org THEN
            RETURN NULL;
        END IF;
    END IF;
    UPDATE ai_agent_tasks
       SET status = 'running', attempts = attempts + 1, current_run_id = p_run_id,
           worker_id = p_worker_id, lease_expires_at = p_lease_until,
           started_at = p_now, run_at = NULL, updated_at = p_now
     WHERE id = p_task_id AND status = 'queued'
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO ai_agent_task_runs (id, task_id, attempt, status, worker_id, started_at)
    VALUES (p_run_id, t.id, t.attempts, 'running', p_worker_id, p_now);
    SELECT * INTO a FROM ai_agents WHERE id = t.agent_id;
    RETURN jsonb_build_object('task', to_jsonb(t), 'agent', CASE WHEN FOUND THEN to_jsonb(a) END);
END
$$;

-- running -> p_status (completed | failed | queued | cancelled) for run p_run_id, which ends p_run_status.
CREATE OR REPLACE FUNCTION agentq_finish(
    p_task_id uuid, p_run_id uuid, p_status text, p_run_status text, p_now timestamptz,
    p_error text DEFAULT NULL, p_stacktrace text DEFAULT NULL, p_result jsonb DEFAULT NULL,
    p_retry_at timestamptz DEFAULT NULL, {_USAGE_ARGS}
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    IF p_status NOT IN ('completed', 'failed', 'queued', 'cancelled') THEN
        RAISE EXCEPTION 'agentq_finish: invalid status %', p_status USING ERRCODE = '22023';
    END IF;
    UPDATE ai_agent_tasks
       SET status = p_status,
           completed_at = CASE WHEN p_status = 'completed' THEN p_now ELSE completed_at END,
           failed_at = CASE WHEN p_status = 'failed' THEN p_now ELSE failed_at END,
           queued_at = CASE WHEN p_status = 'queued' THEN p_now ELSE queued_at END,
           error = p_error, result = COALESCE(p_result, result), run_at = p_retry_at,
           archived_at = NULL, updated_at = p_now, worker_id = NULL, lease_expires_at = NULL,
           {_TASK_USAGE}
     WHERE id = p_task_id AND status = 'running' AND current_run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE ai_agent_task_runs
       SET status = p_run_status, finished_at = p_now, error = p_error, stacktrace = p_stacktrace,
           {_RUN_USAGE}
     WHERE id = p_run_id;
    RETURN TRUE;
END
$$;

-- running -> queued until p_run_at without consuming the attempt; run p_run_id ends postponed.
CREATE OR REPLACE FUNCTION agentq_postpone(
    p_task_id uuid, p_run_id uuid, p_reason text, p_run_at timestamptz, p_now timestamptz, {_USAGE_ARGS}
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    UPDATE ai_agent_tasks
       SET status = 'queued', attempts = attempts - 1, postponed_count = postponed_count + 1,
           run_at = p_run_at, queued_at = p_now, worker_id = NULL, lease_expires_at = NULL,
           updated_at = p_now, {_TASK_USAGE}
     WHERE id = p_task_id AND status = 'running' AND current_run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE ai_agent_task_runs
       SET status = 'postponed', finished_at = p_now, error = p_reason, {_RUN_USAGE}
     WHERE id = p_run_id;
    RETURN TRUE;
END
$$;

-- Running tasks whose lease expired: re-queued, or failed past p_max_stalled_count; runs end stalled.
CREATE OR REPLACE FUNCTION agentq_recover_stalled(
    p_now timestamptz, p_max_stalled_count integer, p_error text, p_limit_error text,
    p_limit integer DEFAULT 100
) RETURNS jsonb LANGUAGE sql SET search_path = public AS $$
WITH expired AS (
    SELECT id FROM ai_agent_tasks
     WHERE status = 'running' AND lease_expires_at < p_now
     ORDER BY lease_expires_at, id
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
), recovered AS (
    UPDATE ai_agent_tasks t
       SET stalled_count = t.stalled_count + 1,
           status = CASE WHEN t.stalled_count + 1 > p_max_stalled_count THEN 'failed' ELSE 'queued' END,
           attempts = CASE WHEN t.stalled_count + 1 > p_max_stalled_count THEN t.attempts
                           ELSE t.attempts - 1 END,
           error = CASE WHEN t.stalled_count + 1 > p_max_stalled_count THEN p_limit_error ELSE p_error END,
           failed_at = CASE WHEN t.stalled_count + 1 > p_max_stalled_count THEN p_now ELSE t.failed_at END,
           run_at = CASE WHEN t.stalled_count + 1 > p_max_stalled_count THEN NULL ELSE p_now END,
           queued_at = CASE WHEN t.stalled_count + 1 > p_max_stalled_count THEN t.queued_at ELSE p_now END,
           worker_id = NULL, lease_expires_at = NULL, updated_at = p_now
      FROM expired
     WHERE t.id = expired.id AND t.status = 'running'
 RETURNING t.id, t.status, t.stalled_count, t.attempts, t.agent_id, t.current_run_id
), runs AS (
    UPDATE ai_agent_task_runs r SET status = 'stalled', finished_at = p_now, error = p_error
      FROM recovered WHERE r.id = recovered.current_run_id
)
SELECT COALESCE(jsonb_agg(jsonb_build_object(
           'id', recovered.id, 'status', recovered.status, 'stalled_count', recovered.stalled_count,
           'attempts', recovered.attempts, 'kind', a.kind) ORDER BY recovered.id), '[]'::jsonb)
  FROM recovered LEFT JOIN ai_agents a ON a.id = recovered.agent_id
$$;

-- Fire each schedule whose next_run_at still equals its due time (two schedulers never fire one twice).
CREATE OR REPLACE FUNCTION agentq_fire_schedules(
    p_task_ids uuid[], p_due timestamptz[], p_next timestamptz[], p_now timestamptz
) RETURNS jsonb LANGUAGE sql SET search_path = public AS $$
WITH firing AS (
    SELECT * FROM unnest(p_task_ids, p_due, p_next) AS f(id, due, next)
), target AS (
    SELECT t.id, f.next, t.status IN ('queued', 'running') AS busy
      FROM ai_agent_tasks t JOIN firing f ON f.id = t.id
     WHERE t.schedule_cron IS NOT NULL AND t.next_run_at = f.due
       FOR UPDATE OF t
), fired AS (
    UPDATE ai_agent_tasks t
       SET next_run_at = target.next, updated_at = p_now,
           status = CASE WHEN target.busy THEN t.status ELSE 'queued' END,
           last_run_at = CASE WHEN target.busy THEN t.last_run_at ELSE p_now END,
           queued_at = CASE WHEN target.busy THEN t.queued_at ELSE p_now END,
           run_at = CASE WHEN target.busy THEN t.run_at ELSE p_now END,
           attempts = CASE WHEN target.busy THEN t.attempts ELSE 0 END,
           stalled_count = CASE WHEN target.busy THEN t.stalled_count ELSE 0 END,
           postponed_count = CASE WHEN target.busy THEN t.postponed_count ELSE 0 END,
           error = CASE WHEN target.busy THEN t.error ELSE NULL END,
           cancel_requested_at = CASE WHEN target.busy THEN t.cancel_requested_at ELSE NULL END,
           archived_at = CASE WHEN target.busy THEN t.archived_at ELSE NULL END
      FROM target WHERE t.id = target.id
 RETURNING t.id, t.agent_id, t.priority, t.organization_id, target.busy
)
SELECT COALESCE(jsonb_agg(jsonb_build_object(
           'id', fired.id, 'priority', fired.priority, 'organization_id', fired.organization_id,
           'busy', fired.busy, 'kind', a.kind)
           ORDER BY fired.id), '[]'::jsonb)
  FROM fired LEFT JOIN ai_agents a ON a.id = fired.agent_id
$$;

-- Ad-hoc tasks still pending since before p_before, oldest first, with their agent's kind.
CREATE OR REPLACE FUNCTION agentq_find_pending(p_before timestamptz, p_limit integer DEFAULT 500)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = public AS $$
SELECT COALESCE(jsonb_agg(jsonb_build_object('id', w.id, 'since', w.since, 'kind', w.kind)
           ORDER BY w.since, w.id), '[]'::jsonb)
  FROM (
    SELECT t.id, t.created_at AS since, a.kind
      FROM ai_agent_tasks t LEFT JOIN ai_agents a ON a.id = t.agent_id
     WHERE t.status = 'pending' AND t.created_at < p_before AND t.task_type = 'adhoc'
     ORDER BY t.created_at, t.id LIMIT p_limit
  ) w
$$;

-- Tasks queued since before p_before (their message may be lost), oldest first, with their agent's kind.
CREATE OR REPLACE FUNCTION agentq_find_queued(p_before timestamptz, p_limit integer DEFAULT 1000)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = public AS $$
SELECT COALESCE(jsonb_agg(jsonb_build_object('id', w.id, 'since', w.since, 'kind', w.kind)
           ORDER BY w.since, w.id), '[]'::jsonb)
  FROM (
    SELECT t.id, t.queued_at AS since, a.kind
      FROM ai_agent_tasks t LEFT JOIN ai_agents a ON a.id = t.agent_id
     WHERE t.status = 'queued' AND t.queued_at < p_before
     ORDER BY t.queued_at, t.id LIMIT p_limit
  ) w
$$;

-- Exact queue counts in one consistent read.
CREATE OR REPLACE FUNCTION agentq_queue_counts(p_now timestamptz) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public AS $$
SELECT jsonb_build_object(
    'waiting', count(*) FILTER (WHERE status = 'queued' AND (run_at IS NULL OR run_at <= p_now)),
    'delayed', count(*) FILTER (WHERE status = 'queued' AND run_at > p_now),
    'active', count(*) FILTER (WHERE status = 'running'),
    'completed', count(*) FILTER (WHERE status = 'completed' AND archived_at IS NULL),
    'failed', count(*) FILTER (WHERE status = 'failed' AND archived_at IS NULL))
  FROM ai_agent_tasks WHERE status IN ('queued', 'running', 'completed', 'failed')
$$;

-- USD spent on an organization's runs started since p_since, as exact decimal text.
CREATE OR REPLACE FUNCTION agentq_organization_spend(p_organization_id uuid, p_since timestamptz)
RETURNS text LANGUAGE sql STABLE SET search_path = public AS $$
SELECT COALESCE(SUM(r.cost_usd), 0)::text
  FROM ai_agent_task_runs r JOIN ai_agent_tasks t ON t.id = r.task_id
 WHERE t.organization_id = p_organization_id AND r.started_at >= p_since
$$;

-- Archive finished jobs outside the retention policy and delete their runs (task rows are kept).
CREATE OR REPLACE FUNCTION agentq_cleanup(
    p_now timestamptz, p_completed_cutoff timestamptz, p_completed_keep integer,
    p_failed_cutoff timestamptz, p_failed_keep integer
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    completed integer;
    failed integer;
    deleted integer;
BEGIN
    UPDATE ai_agent_tasks SET archived_at = p_now, updated_at = p_now
     WHERE id IN (
        SELECT id FROM (
            SELECT id, completed_at AS finished,
                   row_number() OVER (ORDER BY completed_at DESC, id DESC) AS rank
              FROM ai_agent_tasks
             WHERE status = 'completed' AND archived_at IS NULL AND schedule_cron IS NULL
        ) ranked
         WHERE rank > p_completed_keep OR finished < p_completed_cutoff
     );
    GET DIAGNOSTICS completed = ROW_COUNT;
    UPDATE ai_agent_tasks SET archived_at = p_now, updated_at = p_now
     WHERE id IN (
        SELECT id FROM (
            SELECT id, failed_at AS finished,
                   row_number() OVER (ORDER BY failed_at DESC, id DESC) AS rank
              FROM ai_agent_tasks
             WHERE status = 'failed' AND archived_at IS NULL AND schedule_cron IS NULL
        ) ranked
         WHERE rank > p_failed_keep OR finished < p_failed_cutoff
     );
    GET DIAGNOSTICS failed = ROW_COUNT;
    DELETE FROM ai_agent_task_runs
     WHERE task_id IN (SELECT id FROM ai_agent_tasks WHERE archived_at = p_now);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN jsonb_build_object('archived_completed', completed, 'archived_failed', failed,
                              'deleted_runs', deleted);
END
$$;"""

#: Privileges: members (``authenticated``) read agents/runs and read, create and update their
#: organizations' tasks under RLS; ``anon`` gets nothing; only ``service_role`` (workers, which
#: bypass RLS) may call the ``agentq_*`` worker functions. Roles that do not exist are skipped.
GRANTS = r"""DO $agentq$
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
$agentq$;"""

#: Migration ``0003_bulk_enqueue``: the functions behind ``AgentTaskQueue.add_tasks`` on Supabase, each one
#: round trip for a whole batch (the ids travel in the request body, not the URL).
BULK_ENQUEUE_FUNCTIONS = """CREATE OR REPLACE FUNCTION agentq_get_tasks(p_task_ids uuid[])
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
$$;"""

#: Names of the functions the Supabase store calls, for documentation and tests.
RPC_FUNCTIONS = (
    "agentq_schema_version",
    "agentq_claim",
    "agentq_finish",
    "agentq_postpone",
    "agentq_recover_stalled",
    "agentq_fire_schedules",
    "agentq_find_pending",
    "agentq_find_queued",
    "agentq_queue_counts",
    "agentq_organization_spend",
    "agentq_cleanup",
    "agentq_get_tasks",
    "agentq_mark_queued_many",
    "agentq_revert_queued_many",
)

#: Migration ``0004_hardening``: the columns of ``ai_agent_tasks`` a member (``authenticated``) may
#: write; ``status`` and ``task_type`` only as ``'pending'`` and ``'adhoc'``, on insert. Everything else
#: (attempts, max_attempts, schedules, leases, results, usage, cancel fields, time stamps) belongs to
#: the workers and the application's service-role calls: a schedule is made by
#: ``create_task(schedule=…)``, which validates the cron expression and time zone.
MEMBER_INSERT_COLUMNS = (
    "id",
    "agent_id",
    "organization_id",
    "title",
    "description",
    "context",
    "priority",
    "status",
    "task_type",
)
MEMBER_UPDATE_COLUMNS = ("agent_id", "organization_id", "title", "description", "context", "priority")

#: The columns a member's update may change (``updated_at`` is kept by its trigger), as SQL.
_MEMBER_OWNED = "ARRAY[{}]".format(", ".join(f"'{c}'" for c in (*MEMBER_UPDATE_COLUMNS, "updated_at")))

_AGENT_OF_TASK_ORG = """EXISTS (
            SELECT 1 FROM ai_agents a
             WHERE a.id = ai_agent_tasks.agent_id AND a.organization_id = ai_agent_tasks.organization_id
        )"""

#: Members' writes of ``ai_agent_tasks``: column privileges, policies whose WITH CHECK holds the agent to
#: the task's organization, and a trigger for roles under row-level security (``authenticated``,
#: ``anon``) that refuses a non-pending insert, a foreign agent, and any change to a worker-owned
#: column. ``service_role`` (BYPASSRLS) and the table owner are not under row-level security, so the
#: trigger's WHEN clause skips them without calling the function.
MEMBER_TASK_WRITES = f"""DROP POLICY IF EXISTS agentq_members_create_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_create_tasks ON ai_agent_tasks
    FOR INSERT WITH CHECK (
        status = 'pending'
        AND agentq_is_member(organization_id)
        AND {_AGENT_OF_TASK_ORG}
    );

DROP POLICY IF EXISTS agentq_members_update_tasks ON ai_agent_tasks;
CREATE POLICY agentq_members_update_tasks ON ai_agent_tasks
    FOR UPDATE USING (agentq_is_member(organization_id))
    WITH CHECK (
        agentq_is_member(organization_id)
        AND {_AGENT_OF_TASK_ORG}
    );

CREATE OR REPLACE FUNCTION agentq_guard_member_task_writes() RETURNS trigger
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    member_owned constant text[] := {_MEMBER_OWNED};
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
        GRANT INSERT ({", ".join(MEMBER_INSERT_COLUMNS)})
            ON ai_agent_tasks TO authenticated;
        GRANT UPDATE ({", ".join(MEMBER_UPDATE_COLUMNS)})
            ON ai_agent_tasks TO authenticated;
    END IF;
END
$agentq$;"""

#: The database defaults of a new agent's provider and model: a real provider, not the demo's
#: ``scripted`` one (which a worker runs only with ``AGENTQ_ALLOW_SCRIPTED=true``).
AGENT_PROVIDER_DEFAULTS = """ALTER TABLE ai_agents ALTER COLUMN provider SET DEFAULT 'openai';
ALTER TABLE ai_agents ALTER COLUMN model SET DEFAULT 'gpt-4o-mini';"""
