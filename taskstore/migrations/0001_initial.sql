-- Agent Task Queue schema migration 0001_initial (postgres).

-- Generated from taskstore/schema.py; applying it twice is safe.

CREATE TABLE IF NOT EXISTS agentq_schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS ai_agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    name text NOT NULL,
    kind text NOT NULL DEFAULT 'general',
    provider text NOT NULL DEFAULT 'scripted',
    model text NOT NULL DEFAULT 'scripted-1',
    system_prompt text,
    allowed_tools text[] NOT NULL DEFAULT '{}',
    temperature double precision,
    max_tokens integer CHECK (max_tokens IS NULL OR max_tokens > 0),
    max_turns integer NOT NULL DEFAULT 10 CHECK (max_turns > 0),
    base_url text,
    tool_timeout_s double precision NOT NULL DEFAULT 30 CHECK (tool_timeout_s > 0),
    run_time_limit_s double precision CHECK (run_time_limit_s IS NULL OR run_time_limit_s > 0),
    fallback_provider text,
    fallback_model text,
    is_active boolean NOT NULL DEFAULT TRUE,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS ai_agent_tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id uuid NOT NULL REFERENCES ai_agents (id),
    organization_id uuid NOT NULL,
    title text NOT NULL,
    description text,
    task_type text NOT NULL DEFAULT 'adhoc' CHECK (task_type IN ('adhoc', 'scheduled')),
    context jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled')),
    priority integer NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10),
    schedule_cron text,
    schedule_timezone text,
    next_run_at timestamptz,
    last_run_at timestamptz,
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    attempts integer NOT NULL DEFAULT 0,
    stalled_count integer NOT NULL DEFAULT 0,
    result jsonb,
    error text,
    run_at timestamptz,
    current_run_id uuid,
    worker_id text,
    lease_expires_at timestamptz,
    postponed_count integer NOT NULL DEFAULT 0,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    cached_input_tokens integer NOT NULL DEFAULT 0,
    reasoning_tokens integer NOT NULL DEFAULT 0,
    cost_usd numeric(16, 8) NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz,
    queued_at timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    archived_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS ai_agent_task_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id uuid NOT NULL REFERENCES ai_agent_tasks (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'postponed', 'stalled', 'cancelled')),
    worker_id text,
    started_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    finished_at timestamptz,
    error text,
    stacktrace text,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    cached_input_tokens integer NOT NULL DEFAULT 0,
    reasoning_tokens integer NOT NULL DEFAULT 0,
    cost_usd numeric(16, 8),
    transcript jsonb,
    trace_id text
);

CREATE INDEX IF NOT EXISTS ai_agents_organization_idx ON ai_agents (organization_id);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_status_idx ON ai_agent_tasks (status, run_at);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_lease_idx ON ai_agent_tasks (lease_expires_at) WHERE status = 'running';

CREATE INDEX IF NOT EXISTS ai_agent_tasks_pending_idx ON ai_agent_tasks (created_at) WHERE status = 'pending';

CREATE INDEX IF NOT EXISTS ai_agent_tasks_queued_idx ON ai_agent_tasks (queued_at) WHERE status = 'queued';

CREATE INDEX IF NOT EXISTS ai_agent_tasks_organization_idx ON ai_agent_tasks (organization_id, created_at);

CREATE INDEX IF NOT EXISTS ai_agent_tasks_completed_idx ON ai_agent_tasks (completed_at) WHERE status = 'completed';

CREATE INDEX IF NOT EXISTS ai_agent_tasks_failed_idx ON ai_agent_tasks (failed_at) WHERE status = 'failed';

CREATE INDEX IF NOT EXISTS ai_agent_task_runs_task_idx ON ai_agent_task_runs (task_id, attempt);

CREATE INDEX IF NOT EXISTS ai_agent_task_runs_started_idx ON ai_agent_task_runs (started_at);

INSERT INTO agentq_schema_migrations (name) VALUES ('0001_initial') ON CONFLICT (name) DO NOTHING;
