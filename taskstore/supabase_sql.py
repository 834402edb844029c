"""Postgres-only SQL of the migrations besides the ``agentq_*`` functions: Supabase roles, row-level
security and grants. The functions live in ``taskstore/sql/functions.sql`` (see :mod:`taskstore.sql_store`).

Every statement is idempotent (``CREATE OR REPLACE``, ``IF NOT EXISTS``, ``DROP … IF EXISTS`` then
``CREATE``), so the rendered file applies twice, and applies unchanged both to a Supabase project
(where ``auth.uid()`` and the ``anon``/``authenticated``/``service_role`` roles exist) and to a plain
PostgreSQL (where this creates a compatible ``auth.uid()`` shim and the roles, when allowed to).

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
