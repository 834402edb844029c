-- Supabase compatibility: on a plain PostgreSQL, create what Supabase provides.
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
$agentq$;
