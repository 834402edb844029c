CREATE OR REPLACE FUNCTION agentq_get_tasks(p_task_ids uuid[])
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
$$;
