CREATE OR REPLACE FUNCTION agentq_schema_version() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT COALESCE(jsonb_agg(name ORDER BY name), '[]'::jsonb) FROM agentq_schema_migrations
$$;

-- queued -> running: counts an attempt, opens run p_run_id, returns {"task", "agent"} (NULL: lost race).
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
    p_retry_at timestamptz DEFAULT NULL, p_input_tokens integer DEFAULT 0, p_output_tokens integer DEFAULT 0, p_cached_input_tokens integer DEFAULT 0, p_reasoning_tokens integer DEFAULT 0, p_cost_usd numeric DEFAULT NULL, p_transcript jsonb DEFAULT NULL
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
           input_tokens = input_tokens + p_input_tokens, output_tokens = output_tokens + p_output_tokens, cached_input_tokens = cached_input_tokens + p_cached_input_tokens, reasoning_tokens = reasoning_tokens + p_reasoning_tokens, cost_usd = cost_usd + COALESCE(p_cost_usd, 0)
     WHERE id = p_task_id AND status = 'running' AND current_run_id = p_run_id;
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
     WHERE id = p_task_id AND status = 'running' AND current_run_id = p_run_id;
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
$$;
