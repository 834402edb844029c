-- The agentq_* functions: every transition and read of the Postgres family, written once.
-- PostgresTaskStore calls them over psycopg and SupabaseTaskStore over PostgREST's rpc, both through
-- taskstore/sql_store.py. Installed by the latest migration that changed them (0010_status_tests; the copies
-- earlier migrations installed are in taskstore/sql/history/, and 0007_dashboard added its own functions
-- from history/0007_dashboard_functions.sql). CREATE OR REPLACE: applies twice.
-- Each write is one compare-and-set keyed by ids the caller generated and the caller's p_now.
-- A statement that finds tasks by id tests their status with IS NOT DISTINCT FROM (or (...) IS TRUE), which no
-- index can serve, never with a bare "status = ...": beside "id = ANY(...)" that lets a planner whose
-- statistics are stale (a burst of new tasks) scan a status's partial index, or the dashboard's (status,
-- created_at, id) one, across every task in that status, on every claim or enqueue. Measured with 8,000
-- queued tasks: 2.6 ms of server CPU per claim of two, against 1.3 ms found by primary key.
-- Rules: one CREATE OR REPLACE FUNCTION per name; parameters one per "p_name type" (no commas in types).

CREATE OR REPLACE FUNCTION agentq_schema_version() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT COALESCE(jsonb_agg(name ORDER BY name), '[]'::jsonb) FROM agentq_schema_migrations
$$;

-- queued -> running: counts an attempt, opens run p_run_id, returns {"task", "agent", "steps"} (NULL: lost
-- race); "steps" is the step ledger of the task's current firing, so a resumed run needs no other read.
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
        SELECT organization_id INTO org FROM ai_agent_tasks WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'queued';
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
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'queued'
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO ai_agent_task_runs (id, task_id, attempt, status, worker_id, started_at)
    VALUES (p_run_id, t.id, t.attempts, 'running', p_worker_id, p_now);
    SELECT * INTO a FROM ai_agents WHERE id = t.agent_id;
    RETURN jsonb_build_object('task', to_jsonb(t), 'agent', CASE WHEN FOUND THEN to_jsonb(a) END,
        'steps', (SELECT COALESCE(jsonb_agg(to_jsonb(s) ORDER BY s.seq), '[]'::jsonb) FROM ai_agent_task_steps s
                   WHERE s.task_id = t.id AND s.firing = t.firing));
END
$$;

-- running -> p_status (completed | failed | queued | cancelled) for run p_run_id, which ends p_run_status.
-- p_step: the run's last step (its final answer), recorded in the same transaction (agentq_record_step).
CREATE OR REPLACE FUNCTION agentq_finish(
    p_task_id uuid, p_run_id uuid, p_status text, p_run_status text, p_now timestamptz,
    p_error text DEFAULT NULL, p_stacktrace text DEFAULT NULL, p_result jsonb DEFAULT NULL,
    p_retry_at timestamptz DEFAULT NULL, p_input_tokens integer DEFAULT 0, p_output_tokens integer DEFAULT 0, p_cached_input_tokens integer DEFAULT 0, p_reasoning_tokens integer DEFAULT 0, p_cost_usd numeric DEFAULT NULL, p_transcript jsonb DEFAULT NULL,
    p_step jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    IF p_status NOT IN ('completed', 'failed', 'queued', 'cancelled') THEN
        RAISE EXCEPTION 'agentq_finish: invalid status %', p_status USING ERRCODE = '22023';
    END IF;
    IF p_step IS NOT NULL THEN
        PERFORM agentq_record_step(p_task_id, p_run_id, p_step);
    END IF;
    UPDATE ai_agent_tasks
       SET status = p_status,
           completed_at = CASE WHEN p_status = 'completed' THEN p_now ELSE completed_at END,
           failed_at = CASE WHEN p_status = 'failed' THEN p_now ELSE failed_at END,
           queued_at = CASE WHEN p_status = 'queued' THEN p_now ELSE queued_at END,
           error = p_error, result = COALESCE(p_result, result), run_at = p_retry_at,
           archived_at = NULL, updated_at = p_now, worker_id = NULL, lease_expires_at = NULL,
           input_tokens = input_tokens + p_input_tokens, output_tokens = output_tokens + p_output_tokens, cached_input_tokens = cached_input_tokens + p_cached_input_tokens, reasoning_tokens = reasoning_tokens + p_reasoning_tokens, cost_usd = cost_usd + COALESCE(p_cost_usd, 0)
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE ai_agent_task_runs
       SET status = p_run_status, finished_at = p_now, error = p_error, stacktrace = p_stacktrace,
           input_tokens = p_input_tokens, output_tokens = p_output_tokens, cached_input_tokens = p_cached_input_tokens, reasoning_tokens = p_reasoning_tokens, cost_usd = p_cost_usd, transcript = p_transcript
     WHERE id = p_run_id;
    RETURN TRUE;
END
$$;

-- running -> queued until p_run_at without consuming the attempt; run p_run_id ends postponed.
CREATE OR REPLACE FUNCTION agentq_postpone(
    p_task_id uuid, p_run_id uuid, p_reason text, p_run_at timestamptz, p_now timestamptz, p_input_tokens integer DEFAULT 0, p_output_tokens integer DEFAULT 0, p_cached_input_tokens integer DEFAULT 0, p_reasoning_tokens integer DEFAULT 0, p_cost_usd numeric DEFAULT NULL, p_transcript jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    UPDATE ai_agent_tasks
       SET status = 'queued', attempts = attempts - 1, postponed_count = postponed_count + 1,
           run_at = p_run_at, queued_at = p_now, worker_id = NULL, lease_expires_at = NULL,
           updated_at = p_now, input_tokens = input_tokens + p_input_tokens, output_tokens = output_tokens + p_output_tokens, cached_input_tokens = cached_input_tokens + p_cached_input_tokens, reasoning_tokens = reasoning_tokens + p_reasoning_tokens, cost_usd = cost_usd + COALESCE(p_cost_usd, 0)
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE ai_agent_task_runs
       SET status = 'postponed', finished_at = p_now, error = p_reason, input_tokens = p_input_tokens, output_tokens = p_output_tokens, cached_input_tokens = p_cached_input_tokens, reasoning_tokens = p_reasoning_tokens, cost_usd = p_cost_usd, transcript = p_transcript
     WHERE id = p_run_id;
    RETURN TRUE;
END
$$;

-- Running tasks whose lease expired: re-queued, or failed past p_max_stalled_count; runs end stalled.
-- A stalled run's usage is what its completed model calls recorded in the step ledger (its worker died
-- before it could write any): on the run, and added to the task.
CREATE OR REPLACE FUNCTION agentq_recover_stalled(
    p_now timestamptz, p_max_stalled_count integer, p_error text, p_limit_error text,
    p_limit integer DEFAULT 100
) RETURNS jsonb LANGUAGE sql SET search_path = public AS $$
WITH expired AS (
    SELECT id, current_run_id FROM ai_agent_tasks
     WHERE status = 'running' AND lease_expires_at < p_now
     ORDER BY lease_expires_at, id
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
), spent AS (
    SELECT e.id, e.current_run_id,
           COALESCE(sum(s.input_tokens), 0)::integer AS input_tokens,
           COALESCE(sum(s.output_tokens), 0)::integer AS output_tokens,
           COALESCE(sum((s.output -> 'usage' ->> 'cached_input_tokens')::integer), 0)::integer
               AS cached_input_tokens,
           COALESCE(sum((s.output -> 'usage' ->> 'reasoning_tokens')::integer), 0)::integer AS reasoning_tokens,
           CASE WHEN count(s.id) > 0 AND bool_and(s.cost_usd IS NOT NULL) THEN sum(s.cost_usd) END AS cost_usd
      FROM expired e
      LEFT JOIN ai_agent_task_steps s
        ON s.task_id = e.id AND s.run_id = e.current_run_id AND s.kind = 'llm' AND s.status = 'completed'
     GROUP BY e.id, e.current_run_id
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
           worker_id = NULL, lease_expires_at = NULL, updated_at = p_now,
           input_tokens = t.input_tokens + spent.input_tokens,
           output_tokens = t.output_tokens + spent.output_tokens,
           cached_input_tokens = t.cached_input_tokens + spent.cached_input_tokens,
           reasoning_tokens = t.reasoning_tokens + spent.reasoning_tokens,
           cost_usd = t.cost_usd + COALESCE(spent.cost_usd, 0)
      FROM spent
     WHERE t.id = spent.id AND t.status IS NOT DISTINCT FROM 'running'
 RETURNING t.id, t.status, t.stalled_count, t.attempts, t.agent_id, spent.current_run_id,
           spent.input_tokens, spent.output_tokens, spent.cached_input_tokens, spent.reasoning_tokens,
           spent.cost_usd
), runs AS (
    UPDATE ai_agent_task_runs r
       SET status = 'stalled', finished_at = p_now, error = p_error,
           input_tokens = recovered.input_tokens, output_tokens = recovered.output_tokens,
           cached_input_tokens = recovered.cached_input_tokens,
           reasoning_tokens = recovered.reasoning_tokens, cost_usd = recovered.cost_usd
      FROM recovered WHERE r.id = recovered.current_run_id
)
SELECT COALESCE(jsonb_agg(jsonb_build_object(
           'id', recovered.id, 'status', recovered.status, 'stalled_count', recovered.stalled_count,
           'attempts', recovered.attempts, 'kind', a.kind) ORDER BY recovered.id), '[]'::jsonb)
  FROM recovered LEFT JOIN ai_agents a ON a.id = recovered.agent_id
$$;

-- Fire each schedule whose next_run_at still equals its due time (two schedulers never fire one twice).
-- A firing that starts is a new firing: firing + 1, and the step ledger of the previous one is deleted.
CREATE OR REPLACE FUNCTION agentq_fire_schedules(
    p_task_ids uuid[], p_due timestamptz[], p_next timestamptz[], p_now timestamptz
) RETURNS jsonb LANGUAGE sql SET search_path = public AS $$
WITH firing AS (
    SELECT * FROM unnest(p_task_ids, p_due, p_next) AS f(id, due, next)
), target AS (
    SELECT t.id, f.next, t.status IN ('queued', 'running', 'awaiting_approval') AS busy
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
           archived_at = CASE WHEN target.busy THEN t.archived_at ELSE NULL END,
           firing = CASE WHEN target.busy THEN t.firing ELSE t.firing + 1 END
      FROM target WHERE t.id = target.id
 RETURNING t.id, t.agent_id, t.priority, t.organization_id, target.busy
), cleared AS (
    DELETE FROM ai_agent_task_steps s USING fired WHERE s.task_id = fired.id AND NOT fired.busy
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

-- Exact queue counts in one consistent read (only finished tasks are ever archived: the live index).
CREATE OR REPLACE FUNCTION agentq_queue_counts(p_now timestamptz) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public AS $$
SELECT jsonb_build_object(
    'waiting', count(*) FILTER (WHERE status = 'queued' AND (run_at IS NULL OR run_at <= p_now)),
    'delayed', count(*) FILTER (WHERE status = 'queued' AND run_at > p_now),
    'active', count(*) FILTER (WHERE status = 'running'),
    'completed', count(*) FILTER (WHERE status = 'completed'),
    'failed', count(*) FILTER (WHERE status = 'failed'),
    'awaiting_approval', count(*) FILTER (WHERE status = 'awaiting_approval'))
  FROM ai_agent_tasks WHERE status IN ('queued', 'running', 'completed', 'failed', 'awaiting_approval')
   AND archived_at IS NULL
$$;

-- USD spent on an organization's runs started since p_since, as exact decimal text.
CREATE OR REPLACE FUNCTION agentq_organization_spend(p_organization_id uuid, p_since timestamptz)
RETURNS text LANGUAGE sql STABLE SET search_path = public AS $$
SELECT COALESCE(SUM(r.cost_usd), 0)::text
  FROM ai_agent_task_runs r JOIN ai_agent_tasks t ON t.id = r.task_id
 WHERE t.organization_id = p_organization_id AND r.started_at >= p_since
$$;

-- Archive finished jobs outside the retention policy and delete their runs and steps (task rows are kept).
CREATE OR REPLACE FUNCTION agentq_cleanup(
    p_now timestamptz, p_completed_cutoff timestamptz, p_completed_keep integer,
    p_failed_cutoff timestamptz, p_failed_keep integer
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    completed integer;
    failed integer;
    deleted integer;
    deleted_steps integer;
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
    DELETE FROM ai_agent_task_steps
     WHERE task_id IN (SELECT id FROM ai_agent_tasks WHERE archived_at = p_now);
    GET DIAGNOSTICS deleted_steps = ROW_COUNT;
    RETURN jsonb_build_object('archived_completed', completed, 'archived_failed', failed,
                              'deleted_runs', deleted, 'deleted_steps', deleted_steps);
END
$$;

-- PL/pgSQL (here and below) keeps its plan for the session: the hot reads cost less than SQL functions.
CREATE OR REPLACE FUNCTION agentq_get_tasks(p_task_ids uuid[])
RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql STABLE SET search_path = public AS $$
BEGIN
    RETURN QUERY SELECT * FROM ai_agent_tasks WHERE id = ANY(p_task_ids);
END
$$;

-- pending -> queued for every task of p_task_ids or, if any is missing or not pending, for none (no rows).
-- The rows are locked in id order (two batches never deadlock) and re-checked after any wait.
CREATE OR REPLACE FUNCTION agentq_mark_queued_many(
    p_task_ids uuid[], p_priority integer, p_run_at timestamptz, p_now timestamptz
) RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    RETURN QUERY
    WITH target AS (
        SELECT id FROM ai_agent_tasks
         WHERE id = ANY(p_task_ids) AND status IS NOT DISTINCT FROM 'pending'
         ORDER BY id
           FOR UPDATE
    )
    UPDATE ai_agent_tasks t
       SET status = 'queued', priority = COALESCE(p_priority, t.priority), run_at = p_run_at,
           queued_at = p_now, archived_at = NULL, updated_at = p_now
      FROM target
     WHERE t.id = target.id AND (SELECT count(*) FROM target) = cardinality(p_task_ids)
 RETURNING t.*;
END
$$;

-- pending -> queued for one task (the single-row form of agentq_mark_queued_many; a bare send).
-- PL/pgSQL keeps the plan for the session: half the cost of the bulk function for one row.
CREATE OR REPLACE FUNCTION agentq_mark_queued(
    p_task_id uuid, p_priority integer, p_run_at timestamptz, p_now timestamptz
) RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    RETURN QUERY
    UPDATE ai_agent_tasks t
       SET status = 'queued', priority = COALESCE(p_priority, t.priority), run_at = p_run_at,
           queued_at = p_now, archived_at = NULL, updated_at = p_now
     WHERE t.id = p_task_id AND t.status IS NOT DISTINCT FROM 'pending'
 RETURNING t.*;
END
$$;

-- add_task's one statement: pending -> queued only if the task's agent exists, is active and has a kind
-- of p_kinds (those with an actor). Returns {"task", "kind"}, or NULL when nothing changed (the caller
-- reads why: missing task, not pending, agent gone or inactive, kind without an actor).
CREATE OR REPLACE FUNCTION agentq_queue_runnable_task(
    p_task_id uuid, p_kinds text[], p_priority integer, p_run_at timestamptz, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    queued jsonb;
BEGIN
    UPDATE ai_agent_tasks t
       SET status = 'queued', priority = COALESCE(p_priority, t.priority), run_at = p_run_at,
           queued_at = p_now, archived_at = NULL, updated_at = p_now
      FROM ai_agents a
     WHERE t.id = p_task_id AND t.status IS NOT DISTINCT FROM 'pending'
       AND a.id = t.agent_id AND a.is_active AND a.kind = ANY(p_kinds)
 RETURNING jsonb_build_object('task', to_jsonb(t), 'kind', a.kind) INTO queued;
    RETURN queued;
END
$$;

-- add_tasks's one statement: pending -> queued for every task of p_task_ids whose agent is active and
-- has a kind of p_kinds or, if any is missing, not pending or not runnable, for none. Returns a list of
-- {"task", "kind"} (empty: nothing changed; the caller reads why). Rows are locked in id order.
CREATE OR REPLACE FUNCTION agentq_queue_runnable_tasks(
    p_task_ids uuid[], p_kinds text[], p_priority integer, p_run_at timestamptz, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    queued jsonb;
BEGIN
    WITH target AS (
        SELECT t.id, a.kind FROM ai_agent_tasks t JOIN ai_agents a ON a.id = t.agent_id
         WHERE t.id = ANY(p_task_ids) AND t.status IS NOT DISTINCT FROM 'pending' AND a.is_active AND a.kind = ANY(p_kinds)
         ORDER BY t.id
           FOR UPDATE OF t
    ), updated AS (
        UPDATE ai_agent_tasks t
           SET status = 'queued', priority = COALESCE(p_priority, t.priority), run_at = p_run_at,
               queued_at = p_now, archived_at = NULL, updated_at = p_now
          FROM target
         WHERE t.id = target.id AND (SELECT count(*) FROM target) = cardinality(p_task_ids)
     RETURNING jsonb_build_object('task', to_jsonb(t), 'kind', target.kind) AS item
    )
    SELECT COALESCE(jsonb_agg(item), '[]'::jsonb) INTO queued FROM updated;
    RETURN queued;
END
$$;

-- queued -> pending for the tasks of one enqueue (made at p_queued_at) that the broker refused.
CREATE OR REPLACE FUNCTION agentq_revert_queued_many(
    p_task_ids uuid[], p_queued_at timestamptz, p_now timestamptz
) RETURNS integer LANGUAGE sql SET search_path = public AS $$
WITH reverted AS (
    UPDATE ai_agent_tasks SET status = 'pending', run_at = NULL, queued_at = NULL, updated_at = p_now
     WHERE id = ANY(p_task_ids) AND status IS NOT DISTINCT FROM 'queued' AND queued_at = p_queued_at
 RETURNING id
)
SELECT count(*)::integer FROM reverted
$$;

-- Reads of single rows and lists.
CREATE OR REPLACE FUNCTION agentq_get_agent(p_agent_id uuid)
RETURNS SETOF ai_agents LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT * FROM ai_agents WHERE id = p_agent_id
$$;

CREATE OR REPLACE FUNCTION agentq_get_runs(p_task_id uuid)
RETURNS SETOF ai_agent_task_runs LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT * FROM ai_agent_task_runs WHERE task_id = p_task_id ORDER BY attempt, started_at
$$;

CREATE OR REPLACE FUNCTION agentq_cancel_requested(p_task_id uuid)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = public AS $$
BEGIN
    RETURN COALESCE((SELECT cancel_requested_at IS NOT NULL FROM ai_agent_tasks WHERE id = p_task_id), FALSE);
END
$$;

-- Dead-lettered tasks (failed, not archived), most recently failed first.
CREATE OR REPLACE FUNCTION agentq_list_failed(p_limit integer, p_offset integer)
RETURNS SETOF ai_agent_tasks LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT * FROM ai_agent_tasks WHERE status = 'failed' AND archived_at IS NULL
     ORDER BY failed_at DESC, id DESC LIMIT p_limit OFFSET p_offset
$$;

-- Tasks with a schedule, soonest next_run_at first.
CREATE OR REPLACE FUNCTION agentq_list_schedules(p_limit integer, p_offset integer)
RETURNS SETOF ai_agent_tasks LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT * FROM ai_agent_tasks WHERE schedule_cron IS NOT NULL
     ORDER BY next_run_at NULLS LAST, id LIMIT p_limit OFFSET p_offset
$$;

-- Schedules due at p_now, earliest first.
CREATE OR REPLACE FUNCTION agentq_due_schedules(p_now timestamptz, p_limit integer)
RETURNS SETOF ai_agent_tasks LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT * FROM ai_agent_tasks WHERE schedule_cron IS NOT NULL AND next_run_at <= p_now
     ORDER BY next_run_at, id LIMIT p_limit
$$;

-- Inserts: the rows' keys are the columns given (built from taskstore/schema.py); the rest take defaults.
CREATE OR REPLACE FUNCTION agentq_create_agent(p_agent jsonb)
RETURNS SETOF ai_agents LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO ai_agents (%1$s) SELECT %1$s FROM jsonb_populate_record(NULL::ai_agents, $1) RETURNING *',
        (SELECT string_agg(quote_ident(k), ', ') FROM jsonb_object_keys(p_agent) AS k)
    ) USING p_agent;
END
$$;

-- create_task's one statement: insert a pending task only if its agent exists, is active, belongs to
-- the task's organization and has a kind of p_kinds; no row when not (the caller reads why). The column
-- list is NewTask's columns plus status and timestamps (a unit test keeps it equal to what the store
-- sends); a static statement keeps its plan, which EXECUTE would re-plan on every call.
CREATE OR REPLACE FUNCTION agentq_create_runnable_task(p_task jsonb, p_kinds text[])
RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    RETURN QUERY
    INSERT INTO ai_agent_tasks (
        id, agent_id, organization_id, title, description, task_type, context, priority, max_attempts,
        schedule_timezone, status, created_at, updated_at
    )
    SELECT r.id, r.agent_id, r.organization_id, r.title, r.description, r.task_type, r.context, r.priority,
           r.max_attempts, r.schedule_timezone, r.status, r.created_at, r.updated_at
      FROM jsonb_populate_record(NULL::ai_agent_tasks, p_task) AS r
     WHERE EXISTS (
        SELECT 1 FROM ai_agents a
         WHERE a.id = r.agent_id AND a.is_active AND a.organization_id = r.organization_id
           AND a.kind = ANY(p_kinds)
     )
 RETURNING *;
END
$$;

-- All rows or none (one statement); a taken id raises unique_violation (23505). The same columns as
-- agentq_create_runnable_task (a static statement keeps its plan; a unit test checks both lists).
CREATE OR REPLACE FUNCTION agentq_create_tasks(p_tasks jsonb)
RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    RETURN QUERY
    INSERT INTO ai_agent_tasks (
        id, agent_id, organization_id, title, description, task_type, context, priority, max_attempts,
        schedule_timezone, status, created_at, updated_at
    )
    SELECT r.id, r.agent_id, r.organization_id, r.title, r.description, r.task_type, r.context, r.priority,
           r.max_attempts, r.schedule_timezone, r.status, r.created_at, r.updated_at
      FROM jsonb_populate_recordset(NULL::ai_agent_tasks, p_tasks) AS r
 RETURNING *;
END
$$;

-- Compare-and-set queued_at from p_queued_at to p_now: the winner re-sends the task's message.
CREATE OR REPLACE FUNCTION agentq_touch_queued(p_task_id uuid, p_queued_at timestamptz, p_now timestamptz)
RETURNS boolean LANGUAGE sql SET search_path = public AS $$
WITH touched AS (
    UPDATE ai_agent_tasks SET queued_at = p_now, updated_at = p_now
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'queued' AND queued_at = p_queued_at
 RETURNING id
)
SELECT EXISTS (SELECT 1 FROM touched)
$$;

-- Extend the leases of the (task, run) pairs a worker holds; returns the ids of the tasks renewed.
-- Idempotent (no condition on the old lease); run ids are unique, so a task matches only under its run.
CREATE OR REPLACE FUNCTION agentq_renew_leases(p_task_ids uuid[], p_run_ids uuid[], p_lease_until timestamptz)
RETURNS jsonb LANGUAGE sql SET search_path = public AS $$
WITH renewed AS (
    UPDATE ai_agent_tasks SET lease_expires_at = p_lease_until
     WHERE id = ANY(p_task_ids) AND current_run_id = ANY(p_run_ids) AND status IS NOT DISTINCT FROM 'running'
 RETURNING id
)
SELECT COALESCE(jsonb_agg(id), '[]'::jsonb) FROM renewed
$$;

-- pending/queued (p_statuses) -> failed, for a task nothing can run: no run, no attempt used.
CREATE OR REPLACE FUNCTION agentq_fail_unrunnable(
    p_task_id uuid, p_error text, p_now timestamptz, p_statuses text[]
) RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
    UPDATE ai_agent_tasks SET status = 'failed', error = p_error, run_at = NULL, failed_at = p_now,
           updated_at = p_now
     WHERE id = p_task_id AND (status = ANY(p_statuses)) IS TRUE
 RETURNING *
$$;

-- Ask a running task to stop; it ends cancelled at its next step.
CREATE OR REPLACE FUNCTION agentq_request_cancel(p_task_id uuid, p_now timestamptz)
RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
    UPDATE ai_agent_tasks SET cancel_requested_at = p_now, updated_at = p_now
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running'
 RETURNING *
$$;

-- pending/queued/awaiting_approval -> cancelled. The tool call a cancelled wait was for never runs: its step
-- ends failed "cancelled", the decision recorded as such.
CREATE OR REPLACE FUNCTION agentq_cancel(p_task_id uuid, p_now timestamptz)
RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
WITH cancelled AS (
    UPDATE ai_agent_tasks SET status = 'cancelled', run_at = NULL, approval_requested_at = NULL, updated_at = p_now
     WHERE id = p_task_id AND (status IN ('pending', 'queued', 'awaiting_approval')) IS TRUE
 RETURNING *
), waited AS (
    UPDATE ai_agent_task_steps s
       SET status = 'failed', error = 'cancelled', finished_at = p_now,
           approval = COALESCE(s.approval, '{}'::jsonb)
               || jsonb_build_object('decision', 'cancelled', 'decided_at', to_char(p_now AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
      FROM cancelled c
     WHERE s.task_id = c.id AND s.firing = c.firing AND s.status = 'awaiting_approval'
)
SELECT * FROM cancelled
$$;

-- failed -> queued with a fresh set of attempts: a new firing (the old firing's steps deleted) unless
-- p_resume, which keeps the firing so the next attempt goes on after its completed steps.
CREATE OR REPLACE FUNCTION agentq_requeue_failed(
    p_task_id uuid, p_run_at timestamptz, p_now timestamptz, p_resume boolean DEFAULT false
) RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    t ai_agent_tasks;
BEGIN
    UPDATE ai_agent_tasks
       SET status = 'queued', attempts = 0, stalled_count = 0, error = NULL, postponed_count = 0,
           cancel_requested_at = NULL, run_at = p_run_at, queued_at = p_now, failed_at = NULL,
           archived_at = NULL, updated_at = p_now, firing = CASE WHEN p_resume THEN firing ELSE firing + 1 END
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'failed'
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF NOT p_resume THEN
        DELETE FROM ai_agent_task_steps WHERE task_id = p_task_id AND firing < t.firing;
    END IF;
    RETURN NEXT t;
END
$$;

-- Store a scheduled task's schedule (idempotent: a re-send sets the same values).
CREATE OR REPLACE FUNCTION agentq_set_schedule(
    p_task_id uuid, p_cron text, p_timezone text, p_next_run_at timestamptz, p_now timestamptz
) RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
    UPDATE ai_agent_tasks
       SET schedule_cron = p_cron, schedule_timezone = p_timezone, next_run_at = p_next_run_at,
           updated_at = p_now
     WHERE id = p_task_id AND task_type = 'scheduled'
 RETURNING *
$$;

-- Remove a task's schedule (no future firings).
CREATE OR REPLACE FUNCTION agentq_clear_schedule(p_task_id uuid, p_now timestamptz)
RETURNS SETOF ai_agent_tasks LANGUAGE sql SET search_path = public AS $$
    UPDATE ai_agent_tasks SET schedule_cron = NULL, next_run_at = NULL, updated_at = p_now
     WHERE id = p_task_id AND schedule_cron IS NOT NULL
 RETURNING *
$$;

-- agentq_claim for several tasks at once (the Postgres store's group commit): element i of each array is one
-- claim; returns a row (task, agent, steps) for each task claimed, as agentq_claim's object (the Postgres store
-- also sends a lone uncapped claim here: rows are read typed by psycopg, no jsonb built). Typed arrays, and the ids
-- also as an ANY() condition, so the update finds the tasks by primary key whatever the planner guesses of the
-- batch's size.
CREATE OR REPLACE FUNCTION agentq_claim_many(
    p_task_ids uuid[], p_run_ids uuid[], p_worker_ids text[], p_lease_until timestamptz[], p_now timestamptz[]
) RETURNS TABLE (task ai_agent_tasks, agent ai_agents, steps jsonb)
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    RETURN QUERY
    WITH wanted AS (
        SELECT * FROM unnest(p_task_ids, p_run_ids, p_worker_ids, p_lease_until, p_now)
            AS w(task_id, run_id, worker_id, lease_until, now)
    ), taken AS (
        UPDATE ai_agent_tasks t
           SET status = 'running', attempts = t.attempts + 1, current_run_id = w.run_id,
               worker_id = w.worker_id, lease_expires_at = w.lease_until,
               started_at = w.now, run_at = NULL, updated_at = w.now
          FROM wanted w
         WHERE t.id = ANY(p_task_ids) AND t.id = w.task_id AND t.status IS NOT DISTINCT FROM 'queued'
     RETURNING t.*
    ), run AS (
        INSERT INTO ai_agent_task_runs (id, task_id, attempt, status, worker_id, started_at)
        SELECT current_run_id, id, attempts, 'running', worker_id, started_at FROM taken
    )
    SELECT t::ai_agent_tasks, a,
           (SELECT COALESCE(jsonb_agg(to_jsonb(s) ORDER BY s.seq), '[]'::jsonb) FROM ai_agent_task_steps s
             WHERE s.task_id = t.id AND s.firing = t.firing)
      FROM taken t LEFT JOIN ai_agents a ON a.id = t.agent_id;
END
$$;

-- agentq_finish to completed for several runs at once (group commit): element i of each array is one run's
-- completion (p_steps[i] as agentq_finish's p_step, or NULL); returns the ids of the runs completed.
CREATE OR REPLACE FUNCTION agentq_complete_many(
    p_task_ids uuid[], p_run_ids uuid[], p_now timestamptz[], p_results jsonb[], p_transcripts jsonb[],
    p_input_tokens integer[], p_output_tokens integer[], p_cached_input_tokens integer[],
    p_reasoning_tokens integer[], p_cost_usd numeric[], p_steps jsonb[]
) RETURNS SETOF uuid LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    PERFORM agentq_record_step(d.task_id, d.run_id, d.step)
       FROM unnest(p_task_ids, p_run_ids, p_steps) AS d(task_id, run_id, step)
      WHERE d.step IS NOT NULL;
    RETURN QUERY
    WITH done AS (
        SELECT * FROM unnest(p_task_ids, p_run_ids, p_now, p_results, p_transcripts, p_input_tokens,
                             p_output_tokens, p_cached_input_tokens, p_reasoning_tokens, p_cost_usd)
            AS d(task_id, run_id, now, result, transcript, input_tokens, output_tokens, cached_input_tokens,
                 reasoning_tokens, cost_usd)
    ), task AS (
        UPDATE ai_agent_tasks t
           SET status = 'completed', completed_at = d.now, error = NULL, result = COALESCE(d.result, t.result),
               run_at = NULL, archived_at = NULL, updated_at = d.now, worker_id = NULL,
               lease_expires_at = NULL, input_tokens = t.input_tokens + d.input_tokens,
               output_tokens = t.output_tokens + d.output_tokens,
               cached_input_tokens = t.cached_input_tokens + d.cached_input_tokens,
               reasoning_tokens = t.reasoning_tokens + d.reasoning_tokens,
               cost_usd = t.cost_usd + COALESCE(d.cost_usd, 0)
          FROM done d
         WHERE t.id = ANY(p_task_ids) AND t.id = d.task_id AND t.status IS NOT DISTINCT FROM 'running'
           AND t.current_run_id = d.run_id
     RETURNING t.current_run_id AS run_id
    )
    UPDATE ai_agent_task_runs r
       SET status = 'completed', finished_at = d.now, error = NULL, stacktrace = NULL,
           input_tokens = d.input_tokens, output_tokens = d.output_tokens,
           cached_input_tokens = d.cached_input_tokens, reasoning_tokens = d.reasoning_tokens,
           cost_usd = d.cost_usd, transcript = d.transcript
      FROM done d JOIN task ON task.run_id = d.run_id
     WHERE r.id = ANY(p_run_ids) AND r.id = d.run_id
    RETURNING r.id;
END
$$;

-- The step ledger (every model call and tool call of a task's current firing). Each write is a
-- compare-and-set keyed by (task, firing, seq), made only by the run that holds the task in that firing.

-- Step p_seq started by run p_run_id: a new row, or one not completed that this run or p_replaces (the run
-- the caller found it from) wrote last, taken over. FALSE when the run does not hold the task in p_firing,
-- the step is completed, or another run took it first.
CREATE OR REPLACE FUNCTION agentq_start_step(
    p_task_id uuid, p_run_id uuid, p_firing integer, p_seq integer, p_kind text, p_name text, p_input jsonb,
    p_replaces uuid, p_now timestamptz
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    INSERT INTO ai_agent_task_steps AS s (task_id, run_id, firing, seq, kind, name, status, input, started_at)
    SELECT p_task_id, p_run_id, p_firing, p_seq, p_kind, p_name, 'started', p_input, p_now
     WHERE EXISTS (
        SELECT 1 FROM ai_agent_tasks
         WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id AND firing = p_firing
     )
    ON CONFLICT (task_id, firing, seq) DO UPDATE
       SET run_id = EXCLUDED.run_id, kind = EXCLUDED.kind, name = EXCLUDED.name, status = 'started',
           input = EXCLUDED.input, output = NULL, input_tokens = 0, output_tokens = 0, cost_usd = NULL,
           started_at = EXCLUDED.started_at, finished_at = NULL, error = NULL
     WHERE s.status <> 'completed' AND (s.run_id = EXCLUDED.run_id OR s.run_id = p_replaces);
    RETURN FOUND;
END
$$;

-- Step p_seq completed or failed by the run that started it, while it holds the task in p_firing. The same
-- end written again at the same p_now is accepted (a re-sent write).
CREATE OR REPLACE FUNCTION agentq_finish_step(
    p_task_id uuid, p_run_id uuid, p_firing integer, p_seq integer, p_status text, p_now timestamptz,
    p_output jsonb DEFAULT NULL, p_input_tokens integer DEFAULT 0, p_output_tokens integer DEFAULT 0,
    p_cost_usd numeric DEFAULT NULL, p_error text DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    IF p_status NOT IN ('completed', 'failed') THEN
        RAISE EXCEPTION 'agentq_finish_step: invalid status %', p_status USING ERRCODE = '22023';
    END IF;
    UPDATE ai_agent_task_steps
       SET status = p_status, output = p_output, input_tokens = p_input_tokens,
           output_tokens = p_output_tokens, cost_usd = p_cost_usd, error = p_error, finished_at = p_now
     WHERE task_id = p_task_id AND firing = p_firing AND seq = p_seq AND run_id = p_run_id
       AND (status = 'started' OR (status = p_status AND finished_at = p_now))
       AND EXISTS (
        SELECT 1 FROM ai_agent_tasks
         WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id AND firing = p_firing
       );
    RETURN FOUND;
END
$$;

-- A whole step (started and ended) written by run p_run_id in one go: how a model call is recorded once it
-- ended. p_step: {"firing", "seq", "kind", "name", "input", "started_at", "status" (completed | failed),
-- "output", "finished_at", "input_tokens", "output_tokens", "cost_usd", "error", "replaces"}. The same
-- compare-and-set as agentq_start_step (a new row, or one not completed that this run or "replaces" wrote
-- last); the same step written again by the same run with the same end is accepted (a re-sent write).
CREATE OR REPLACE FUNCTION agentq_record_step(p_task_id uuid, p_run_id uuid, p_step jsonb)
RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    IF p_step ->> 'status' IS DISTINCT FROM 'completed' AND p_step ->> 'status' IS DISTINCT FROM 'failed' THEN
        RAISE EXCEPTION 'agentq_record_step: invalid status %', p_step ->> 'status' USING ERRCODE = '22023';
    END IF;
    INSERT INTO ai_agent_task_steps AS s (
        task_id, run_id, firing, seq, kind, name, status, input, output, input_tokens, output_tokens, cost_usd,
        started_at, finished_at, error
    )
    SELECT p_task_id, p_run_id, (p_step ->> 'firing')::integer, (p_step ->> 'seq')::integer, p_step ->> 'kind',
           p_step ->> 'name', p_step ->> 'status', p_step -> 'input', NULLIF(p_step -> 'output', 'null'::jsonb),
           COALESCE((p_step ->> 'input_tokens')::integer, 0), COALESCE((p_step ->> 'output_tokens')::integer, 0),
           (p_step ->> 'cost_usd')::numeric, (p_step ->> 'started_at')::timestamptz,
           (p_step ->> 'finished_at')::timestamptz, p_step ->> 'error'
     WHERE EXISTS (
        SELECT 1 FROM ai_agent_tasks
         WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id
           AND firing = (p_step ->> 'firing')::integer
     )
    ON CONFLICT (task_id, firing, seq) DO UPDATE
       SET run_id = EXCLUDED.run_id, kind = EXCLUDED.kind, name = EXCLUDED.name, status = EXCLUDED.status,
           input = EXCLUDED.input, output = EXCLUDED.output, input_tokens = EXCLUDED.input_tokens,
           output_tokens = EXCLUDED.output_tokens, cost_usd = EXCLUDED.cost_usd, started_at = EXCLUDED.started_at,
           finished_at = EXCLUDED.finished_at, error = EXCLUDED.error
     WHERE (s.status <> 'completed' AND (s.run_id = EXCLUDED.run_id OR s.run_id = (p_step ->> 'replaces')::uuid))
        OR (s.run_id = EXCLUDED.run_id AND s.status = EXCLUDED.status AND s.finished_at = EXCLUDED.finished_at);
    RETURN FOUND;
END
$$;

-- Step writes of several runs at once (the Postgres store's group commit), in order: p_steps is an array of
-- {"op": "start" | "finish" | "record", "p_<argument>": value, …} with agentq_start_step's,
-- agentq_finish_step's or agentq_record_step's arguments; returns their answers in the same order.
CREATE OR REPLACE FUNCTION agentq_record_steps(p_steps jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    item jsonb;
    answers jsonb := '[]'::jsonb;
BEGIN
    FOR item IN SELECT value FROM jsonb_array_elements(p_steps) LOOP
        IF item ->> 'op' = 'record' THEN
            answers := answers || to_jsonb(agentq_record_step(
                (item ->> 'p_task_id')::uuid, (item ->> 'p_run_id')::uuid, item -> 'p_step'));
        ELSIF item ->> 'op' = 'start' THEN
            answers := answers || to_jsonb(agentq_start_step(
                (item ->> 'p_task_id')::uuid, (item ->> 'p_run_id')::uuid, (item ->> 'p_firing')::integer,
                (item ->> 'p_seq')::integer, item ->> 'p_kind', item ->> 'p_name', item -> 'p_input',
                (item ->> 'p_replaces')::uuid, (item ->> 'p_now')::timestamptz));
        ELSE
            answers := answers || to_jsonb(agentq_finish_step(
                (item ->> 'p_task_id')::uuid, (item ->> 'p_run_id')::uuid, (item ->> 'p_firing')::integer,
                (item ->> 'p_seq')::integer, item ->> 'p_status', (item ->> 'p_now')::timestamptz,
                NULLIF(item -> 'p_output', 'null'::jsonb), COALESCE((item ->> 'p_input_tokens')::integer, 0),
                COALESCE((item ->> 'p_output_tokens')::integer, 0), (item ->> 'p_cost_usd')::numeric,
                item ->> 'p_error'));
        END IF;
    END LOOP;
    RETURN answers;
END
$$;

-- The steps of the task's current firing, in seq order.
CREATE OR REPLACE FUNCTION agentq_get_steps(p_task_id uuid)
RETURNS SETOF ai_agent_task_steps LANGUAGE plpgsql STABLE SET search_path = public AS $$
BEGIN
    RETURN QUERY
    SELECT s.* FROM ai_agent_task_steps s JOIN ai_agent_tasks t ON t.id = s.task_id AND t.firing = s.firing
     WHERE s.task_id = p_task_id
     ORDER BY s.seq;
END
$$;

-- Human approval of tool calls. A run that reaches a tool call needing approval records the step awaiting it
-- (agentq_await_step) and ends (agentq_await_approval): the task waits in awaiting_approval, holding no
-- worker and using no attempt, until a decision (agentq_decide_approval) queues it again, or the wait times
-- out (agentq_expire_approval) or is cancelled (agentq_cancel). Times inside the approval records are
-- ISO-8601 in UTC with microseconds, as the Python and SQLite stores write them.

-- Step p_seq of run p_run_id waits for a person's approval of the tool call p_input describes: a new tool
-- step, or one not completed that this run or p_replaces (the run the caller found it from) wrote last, as
-- agentq_start_step takes steps over; its approval is p_approval (the request). FALSE when the run does not
-- hold the task in p_firing, the step is completed, or another run took it first.
CREATE OR REPLACE FUNCTION agentq_await_step(
    p_task_id uuid, p_run_id uuid, p_firing integer, p_seq integer, p_name text, p_input jsonb,
    p_approval jsonb, p_replaces uuid, p_now timestamptz
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    INSERT INTO ai_agent_task_steps AS s
        (task_id, run_id, firing, seq, kind, name, status, input, started_at, approval)
    SELECT p_task_id, p_run_id, p_firing, p_seq, 'tool', p_name, 'awaiting_approval', p_input, p_now, p_approval
     WHERE EXISTS (
        SELECT 1 FROM ai_agent_tasks
         WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id AND firing = p_firing
     )
    ON CONFLICT (task_id, firing, seq) DO UPDATE
       SET run_id = EXCLUDED.run_id, kind = 'tool', name = EXCLUDED.name, status = 'awaiting_approval',
           input = EXCLUDED.input, output = NULL, input_tokens = 0, output_tokens = 0, cost_usd = NULL,
           started_at = EXCLUDED.started_at, finished_at = NULL, error = NULL, approval = EXCLUDED.approval
     WHERE s.status <> 'completed' AND (s.run_id = EXCLUDED.run_id OR s.run_id = p_replaces);
    RETURN FOUND;
END
$$;

-- running -> awaiting_approval: run p_run_id ends (awaiting_approval, p_reason as its note) to wait for a
-- decision; the attempt is not counted, the worker and its lease are released, the run's usage added.
CREATE OR REPLACE FUNCTION agentq_await_approval(
    p_task_id uuid, p_run_id uuid, p_reason text, p_now timestamptz, p_input_tokens integer DEFAULT 0, p_output_tokens integer DEFAULT 0, p_cached_input_tokens integer DEFAULT 0, p_reasoning_tokens integer DEFAULT 0, p_cost_usd numeric DEFAULT NULL, p_transcript jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    UPDATE ai_agent_tasks
       SET status = 'awaiting_approval', attempts = attempts - 1, approval_requested_at = p_now, run_at = NULL,
           worker_id = NULL, lease_expires_at = NULL, updated_at = p_now,
           input_tokens = input_tokens + p_input_tokens, output_tokens = output_tokens + p_output_tokens, cached_input_tokens = cached_input_tokens + p_cached_input_tokens, reasoning_tokens = reasoning_tokens + p_reasoning_tokens, cost_usd = cost_usd + COALESCE(p_cost_usd, 0)
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'running' AND current_run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE ai_agent_task_runs
       SET status = 'awaiting_approval', finished_at = p_now, error = p_reason, input_tokens = p_input_tokens, output_tokens = p_output_tokens, cached_input_tokens = p_cached_input_tokens, reasoning_tokens = p_reasoning_tokens, cost_usd = p_cost_usd, transcript = p_transcript
     WHERE id = p_run_id;
    RETURN TRUE;
END
$$;

-- A decision on the task's wait: awaiting_approval -> queued (compare-and-set, so of two decisions at once
-- one wins), and the step that waited records it (p_decision merged into its approval). A rejection
-- (p_output given) completes the step with the result the model is given; an approval leaves it for the
-- resumed run, which runs the tool. No row: the task was not awaiting approval.
CREATE OR REPLACE FUNCTION agentq_decide_approval(
    p_task_id uuid, p_decision jsonb, p_output jsonb, p_now timestamptz
) RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    t ai_agent_tasks;
BEGIN
    UPDATE ai_agent_tasks
       SET status = 'queued', approval_requested_at = NULL, queued_at = p_now, run_at = p_now, updated_at = p_now
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'awaiting_approval'
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE ai_agent_task_steps
       SET approval = COALESCE(approval, '{}'::jsonb) || p_decision,
           status = CASE WHEN p_output IS NULL THEN status ELSE 'completed' END,
           output = COALESCE(p_output, output),
           finished_at = CASE WHEN p_output IS NULL THEN finished_at ELSE p_now END
     WHERE task_id = p_task_id AND firing = t.firing AND status = 'awaiting_approval';
    RETURN NEXT t;
END
$$;

-- awaiting_approval -> failed with p_error for a task waiting since before p_before (or since an unknown
-- time): no run, no attempt; the step that waited ends failed, its decision recorded as timed out.
CREATE OR REPLACE FUNCTION agentq_expire_approval(
    p_task_id uuid, p_before timestamptz, p_error text, p_now timestamptz
) RETURNS SETOF ai_agent_tasks LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    t ai_agent_tasks;
BEGIN
    UPDATE ai_agent_tasks
       SET status = 'failed', error = p_error, failed_at = p_now, approval_requested_at = NULL, run_at = NULL,
           updated_at = p_now
     WHERE id = p_task_id AND status IS NOT DISTINCT FROM 'awaiting_approval'
       AND (approval_requested_at IS NULL OR approval_requested_at < p_before)
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE ai_agent_task_steps
       SET status = 'failed', error = p_error, finished_at = p_now,
           approval = COALESCE(approval, '{}'::jsonb)
               || jsonb_build_object('decision', 'timed_out', 'decided_at', to_char(p_now AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
     WHERE task_id = p_task_id AND firing = t.firing AND status = 'awaiting_approval';
    RETURN NEXT t;
END
$$;

-- Tasks awaiting approval (since before p_before, when given), oldest first: [{"task", "step"}], "step" the
-- step that waits (null if none does).
CREATE OR REPLACE FUNCTION agentq_list_approvals(
    p_limit integer, p_offset integer, p_before timestamptz DEFAULT NULL
) RETURNS jsonb LANGUAGE sql STABLE SET search_path = public AS $$
SELECT COALESCE(jsonb_agg(jsonb_build_object('task', w.task, 'step', w.step) ORDER BY w.ord), '[]'::jsonb)
  FROM (
    SELECT to_jsonb(t) AS task, CASE WHEN s.id IS NULL THEN NULL ELSE to_jsonb(s) END AS step,
           row_number() OVER (ORDER BY t.approval_requested_at NULLS FIRST, t.id) AS ord
      FROM ai_agent_tasks t
      LEFT JOIN ai_agent_task_steps s
        ON s.task_id = t.id AND s.firing = t.firing AND s.status = 'awaiting_approval'
     WHERE t.status = 'awaiting_approval' AND (p_before IS NULL OR t.approval_requested_at IS NULL
           OR t.approval_requested_at < p_before)
     ORDER BY t.approval_requested_at NULLS FIRST, t.id
     LIMIT p_limit OFFSET p_offset
  ) w
$$;

-- The operator's views (the dashboard), added by migration 0007_dashboard with the indexes they use.
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
