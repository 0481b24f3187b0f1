-- skene-pg 0010: the app's own tables as sources.
-- `skene-pg apply` installs a trigger on an app table for each [sources.*] of
-- skene.toml (customers, subscriptions, events, an activity column) and for each
-- feature counted from a table (`count = { table = ..., customer = ... }`), and
-- backfills it. Every such trigger runs inside the app's transaction, with the owner's
-- rights and the pinned path pg_catalog, pg_temp: it is cheap, and it never fails the
-- app's write for skene's own reasons (a bad value is skipped and logged), except the
-- count limit, which fails an INSERT past the limit on purpose (SQLSTATE 23514).
-- A retention loop may also take its audience from the app's own query (`query`).

-- ---------------------------------------------------------------------------------
-- What is installed where
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.sources (
    name          text PRIMARY KEY,
    kind          text NOT NULL
                  CHECK (kind IN ('customers', 'subscriptions', 'events', 'activity', 'count')),
    relation      regclass NOT NULL,
    feature       text,
    config        jsonb NOT NULL DEFAULT '{}',
    customer_type text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sources_feature CHECK ((kind = 'count') = (feature IS NOT NULL)),
    CONSTRAINT sources_name CHECK (name = CASE WHEN kind = 'count' THEN 'count:' || feature ELSE kind END)
);
COMMENT ON TABLE skene.sources IS 'App tables skene reads through triggers (skene.toml [sources.*] and counted features), written by skene-pg apply';
COMMENT ON COLUMN skene.sources.config IS 'The source''s columns or SQL expressions, evaluated over the row with the path pg_catalog, pg_temp';
COMMENT ON COLUMN skene.sources.customer_type IS 'Type of the subscriptions source''s customer expression, so a customer''s rows are found with an index';
GRANT SELECT ON skene.sources TO skene_worker;

CREATE FUNCTION skene.source_trigger_name(name text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- at most 56 bytes, so the TRUNCATE trigger's "_t" still fits in 63
    SELECT CASE WHEN pg_catalog.octet_length(n) <= 54 THEN n
                ELSE pg_catalog.left(n, 40) || '_' || pg_catalog.left(pg_catalog.md5(n), 13) END
      -- not skene_activity: that is the trigger skene.watch_activity installs
      FROM (SELECT CASE WHEN $1 LIKE 'count:%' THEN 'skene_count_' || pg_catalog.substr($1, 7)
                        ELSE 'skene_source_' || $1 END AS n) t
$$;
COMMENT ON FUNCTION skene.source_trigger_name(text) IS 'Name of the trigger a source installs on its table; internal';

CREATE FUNCTION skene.source_select_list(config jsonb, keys text[]) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(
               CASE WHEN coalesce($1 ->> k, '') = '' THEN pg_catalog.format('NULL::text AS %I', k)
                    ELSE pg_catalog.format('(%s)::text AS %I', $1 ->> k, k) END, ', ' ORDER BY o)
      FROM pg_catalog.unnest($2) WITH ORDINALITY u(k, o)
$$;
COMMENT ON FUNCTION skene.source_select_list(jsonb, text[]) IS 'The select list that evaluates a source''s expressions as text; internal';

CREATE FUNCTION skene.source_columns(relation regclass, config jsonb) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The columns a source's expressions may read (a name found in their text): its
    -- trigger fires on UPDATE of these only. More is harmless; NULL: none found.
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
       AND pg_catalog.strpos(pg_catalog.lower($2::text), pg_catalog.lower(a.attname)) > 0
$$;
COMMENT ON FUNCTION skene.source_columns(regclass, jsonb) IS 'The columns of a table a source''s expressions name: its trigger fires on UPDATE OF them; internal';

-- ---------------------------------------------------------------------------------
-- Customers: identify() from the app's users table
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.is_email(email text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- the rule of skene.require_email, as a test instead of an error
    SELECT skene.text_problem($1, 254, 'opaque') IS NULL
       AND $1 ~ '^[^@]+@[^@.][^@]*\.[^@]*[^@.]$'
       AND $1 !~ '[\u0001-\u0020\u007f-\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]'
$$;
COMMENT ON FUNCTION skene.is_email(text) IS 'Whether a text is one email address as skene.identify accepts it; internal';

CREATE FUNCTION skene.absorb_customer(customer_id text, email text, name text, timezone text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_zone text;
BEGIN
    -- identify() semantics, but a value the app stored that identify() would refuse is
    -- skipped and logged: the app's write must not fail for skene's rules.
    IF customer_id IS NULL THEN
        RETURN false;
    END IF;
    IF skene.text_problem(customer_id, 255, 'id') IS NOT NULL THEN
        RAISE LOG 'skene: source customers skipped the row of customer id %: %',
            skene.show(customer_id), skene.text_problem(customer_id, 255, 'id');
        RETURN false;
    END IF;
    email := nullif(pg_catalog.btrim(email), '');  -- '' is "no address" in many apps
    IF email IS NOT NULL AND NOT skene.is_email(email) THEN
        RAISE LOG 'skene: source customers skipped the email % of customer %',
            skene.show(email), skene.show(customer_id);
        email := NULL;
    END IF;
    IF name IS NOT NULL AND skene.text_problem(name, 255, 'label') IS NOT NULL THEN
        RAISE LOG 'skene: source customers skipped the name % of customer %',
            skene.show(name), skene.show(customer_id);
        name := NULL;
    END IF;
    IF nullif(timezone, '') IS NOT NULL THEN
        v_zone := skene.canonical_timezone(timezone);
        IF v_zone IS NULL THEN
            RAISE LOG 'skene: source customers skipped the unknown time zone % of customer %',
                skene.show(timezone), skene.show(customer_id);
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM skene.customers c WHERE c.customer_id = customer_id) THEN
        PERFORM skene.register_customer(customer_id);
    END IF;
    -- written only when something changed: most updates of a users row touch other columns
    UPDATE skene.customers c
       SET email = coalesce(email, c.email), name = coalesce(name, c.name),
           timezone = coalesce(v_zone, c.timezone), updated_at = skene.now()
     WHERE c.customer_id = customer_id
       AND (c.email IS DISTINCT FROM coalesce(email, c.email)
            OR c.name IS DISTINCT FROM coalesce(name, c.name)
            OR c.timezone IS DISTINCT FROM coalesce(v_zone, c.timezone));
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.absorb_customer(text, text, text, text) IS 'identify() for a row of the customers source: values identify() would refuse are skipped and logged; internal';

CREATE FUNCTION skene.source_customer_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_config jsonb;
    v_row    record;
BEGIN
    SELECT s.config INTO v_config FROM skene.sources s WHERE s.name = 'customers';
    IF NOT FOUND THEN
        RETURN NULL;  -- left behind by a removed source: do nothing
    END IF;
    BEGIN
        EXECUTE pg_catalog.format('SELECT %s FROM (SELECT ($1).*) AS %I',
                                  skene.source_select_list(v_config, '{id,email,name,timezone}'),
                                  TG_TABLE_NAME)
           INTO v_row USING NEW;
        PERFORM skene.absorb_customer(v_row.id, v_row.email, v_row.name, v_row.timezone);
    EXCEPTION WHEN others THEN
        RAISE LOG 'skene: source customers skipped a row of %: % (SQLSTATE %)',
            TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.source_customer_row() IS 'Trigger of the customers source: keep skene.customers current with the app''s users table; never fails the app''s write';

-- ---------------------------------------------------------------------------------
-- Subscriptions: the plan follows the app's subscriptions table
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.subscription_plans(only_customer text DEFAULT NULL)
RETURNS TABLE (customer_id text, plan text)
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
    v_source record;
    v_value  text;
BEGIN
    -- Each customer's plan by its active subscriptions: a paid plan over a free one,
    -- then by name; customers with rows but none active get no row (the default plan).
    -- The app's expressions are evaluated alone over its table, then mapped.
    SELECT s.relation, s.config, s.customer_type INTO v_source
      FROM skene.sources s WHERE s.name = 'subscriptions';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_value := CASE WHEN v_source.config ? 'price'
                    THEN '(SELECT pp.plan FROM skene.plan_prices pp WHERE pp.price_id = s.value)'
                    ELSE 's.value' END;
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT DISTINCT ON (s.customer_id) s.customer_id, p.plan
           FROM (SELECT (%1$s)::text AS customer_id, (%2$s)::text AS value, (%3$s)::text AS status
                   FROM %4$s AS %5$I %6$s) s
           JOIN skene.plans p ON p.plan = %7$s
          WHERE s.status = ANY ($2) AND s.customer_id IS NOT NULL
          ORDER BY s.customer_id, p.paid DESC, p.plan',
        v_source.config ->> 'customer',
        coalesce(v_source.config ->> 'price', v_source.config ->> 'plan'),
        v_source.config ->> 'status',
        v_source.relation,
        (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = v_source.relation),
        -- one customer's rows: compared in the expression's own type, so an index on
        -- the column serves it
        CASE WHEN only_customer IS NOT NULL
             THEN pg_catalog.format('WHERE (%s) = $1::%s', v_source.config ->> 'customer',
                                    coalesce(v_source.customer_type, 'text')) END,
        v_value)
    USING only_customer,
          ARRAY(SELECT pg_catalog.jsonb_array_elements_text(
                    coalesce(v_source.config -> 'active_statuses', '["active", "trialing"]')));
END
$$;
COMMENT ON FUNCTION skene.subscription_plans(text) IS 'The plan each customer''s active subscriptions in the subscriptions source give (one customer, or all); internal';

CREATE FUNCTION skene.sync_subscription_plan(customer_id text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_plan text;
BEGIN
    IF customer_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF skene.text_problem(customer_id, 255, 'id') IS NOT NULL THEN
        RAISE LOG 'skene: source subscriptions skipped customer id %: %',
            skene.show(customer_id), skene.text_problem(customer_id, 255, 'id');
        RETURN NULL;
    END IF;
    SELECT sp.plan INTO v_plan FROM skene.subscription_plans(customer_id) sp;
    IF v_plan IS NULL THEN
        SELECT p.plan INTO v_plan FROM skene.plans p WHERE p.is_default;  -- nothing active
    END IF;
    IF v_plan IS NOT NULL AND v_plan IS DISTINCT FROM
            (SELECT c.plan FROM skene.customers c WHERE c.customer_id = customer_id) THEN
        PERFORM skene.set_plan(customer_id, v_plan, 'app');
    END IF;
    RETURN v_plan;
END
$$;
COMMENT ON FUNCTION skene.sync_subscription_plan(text) IS 'Put a customer on the plan its subscriptions in the app''s table give (the default plan when none is active), with source app; internal';

CREATE FUNCTION skene.source_subscription_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_config jsonb;
    v_select text;
    v_new    text;
    v_old    text;
BEGIN
    SELECT s.config INTO v_config FROM skene.sources s WHERE s.name = 'subscriptions';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_select := pg_catalog.format('SELECT (%s)::text FROM (SELECT ($1).*) AS %I',
                                      v_config ->> 'customer', TG_TABLE_NAME);
        IF TG_OP <> 'DELETE' THEN
            EXECUTE v_select INTO v_new USING NEW;
        END IF;
        IF TG_OP <> 'INSERT' THEN
            EXECUTE v_select INTO v_old USING OLD;
        END IF;
        PERFORM skene.sync_subscription_plan(v_new);
        IF v_old IS DISTINCT FROM v_new THEN
            PERFORM skene.sync_subscription_plan(v_old);  -- moved away, or deleted
        END IF;
    EXCEPTION WHEN others THEN
        RAISE LOG 'skene: source subscriptions skipped a row of %: % (SQLSTATE %)',
            TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.source_subscription_row() IS 'Trigger of the subscriptions source: a change sets the customer''s plan (source app); never fails the app''s write';

-- ---------------------------------------------------------------------------------
-- Activity: an events table, or a last-activity column
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.source_activity_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- TG_ARGV: customer column, time column, and 'now' when a row without a time is
    -- activity now (an events table) rather than none (a last-activity column)
    v_row      jsonb := pg_catalog.to_jsonb(NEW);
    v_customer text := v_row ->> TG_ARGV[0];
    v_at       timestamptz;
BEGIN
    IF TG_OP = 'UPDATE' AND (v_row -> TG_ARGV[1]) IS NOT DISTINCT FROM (pg_catalog.to_jsonb(OLD) -> TG_ARGV[1]) THEN
        RETURN NULL;
    END IF;
    IF v_customer IS NULL OR skene.text_problem(v_customer, 255, 'id') IS NOT NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_at := (v_row ->> TG_ARGV[1])::timestamptz;
        IF v_at IS NULL AND TG_ARGV[2] = 'now' THEN
            v_at := skene.now();
        END IF;
        IF v_at IS NOT NULL AND isfinite(v_at) THEN
            PERFORM skene.record_activity(v_customer, least(v_at, skene.now()));
        END IF;
    EXCEPTION WHEN others THEN
        RAISE LOG 'skene: source activity skipped a row of %: % (SQLSTATE %)',
            TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.source_activity_row() IS 'Trigger of the events and activity sources: a row (or a new last-activity time) is the customer''s activity; never fails the app''s write';

-- ---------------------------------------------------------------------------------
-- Count limits: a feature's usage is the number of the customer's rows
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.count_rows(customer_id text, feature text, delta integer) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_used    bigint;
    v_limit   bigint;
    v_message text;
    ctx       record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM skene.features f WHERE f.feature = feature) THEN
        RETURN;  -- the feature is gone; its trigger was left behind
    END IF;
    IF NOT EXISTS (SELECT 1 FROM skene.customers c WHERE c.customer_id = customer_id) THEN
        IF delta < 0 THEN
            RETURN;
        END IF;
        PERFORM skene.register_customer(customer_id);
    END IF;
    -- The counter row is the lock: a customer's inserts count one after another, so
    -- concurrent inserts at the limit let exactly the limit through. It is locked
    -- before the limit is read, as the gate does.
    SELECT u.used INTO v_used FROM skene.usage u
     WHERE u.customer_id = customer_id AND u.feature = feature FOR UPDATE;
    IF NOT FOUND THEN
        IF delta < 0 THEN
            RETURN;
        END IF;
        INSERT INTO skene.usage AS u (customer_id, feature, period_start, used, rolls_at, resets_at)
        VALUES (customer_id, feature, '-infinity', 0, NULL, 'infinity')
        ON CONFLICT ON CONSTRAINT usage_pkey DO NOTHING;
        SELECT u.used INTO v_used FROM skene.usage u
         WHERE u.customer_id = customer_id AND u.feature = feature FOR UPDATE;
    END IF;
    IF delta < 0 THEN
        UPDATE skene.usage u SET used = greatest(u.used + delta, 0)
         WHERE u.customer_id = customer_id AND u.feature = feature;
        RETURN;
    END IF;
    SELECT * INTO ctx FROM skene.gate_context(customer_id, feature);
    v_limit := CASE WHEN ctx.in_plan THEN ctx.usage_limit ELSE 0 END;
    IF v_limit IS NOT NULL AND NOT ctx.soft AND v_used + delta > v_limit THEN
        SELECT l.config ->> 'message' INTO v_message FROM skene.loops l
         WHERE l.type = 'freemium' AND l.feature = feature AND l.enabled
         ORDER BY l.name LIMIT 1;
        IF NOT ctx.in_plan THEN
            RAISE EXCEPTION USING ERRCODE = '23514',
                CONSTRAINT = skene.source_trigger_name('count:' || feature),
                MESSAGE = coalesce(v_message, pg_catalog.format('skene: %s is not in plan %s', feature, ctx.plan)),
                DETAIL = pg_catalog.format('skene: customer %s is on plan %s, which does not include %s.',
                                           skene.show(customer_id), ctx.plan, feature),
                HINT = pg_catalog.format('Move the customer to a plan that includes %s.', feature);
        END IF;
        RAISE EXCEPTION USING ERRCODE = '23514',
            CONSTRAINT = skene.source_trigger_name('count:' || feature),
            MESSAGE = coalesce(v_message, pg_catalog.format('skene: limit of %s %s reached on plan %s',
                                                            v_limit, feature, ctx.plan)),
            DETAIL = pg_catalog.format('skene: customer %s has %s of %s %s on plan %s.',
                                       skene.show(customer_id), v_used, v_limit, feature, ctx.plan),
            HINT = pg_catalog.format('Upgrade the plan, or delete one of the %s to free a slot.', feature);
    END IF;
    UPDATE skene.usage u
       SET used = v_used + delta, period_start = '-infinity', rolls_at = NULL, resets_at = 'infinity',
           plan = ctx.plan, usage_limit = ctx.usage_limit, soft = ctx.soft,
           catalog_version = NULL, customer_version = NULL  -- never the gate's fast path
     WHERE u.customer_id = customer_id AND u.feature = feature;
    IF v_limit IS NOT NULL AND NOT ctx.soft AND v_used < v_limit AND v_used + delta >= v_limit THEN
        -- The insert that takes the last slot queues the upgrade prompt, once (a
        -- lifetime limit hit). A blocked insert could not: its error rolls back the
        -- app's transaction, and with it anything skene wrote.
        PERFORM skene.record_block(customer_id, feature, '-infinity',
            ROW(true, 'limit_reached', feature, ctx.plan, v_used + delta, v_limit, 0,
                'infinity'::timestamptz)::skene.decision, delta::bigint);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.count_rows(text, text, integer) IS 'Count a customer''s rows of a counted feature: past the limit raise 23514; taking the last slot queues the upgrade prompt once; internal';

CREATE FUNCTION skene.source_count_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- TG_ARGV: the feature, the customer column
    v_new text;
    v_old text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE skene.usage u SET used = 0 WHERE u.feature = TG_ARGV[0] AND u.used <> 0;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := pg_catalog.to_jsonb(NEW) ->> TG_ARGV[1];
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := pg_catalog.to_jsonb(OLD) ->> TG_ARGV[1];
    END IF;
    IF v_new IS NOT DISTINCT FROM v_old THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF v_old IS NOT NULL AND skene.text_problem(v_old, 255, 'id') IS NULL THEN
            PERFORM skene.count_rows(v_old, TG_ARGV[0], -1);
        END IF;
        IF v_new IS NOT NULL AND skene.text_problem(v_new, 255, 'id') IS NULL THEN
            PERFORM skene.count_rows(v_new, TG_ARGV[0], 1);
        END IF;
    EXCEPTION
        -- the limit fails the app's write on purpose; so do the errors of concurrency,
        -- which leave nothing counted and mean "run it again"
        WHEN check_violation OR deadlock_detected OR serialization_failure OR lock_not_available THEN
            RAISE;
        WHEN others THEN
            RAISE LOG 'skene: counted feature % skipped a row of %: % (SQLSTATE %)',
                TG_ARGV[0], TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.source_count_row() IS 'Trigger of a counted feature: an insert past the limit fails (23514), a delete frees a slot';

-- ---------------------------------------------------------------------------------
-- Installing, removing and backfilling
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.install_source(name text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v        record;
    v_alias  text;
    v_cols   text;
    v_events text;
    v_args   text;
    v_fn     text;
    v_name   text;
BEGIN
    SELECT * INTO v FROM skene.sources s WHERE s.name = name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('skene: no source %s', skene.show(name)),
            HINT = 'Sources are written by skene-pg apply from skene.toml.';
    END IF;
    SELECT c.relname INTO v_alias FROM pg_catalog.pg_class c WHERE c.oid = v.relation;
    v_name := skene.source_trigger_name(v.name);
    CASE v.kind
        WHEN 'customers' THEN
            v_cols := skene.source_columns(v.relation, v.config);
            v_events := 'INSERT OR UPDATE' || coalesce(' OF ' || v_cols, '');
            v_fn := 'skene.source_customer_row';
            v_args := '';
        WHEN 'subscriptions' THEN
            v_cols := skene.source_columns(v.relation, v.config);
            v_events := 'INSERT OR DELETE OR UPDATE' || coalesce(' OF ' || v_cols, '');
            v_fn := 'skene.source_subscription_row';
            v_args := '';
            EXECUTE format('SELECT pg_catalog.pg_typeof(%s)::text FROM (SELECT (NULL::%s).*) AS %I',
                           v.config ->> 'customer', v.relation, v_alias)
               INTO v.customer_type;
            UPDATE skene.sources s SET customer_type = v.customer_type WHERE s.name = v.name;
        WHEN 'count' THEN
            v_events := format('INSERT OR DELETE OR UPDATE OF %I', v.config ->> 'customer');
            v_fn := 'skene.source_count_row';
            v_args := format('%L, %L', v.feature, v.config ->> 'customer');
        WHEN 'events' THEN
            v_events := 'INSERT';
            v_fn := 'skene.source_activity_row';
            v_args := format('%L, %L, %L', v.config ->> 'customer', v.config ->> 'at', 'now');
        WHEN 'activity' THEN
            v_events := format('INSERT OR UPDATE OF %I', v.config ->> 'column');
            v_fn := 'skene.source_activity_row';
            v_args := format('%L, %L, %L', v.config ->> 'customer', v.config ->> 'column', 'none');
    END CASE;
    -- CREATE OR REPLACE takes the same lock as CREATE (writers wait until the apply
    -- commits, so a backfill in the same transaction misses nothing); DROP would
    -- also stop readers.
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s(%s)',
                   v_name, v_events, v.relation, v_fn, v_args);
    IF v.kind = 'count' THEN
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                       'EXECUTE FUNCTION skene.source_count_row(%s)', v_name || '_t', v.relation, v_args);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.install_source(text) IS 'Create (or replace) the trigger of a source on its app table';

CREATE FUNCTION skene.drop_source(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v      record;
    v_name text;
BEGIN
    SELECT * INTO v FROM skene.sources s WHERE s.name = name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    v_name := skene.source_trigger_name(v.name);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = v.relation) THEN  -- not dropped by the app
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_name, v.relation);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_name || '_t', v.relation);
    END IF;
    DELETE FROM skene.sources s WHERE s.name = v.name;
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.drop_source(text) IS 'Remove a source: its trigger on the app table and its row; what it fed stays';

CREATE FUNCTION skene.backfill_source(name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v       record;
    v_alias text;
    v_row   record;
    v_count bigint := 0;
    v_plan  text;
BEGIN
    -- (Re)installing the trigger first takes the lock that makes writers wait until
    -- this transaction ends: what is read below is exact, and later writes are seen
    -- by the trigger.
    PERFORM skene.install_source(name);
    SELECT * INTO v FROM skene.sources s WHERE s.name = name;
    SELECT c.relname INTO v_alias FROM pg_catalog.pg_class c WHERE c.oid = v.relation;
    CASE v.kind
        WHEN 'customers' THEN
            FOR v_row IN EXECUTE format('SELECT %s FROM %s AS %I',
                    skene.source_select_list(v.config, '{id,email,name,timezone}'), v.relation, v_alias) LOOP
                IF skene.absorb_customer(v_row.id, v_row.email, v_row.name, v_row.timezone) THEN
                    v_count := v_count + 1;
                END IF;
            END LOOP;
        WHEN 'subscriptions' THEN
            -- every customer with rows, and every customer the source put on a plan
            FOR v_row IN EXECUTE format(
                    'SELECT DISTINCT (%s)::text AS customer_id FROM %s AS %I
                     UNION SELECT c.customer_id FROM skene.customers c WHERE c.plan_source = ''app''',
                    v.config ->> 'customer', v.relation, v_alias) LOOP
                v_plan := skene.sync_subscription_plan(v_row.customer_id);
                IF v_plan IS NOT NULL THEN
                    v_count := v_count + 1;
                END IF;
            END LOOP;
        WHEN 'count' THEN
            EXECUTE format(
                'INSERT INTO skene.customers AS c (customer_id, plan, created_at, updated_at)
                 SELECT DISTINCT t.%1$I::text, p.plan, skene.now(), skene.now()
                   FROM %2$s t JOIN skene.plans p ON p.is_default
                  WHERE skene.text_problem(t.%1$I::text, 255, ''id'') IS NULL
                 ON CONFLICT ON CONSTRAINT customers_pkey DO NOTHING',
                v.config ->> 'customer', v.relation);
            EXECUTE format(
                'WITH counted AS (
                     SELECT t.%1$I::text AS customer_id, count(*) AS n FROM %2$s t
                      WHERE skene.text_problem(t.%1$I::text, 255, ''id'') IS NULL GROUP BY 1),
                 written AS (
                     INSERT INTO skene.usage AS u (customer_id, feature, period_start, used, rolls_at, resets_at)
                     SELECT k.customer_id, $1, ''-infinity'', k.n, NULL, ''infinity'' FROM counted k
                     ON CONFLICT ON CONSTRAINT usage_pkey DO UPDATE
                        SET used = excluded.used, period_start = excluded.period_start,
                            rolls_at = NULL, resets_at = excluded.resets_at,
                            catalog_version = NULL, customer_version = NULL
                     RETURNING 1),
                 emptied AS (
                     UPDATE skene.usage u SET used = 0
                      WHERE u.feature = $1 AND u.used <> 0
                        AND NOT EXISTS (SELECT 1 FROM counted k WHERE k.customer_id = u.customer_id))
                 SELECT count(*) FROM written',
                v.config ->> 'customer', v.relation)
               INTO v_count USING v.feature;
        WHEN 'events' THEN
            FOR v_row IN EXECUTE format(
                    'SELECT t.%1$I::text AS customer_id, max(t.%2$I)::timestamptz AS at FROM %3$s t
                      WHERE t.%2$I IS NOT NULL GROUP BY 1', v.config ->> 'customer', v.config ->> 'at', v.relation) LOOP
                IF skene.text_problem(v_row.customer_id, 255, 'id') IS NULL AND isfinite(v_row.at) THEN
                    PERFORM skene.record_activity(v_row.customer_id, least(v_row.at, skene.now()));
                    v_count := v_count + 1;
                END IF;
            END LOOP;
        WHEN 'activity' THEN
            FOR v_row IN EXECUTE format(
                    'SELECT t.%1$I::text AS customer_id, t.%2$I::timestamptz AS at FROM %3$s t
                      WHERE t.%2$I IS NOT NULL', v.config ->> 'customer', v.config ->> 'column', v.relation) LOOP
                IF skene.text_problem(v_row.customer_id, 255, 'id') IS NULL AND isfinite(v_row.at) THEN
                    PERFORM skene.record_activity(v_row.customer_id, least(v_row.at, skene.now()));
                    v_count := v_count + 1;
                END IF;
            END LOOP;
    END CASE;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION skene.backfill_source(text) IS 'Bring skene up to date with a source''s table (reinstalling its trigger first); returns the rows or customers it took';

REVOKE ALL ON FUNCTION skene.source_trigger_name(text), skene.source_select_list(jsonb, text[]),
    skene.source_columns(regclass, jsonb), skene.is_email(text),
    skene.absorb_customer(text, text, text, text), skene.source_customer_row(),
    skene.subscription_plans(text), skene.sync_subscription_plan(text),
    skene.source_subscription_row(), skene.source_activity_row(),
    skene.count_rows(text, text, integer), skene.source_count_row(),
    skene.install_source(text), skene.drop_source(text), skene.backfill_source(text)
    FROM PUBLIC;

-- ---------------------------------------------------------------------------------
-- Retention: the app's own query as the condition
-- ---------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION skene.queue_retention(loop_name text, config jsonb, at_time timestamptz, run_id bigint,
                                                 OUT n_candidates integer, OUT n_queued integer, OUT n_held_out integer)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_first     interval := (config ->> 'dormant_after')::interval;
    v_holdout   integer := coalesce((config ->> 'holdout_percent')::integer, 10);
    v_cap       interval := coalesce(config ->> 'frequency_cap', '24 hours')::interval;
    v_quiet_s   time := (skene.quiet_hours(config)).quiet_start;
    v_quiet_e   time := (skene.quiet_hours(config)).quiet_end;
    v_attempts  integer := coalesce((config #>> '{recovery,retries}')::integer + 1, 5);
    v_segment   boolean := coalesce(config ->> 'segment', '') <> '';
    -- the app's own query is the whole condition: who it returns is reached, once an
    -- episode, without skene's dormancy test (and without steps)
    v_query     boolean := coalesce(config ->> 'query', '') <> '';
    v_path      text;
BEGIN
    IF v_query THEN
        -- Only the customer column is kept: a `SELECT *` of a users table must not
        -- copy its other columns (password hashes, tokens) into job payloads.
        SELECT l.segment_search_path INTO v_path FROM skene.loops l WHERE l.name = loop_name;
        PERFORM pg_catalog.set_config('search_path', v_path || ', pg_temp', true);
        EXECUTE format('CREATE TEMP TABLE skene_segment ON COMMIT DROP AS '
                       'SELECT DISTINCT (q.%1$I)::text AS customer_id FROM (%2$s) AS q '
                       'WHERE q.%1$I IS NOT NULL',
                       coalesce(config ->> 'customer_column', 'customer_id'),
                       pg_catalog.regexp_replace(config ->> 'query', '[\s;]+$', ''));
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    ELSIF v_segment THEN
        -- The app's own query; the caller's statement_timeout bounds it (the schedule
        -- sets segment_timeout), and an error or timeout fails the run. pg_temp goes
        -- last: the caller's temporary tables must not stand in for the app's.
        SELECT l.segment_search_path INTO v_path FROM skene.loops l WHERE l.name = loop_name;
        PERFORM pg_catalog.set_config('search_path', v_path || ', pg_temp', true);
        EXECUTE format('CREATE TEMP TABLE skene_segment ON COMMIT DROP AS %s', config ->> 'segment');
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = 'pg_temp.skene_segment'::regclass
                          AND a.attname = 'customer_id' AND NOT a.attisdropped) THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: the segment of loop %s returns no customer_id column', loop_name),
                HINT = 'Select the customer id AS customer_id; other columns become template variables.';
        END IF;
    ELSE
        CREATE TEMP TABLE IF NOT EXISTS skene_segment (customer_id text) ON COMMIT DROP;
    END IF;
    -- One run at a time across all loops, from here to commit (skene.retention_turn;
    -- a no-op when the caller took its turn already): the frequency cap below then
    -- sees the messages other loops' runs queued.
    PERFORM skene.retention_turn();

    CREATE TEMP TABLE skene_due ON COMMIT DROP AS
    WITH steps AS (
        SELECT 0 AS step, v_first AS after, config ->> 'template' AS template
        UNION ALL
        SELECT s.ordinality::integer, (s.value ->> 'after')::interval, s.value ->> 'template'
          FROM jsonb_array_elements(coalesce(config -> 'steps', '[]')) WITH ORDINALITY s
    ), segment AS (
        SELECT DISTINCT ON (s.customer_id::text) s.customer_id::text AS customer_id,
               pg_catalog.to_jsonb(s) - 'customer_id' AS vars
          FROM pg_temp.skene_segment s WHERE v_segment OR v_query
    ), dormant AS (
        SELECT c.customer_id, c.last_activity_at AS episode_start, c.timezone,
               coalesce(g.vars, '{}') AS vars, due.step, due.template
          FROM skene.customers c
          LEFT JOIN segment g ON g.customer_id = c.customer_id
          -- the latest step due: a customer found late skips the steps it missed
          CROSS JOIN LATERAL (SELECT st.step, st.template FROM steps st
                               WHERE st.after <= at_time - c.last_activity_at
                               ORDER BY st.after DESC LIMIT 1) due
         WHERE NOT v_query AND c.last_activity_at <= at_time - v_first
           AND (NOT v_segment OR g.customer_id IS NOT NULL)
           AND c.email IS NOT NULL AND c.unsubscribed_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM skene.suppressions x
                            WHERE x.email = pg_catalog.lower(pg_catalog.btrim(c.email)))
        UNION ALL
        -- the app's query: one message per episode (skene's last activity of the
        -- customer, or when skene first saw it), so a customer the query keeps
        -- returning is not messaged again until it has been active
        SELECT c.customer_id, coalesce(c.last_activity_at, c.created_at), c.timezone,
               '{}'::jsonb, 0, config ->> 'template'
          FROM skene.customers c JOIN segment g ON g.customer_id = c.customer_id
         WHERE v_query AND c.email IS NOT NULL AND c.unsubscribed_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM skene.suppressions x
                            WHERE x.email = pg_catalog.lower(pg_catalog.btrim(c.email)))
    )
    SELECT d.customer_id, d.episode_start, d.timezone, d.vars, d.step, d.template,
           skene.holdout_bucket(d.customer_id, loop_name) < v_holdout AS held_out,
           -- when the message may go out: after quiet hours in the customer's time
           -- zone, or the loop's default one for customers without
           skene.quiet_until(at_time, skene.loop_timezone(config, d.timezone),
                             v_quiet_s, v_quiet_e) AS send_at
      FROM dormant d
     WHERE NOT EXISTS (SELECT 1 FROM skene.loop_sends s
                        WHERE s.loop_name = loop_name AND s.customer_id = d.customer_id
                          AND s.episode_start = d.episode_start AND s.step = d.step)
       -- the cap across marketing loops: try again at the next run
       AND NOT EXISTS (SELECT 1 FROM skene.jobs j JOIN skene.loops l ON l.name = j.loop_name
                        WHERE j.customer_id = d.customer_id AND l.type IN ('retention', 'milestone')
                          AND j.run_at > at_time - v_cap
                          AND j.state NOT IN ('skipped', 'cancelled', 'dead'));
    GET DIAGNOSTICS n_candidates = ROW_COUNT;

    WITH jobs AS (
        INSERT INTO skene.jobs AS j (kind, payload, customer_id, loop_name, dedupe_key, run_at, max_attempts)
        SELECT 'email',
               jsonb_build_object('template', d.template, 'step', d.step,
                                  'episode_start', skene.utc_text(d.episode_start),
                                  'message', config ->> 'message', 'vars', d.vars),
               d.customer_id, loop_name,
               format('retention:%s:%s:%s:%s', loop_name, d.customer_id,
                      extract(epoch FROM d.episode_start)::bigint, d.step),
               d.send_at, v_attempts
          FROM pg_temp.skene_due d WHERE NOT d.held_out
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING j.id, j.customer_id
    ), sends AS (
        -- a message's sent_at is set when it goes out (skene.finish_job); a held-out
        -- twin's is when its message would have gone out, so both arms are measured
        -- from the same moment
        INSERT INTO skene.loop_sends (loop_name, customer_id, episode_start, step, held_out, job_id,
                                      run_id, queued_at, sent_at)
        SELECT loop_name, d.customer_id, d.episode_start, d.step, d.held_out, jobs.id, run_id,
               at_time, CASE WHEN d.held_out THEN d.send_at END
          FROM pg_temp.skene_due d LEFT JOIN jobs ON jobs.customer_id = d.customer_id
        ON CONFLICT ON CONSTRAINT loop_sends_pkey DO NOTHING
        RETURNING loop_sends.customer_id, loop_sends.held_out
    ), waiting AS (
        UPDATE skene.customers c SET awaiting_reactivation = true
          FROM sends WHERE c.customer_id = sends.customer_id AND NOT c.awaiting_reactivation
    )
    SELECT count(*) FILTER (WHERE NOT s.held_out), count(*) FILTER (WHERE s.held_out)
      INTO n_queued, n_held_out FROM sends s;
    -- gone now, so the next loop run in this transaction can create them again
    DROP TABLE pg_temp.skene_due;
    DROP TABLE pg_temp.skene_segment;
    IF n_queued > 0 THEN
        PERFORM pg_catalog.pg_notify('skene_jobs', 'email');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION skene.run_loop(name text, slot timestamptz DEFAULT NULL)
RETURNS skene.loop_runs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now     timestamptz := skene.now();
    v_slot    timestamptz := coalesce(slot, date_trunc('minute', skene.now()));
    v_loop    record;
    v_run     skene.loop_runs;
    v_counts  record;
    v_known   text;
    v_risks   text;
BEGIN
    IF v_slot > v_now THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: slot %s of loop %s is in the future', v_slot, skene.show(name)),
            HINT = 'Omit the slot to run the loop for this minute.';
    END IF;
    SELECT l.name, l.type, l.config, l.enabled, l.segment_search_path INTO v_loop
      FROM skene.loops l WHERE l.name = name;
    IF NOT FOUND OR v_loop.type <> 'retention' THEN
        SELECT string_agg(l.name, ', ' ORDER BY l.name) INTO v_known
          FROM skene.loops l WHERE l.type = 'retention';
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: no retention loop %s', skene.show(name)),
            HINT = format('Retention loops: %s.', coalesce(v_known, 'none (add one to skene.toml and run skene-pg apply)'));
    END IF;
    IF coalesce(v_loop.config ->> 'segment', '') <> '' OR coalesce(v_loop.config ->> 'query', '') <> '' THEN
        SELECT string_agg(format('%s (%s)', r.schema_name, r.risk), '; ') INTO v_risks
          FROM skene.search_path_risks(v_loop.segment_search_path) r;
        IF v_risks IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = format('skene: loop %s refused: its segment would run with the owner''s '
                                 'rights in schemas other roles control: %s', v_loop.name, v_risks),
                DETAIL = format('The loop''s search_path is %s.', v_loop.segment_search_path),
                HINT = 'Leave those schemas out of the search_path skene-pg apply runs with (it is '
                       'stored in skene.loops.segment_search_path) and qualify the app''s tables in '
                       'the segment, or REVOKE CREATE ON SCHEMA ... FROM PUBLIC and the roles named.';
        END IF;
    END IF;
    -- The slot's row is the run's lock: a second run of the slot (another scheduler,
    -- another worker) waits here for the first to commit, then does nothing.
    INSERT INTO skene.loop_runs AS r (loop_name, slot, state, started_at)
    VALUES (name, v_slot, 'running', pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT loop_runs_slot DO NOTHING
    RETURNING * INTO v_run;
    IF NOT FOUND THEN
        SELECT * INTO v_run FROM skene.loop_runs r WHERE r.loop_name = name AND r.slot = v_slot;
        RETURN v_run;
    END IF;
    IF NOT v_loop.enabled THEN
        UPDATE skene.loop_runs r SET state = 'succeeded', finished_at = pg_catalog.clock_timestamp(),
                                     error = 'loop disabled'
         WHERE r.id = v_run.id RETURNING * INTO v_run;
        RETURN v_run;
    END IF;
    BEGIN
        SELECT * INTO v_counts FROM skene.queue_retention(v_loop.name, v_loop.config, v_now, v_run.id);
        UPDATE skene.loop_runs r
           SET state = 'succeeded', finished_at = pg_catalog.clock_timestamp(),
               candidates = v_counts.n_candidates, queued = v_counts.n_queued, held_out = v_counts.n_held_out
         WHERE r.id = v_run.id RETURNING * INTO v_run;
    EXCEPTION WHEN query_canceled OR others THEN
        -- everything the run queued is rolled back with the subtransaction
        UPDATE skene.loop_runs r
           SET state = 'failed', finished_at = pg_catalog.clock_timestamp(), error = SQLERRM
         WHERE r.id = v_run.id RETURNING * INTO v_run;
    END;
    RETURN v_run;
END
$$;
