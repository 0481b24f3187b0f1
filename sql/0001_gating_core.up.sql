-- skene-pg 0001: gating core.
-- Plans, features and per-plan limits, customers, usage counters, idempotency keys,
-- limit hits, loops, the job outbox, and the public functions of the SQL contract.

CREATE SCHEMA IF NOT EXISTS skene;
COMMENT ON SCHEMA skene IS 'skene-pg: usage limits, upgrade prompts, plan sync and retention loops';

-- Roles are cluster-wide: an operator may have created them already (the migrating
-- user then needs no CREATEROLE), and other databases may use them, so downgrades
-- leave them in place.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'skene_app') THEN
        CREATE ROLE skene_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'skene_worker') THEN
        CREATE ROLE skene_worker NOLOGIN;
    END IF;
END
$roles$;

-- ---------------------------------------------------------------------------------
-- Clock
-- ---------------------------------------------------------------------------------

-- The superuser check lives apart so that skene.now() stays a plain CASE that the
-- planner inlines: a sub-select in it would re-plan it on every call of the gate.
CREATE FUNCTION skene.test_now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Only a superuser's session may move the clock: an application role must not be
    -- able to step into next month's quota.
    SELECT CASE WHEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                       WHERE r.rolname = pg_catalog.session_user())
                THEN pg_catalog.current_setting('skene.now')::timestamptz
                ELSE pg_catalog.now() END
$$;
COMMENT ON FUNCTION skene.test_now() IS 'The skene.now setting in a superuser''s session, else now(); internal to skene.now()';

CREATE FUNCTION skene.now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Tests move time by setting skene.now (honoured for superusers only).
    SELECT CASE WHEN pg_catalog.current_setting('skene.now', true) <> ''
                THEN skene.test_now()
                ELSE pg_catalog.now() END
$$;
COMMENT ON FUNCTION skene.now() IS 'Current time for skene: the skene.now setting in a superuser''s session (tests), else now()';

CREATE FUNCTION skene.utc_day(at_time timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT floor(extract(epoch FROM at_time) / 86400)::bigint $$;
COMMENT ON FUNCTION skene.utc_day(timestamptz) IS 'Days since 1970-01-01 UTC: the day buckets of Nd windows';

CREATE FUNCTION skene.utc_text(at_time timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.to_char(at_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;
COMMENT ON FUNCTION skene.utc_text(timestamptz) IS 'ISO 8601 in UTC, for job payloads: the same text whatever the session TimeZone';

-- ---------------------------------------------------------------------------------
-- Catalogue: plans, features, limits, loops (written by `skene-pg apply`)
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.plans (
    plan        text PRIMARY KEY CHECK (plan ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    paid        boolean NOT NULL DEFAULT false,
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.plans IS 'Plans customers can be on; exactly one is the default for new customers';

CREATE TABLE skene.plan_prices (
    price_id text PRIMARY KEY,  -- one plan per biller price
    plan     text NOT NULL REFERENCES skene.plans ON DELETE CASCADE,
    provider text NOT NULL DEFAULT 'stripe'
);
COMMENT ON TABLE skene.plan_prices IS 'Biller prices (stripe_prices in skene.toml) and the plan each one puts a customer on';
CREATE INDEX IF NOT EXISTS plan_prices_plan ON skene.plan_prices (plan);
CREATE UNIQUE INDEX IF NOT EXISTS plans_one_default ON skene.plans ((true)) WHERE is_default;

CREATE TABLE skene.features (
    feature     text PRIMARY KEY CHECK (feature ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    period      text NOT NULL CHECK (
        CASE WHEN period ~ '^[1-9][0-9]{0,2}d$' THEN pg_catalog.rtrim(period, 'd')::int <= 366
             ELSE period IN ('day', 'week', 'month', 'billing_cycle', 'lifetime') END),
    -- Nd rolling windows: N, so the hot path never parses the period.
    window_days int GENERATED ALWAYS AS (
        CASE WHEN period ~ '^[0-9]+d$' THEN pg_catalog.rtrim(period, 'd')::int END) STORED,
    soft        boolean NOT NULL DEFAULT false,
    meter       text,
    match       jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.features IS 'Metered features and the period their usage is counted over';
COMMENT ON COLUMN skene.features.period IS 'day | week | month (calendar, UTC) | Nd (rolling, N UTC days) | billing_cycle | lifetime';
COMMENT ON COLUMN skene.features.soft IS 'true: calls past the limit are allowed and flagged over_soft_limit';
COMMENT ON COLUMN skene.features.meter IS 'Stripe Billing Meter event name, for metered billing';
COMMENT ON COLUMN skene.features.match IS 'Request patterns ({method, path}) for framework middleware';

CREATE TABLE skene.feature_limits (
    feature     text NOT NULL REFERENCES skene.features ON DELETE CASCADE,
    plan        text NOT NULL REFERENCES skene.plans ON DELETE CASCADE,
    usage_limit bigint CHECK (usage_limit >= 0),  -- NULL: unlimited; 0: not in plan
    PRIMARY KEY (feature, plan)
);
COMMENT ON TABLE skene.feature_limits IS 'Per-plan limit of each feature; a plan without a row does not include the feature';

CREATE TABLE skene.loops (
    -- no ':' (job dedupe keys join names with it)
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    type        text NOT NULL CHECK (type IN (
                    'freemium',    -- a block queues an upgrade prompt
                    'retention',   -- scheduled: dormant customers get re-engagement
                    'milestone')), -- usage or activity crossing thresholds
    feature     text REFERENCES skene.features,
    config      jsonb NOT NULL DEFAULT '{}',
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.loops IS 'Growth loops from skene.toml: trigger, condition, action and recovery as config';
CREATE INDEX IF NOT EXISTS loops_freemium_feature ON skene.loops (feature) WHERE type = 'freemium';

-- ---------------------------------------------------------------------------------
-- Customers and their usage
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.customers (
    customer_id          text PRIMARY KEY CHECK (customer_id <> ''),
    plan                 text NOT NULL REFERENCES skene.plans,
    email                text,
    name                 text,
    attributes           jsonb NOT NULL DEFAULT '{}',
    timezone             text,
    billing_period_start timestamptz,
    billing_period_end   timestamptz,
    plan_source          text NOT NULL DEFAULT 'default',
    plan_external_ref    text,
    plan_changed_at      timestamptz,
    unsubscribed_at      timestamptz,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.customers IS 'Customers of the application, registered on first sight on the default plan';
COMMENT ON COLUMN skene.customers.billing_period_start IS 'Start of the current billing period as the biller reports it (billing_cycle limits)';

CREATE TABLE skene.plan_changes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    from_plan    text,
    to_plan      text NOT NULL,
    source       text NOT NULL,
    external_ref text,
    changed_at   timestamptz NOT NULL
);
COMMENT ON TABLE skene.plan_changes IS 'Every plan change with its source (manual, stripe, ...) and time';
CREATE INDEX IF NOT EXISTS plan_changes_customer ON skene.plan_changes (customer_id, changed_at);

CREATE TABLE skene.limit_overrides (
    customer_id text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    feature     text NOT NULL REFERENCES skene.features ON DELETE CASCADE,
    usage_limit bigint CHECK (usage_limit >= 0),  -- NULL: unlimited; 0: not allowed
    PRIMARY KEY (customer_id, feature)
);
COMMENT ON TABLE skene.limit_overrides IS 'Per-customer limits that replace the plan''s limit for one feature';

-- One row per customer and feature, rolled forward in place when a period ends, so
-- a check costs the same after ten million calls as after one. The row also caches
-- the customer's effective limit, so the common call is one single-table UPDATE; any
-- change to plans, limits or overrides invalidates the cache (see the triggers below).
CREATE TABLE skene.usage (
    customer_id  text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    feature      text NOT NULL REFERENCES skene.features ON DELETE CASCADE,
    -- calendar periods: start of the current period; Nd windows: start of the newest day bucket
    period_start timestamptz NOT NULL,
    -- calendar periods: end of the period; Nd windows: when the oldest counted unit leaves it
    resets_at    timestamptz,
    -- until when the row (period and cached limit) is current; past it, or at -infinity
    -- after an invalidation, the next call takes the slow path; NULL: never (lifetime)
    rolls_at     timestamptz,
    -- no CHECK (used >= 0): the gate only adds positive amounts, and a CHECK is
    -- re-prepared on every UPDATE of this hottest row
    used         bigint NOT NULL DEFAULT 0,
    -- Nd windows only: units counted on the newest day (so the hot path adds to a
    -- scalar), and per earlier UTC day in a ring, slot (day number mod N) + 1; the
    -- slow path folds day_used into the ring when the day changes
    day_used     bigint,
    buckets      bigint[],
    -- cache of the customer's plan and effective limit (NULL: unlimited) for the fast path
    plan         text,
    usage_limit  bigint,
    soft         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (customer_id, feature)
) WITH (fillfactor = 70);  -- room for HOT updates: every call rewrites the row
COMMENT ON TABLE skene.usage IS 'Usage counted in the current period (or rolling window) per customer and feature';

CREATE TYPE skene.decision AS (
    allowed     boolean,
    reason      text,        -- ok | limit_reached | not_in_plan | over_soft_limit | duplicate
    feature     text,
    plan        text,
    used        bigint,
    usage_limit bigint,      -- NULL: unlimited
    remaining   bigint,      -- NULL: unlimited
    resets_at   timestamptz  -- NULL: usage never resets
);
COMMENT ON TYPE skene.decision IS 'Outcome of skene.check / skene.check_and_increment';

CREATE TABLE skene.idempotency_keys (
    customer_id     text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    feature         text NOT NULL REFERENCES skene.features ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    outcome         skene.decision,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz,  -- when the usage it counted has left its period; NULL: never
    PRIMARY KEY (customer_id, feature, idempotency_key)
);
COMMENT ON TABLE skene.idempotency_keys IS 'Keys of counted calls, kept as long as the usage they counted';
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON skene.idempotency_keys (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TABLE skene.limit_hits (
    customer_id  text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    feature      text NOT NULL REFERENCES skene.features ON DELETE CASCADE,
    -- the period of the hit; for Nd windows, the N-day block (aligned at the epoch)
    period_start timestamptz NOT NULL,
    reason       text NOT NULL CHECK (reason IN ('limit_reached', 'not_in_plan')),
    plan         text NOT NULL,
    used         bigint NOT NULL,
    usage_limit  bigint,
    requested    bigint NOT NULL,
    hit_at       timestamptz NOT NULL,
    PRIMARY KEY (customer_id, feature, period_start)
);
COMMENT ON TABLE skene.limit_hits IS 'First blocked call of each customer, feature and period';
CREATE INDEX IF NOT EXISTS limit_hits_feature_time ON skene.limit_hits (feature, hit_at);

-- ---------------------------------------------------------------------------------
-- Outbox: every side effect is a job row written in the state change's transaction
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL,               -- email, ...: what the worker does with it
    state           text NOT NULL DEFAULT 'available' CHECK (state IN (
                        'available',   -- waiting for run_at
                        'running',     -- leased to a worker until locked_until
                        'retryable',   -- failed, retried at run_at
                        'succeeded',   -- done
                        'skipped',     -- no longer eligible at send time (reason in last_error)
                        'dead',        -- failed for good (reason in last_error)
                        'cancelled')), -- cancelled by an operator
    payload         jsonb NOT NULL DEFAULT '{}',
    customer_id     text,
    loop_name       text,
    -- "exactly one" made a database fact: e.g. one upgrade prompt per customer, feature, period
    dedupe_key      text UNIQUE,
    -- sent with every external call, so a retry after a crash is never a second send
    idempotency_key text NOT NULL DEFAULT ('skene-' || pg_catalog.gen_random_uuid()),
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    locked_until    timestamptz,
    lease_token     uuid,
    locked_by       text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at     timestamptz
);
COMMENT ON TABLE skene.jobs IS 'Transactional outbox drained by skene-pg listen';
CREATE INDEX IF NOT EXISTS jobs_due ON skene.jobs (run_at, id) WHERE state IN ('available', 'retryable');
CREATE INDEX IF NOT EXISTS jobs_leased ON skene.jobs (locked_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_customer ON skene.jobs (customer_id, created_at);

CREATE FUNCTION skene.enqueue(kind text, payload jsonb, customer_id text DEFAULT NULL,
                              loop_name text DEFAULT NULL, dedupe_key text DEFAULT NULL,
                              run_at timestamptz DEFAULT NULL, max_attempts integer DEFAULT 5)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO skene.jobs AS j (kind, payload, customer_id, loop_name, dedupe_key, run_at, max_attempts)
    VALUES (kind, coalesce(payload, '{}'), customer_id, loop_name, dedupe_key,
            coalesce(run_at, skene.now()), max_attempts)
    ON CONFLICT ON CONSTRAINT jobs_dedupe_key_key DO NOTHING
    RETURNING j.id INTO v_id;
    IF v_id IS NOT NULL THEN
        -- Only wakes the worker (delivered at commit); the table is the truth.
        PERFORM pg_catalog.pg_notify('skene_jobs', kind);
    END IF;
    RETURN v_id;  -- NULL: a job with this dedupe key exists already
END
$$;
COMMENT ON FUNCTION skene.enqueue(text, jsonb, text, text, text, timestamptz, integer) IS 'Queue a job (once per dedupe key) and wake the worker; NULL when deduplicated';

-- ---------------------------------------------------------------------------------
-- Internals of the gate
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.period_bounds(period text, at_time timestamptz,
                                    anchor_start timestamptz DEFAULT NULL,
                                    anchor_end timestamptz DEFAULT NULL,
                                    OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
#variable_conflict use_variable
DECLARE
    v_at_utc timestamp := at_time AT TIME ZONE 'UTC';
    v_anchor timestamp;
    v_months int;
BEGIN
    IF period = 'billing_cycle' AND anchor_start IS NOT NULL AND at_time >= anchor_start THEN
        IF anchor_end IS NOT NULL AND at_time < anchor_end THEN
            period_start := anchor_start;
            period_end := anchor_end;
            RETURN;
        END IF;
        -- The biller has not reported the next period yet: assume monthly cycles.
        v_anchor := anchor_start AT TIME ZONE 'UTC';
        v_months := (extract(year FROM age(v_at_utc, v_anchor)) * 12
                     + extract(month FROM age(v_at_utc, v_anchor)))::int;
        -- age() can count one month short from a month-end anchor: 31 Jan + 1 month
        -- is 28 Feb, yet age('28 Feb 12:00', '31 Jan') is 0 months 28 days.
        IF v_anchor + make_interval(months => v_months + 1) <= v_at_utc THEN
            v_months := v_months + 1;
        END IF;
        period_start := (v_anchor + make_interval(months => v_months)) AT TIME ZONE 'UTC';
        period_end := (v_anchor + make_interval(months => v_months + 1)) AT TIME ZONE 'UTC';
        RETURN;
    END IF;
    CASE
        WHEN period = 'day' OR period ~ '^[0-9]+d$' THEN  -- Nd: the current day bucket
            period_start := date_trunc('day', v_at_utc) AT TIME ZONE 'UTC';
            period_end := (date_trunc('day', v_at_utc) + interval '1 day') AT TIME ZONE 'UTC';
        WHEN period = 'week' THEN
            period_start := date_trunc('week', v_at_utc) AT TIME ZONE 'UTC';
            period_end := (date_trunc('week', v_at_utc) + interval '1 week') AT TIME ZONE 'UTC';
        WHEN period IN ('month', 'billing_cycle') THEN  -- billing_cycle: month until known
            period_start := date_trunc('month', v_at_utc) AT TIME ZONE 'UTC';
            period_end := (date_trunc('month', v_at_utc) + interval '1 month') AT TIME ZONE 'UTC';
        WHEN period = 'lifetime' THEN
            period_start := '-infinity';
            period_end := NULL;
        ELSE
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: unknown period %L', period),
                HINT = 'Periods are day, week, month, Nd (e.g. 30d), billing_cycle and lifetime.';
    END CASE;
END
$$;
COMMENT ON FUNCTION skene.period_bounds(text, timestamptz, timestamptz, timestamptz) IS 'The period (UTC) that contains a time; Nd gives the current day bucket';

-- An Nd window as of `today` (a UTC day number): the newest day's count is folded into
-- the ring, buckets that left the window are subtracted and zeroed; also when the
-- oldest counted unit frees up.
CREATE FUNCTION skene.roll_window(buckets bigint[], used bigint, day_used bigint,
                                  newest_day bigint, today bigint, window_days int,
                                  OUT buckets_now bigint[], OUT used_now bigint,
                                  OUT frees_at timestamptz)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
#variable_conflict use_variable
DECLARE
    v_slot int;
BEGIN
    IF buckets IS NULL OR newest_day IS NULL OR today - newest_day >= window_days
       OR cardinality(buckets) <> window_days THEN
        buckets_now := array_fill(0::bigint, ARRAY[window_days]);
        used_now := 0;
    ELSE
        buckets_now := buckets;
        v_slot := (newest_day % window_days)::int + 1;
        buckets_now[v_slot] := buckets_now[v_slot] + coalesce(day_used, 0);
        used_now := used;
        FOR v_day IN newest_day + 1 .. today LOOP
            v_slot := (v_day % window_days)::int + 1;
            used_now := used_now - buckets_now[v_slot];
            buckets_now[v_slot] := 0;
        END LOOP;
    END IF;
    FOR v_day IN today - window_days + 1 .. today LOOP
        IF buckets_now[(v_day % window_days)::int + 1] > 0 THEN
            frees_at := to_timestamp((v_day + window_days) * 86400);
            EXIT;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION skene.roll_window(bigint[], bigint, bigint, bigint, bigint, int) IS 'Slide an Nd usage window forward to a day; internal to the gate';

-- Everything a decision needs about one customer and feature, in one statement.
CREATE FUNCTION skene.limit_context(customer_id text, feature text,
    OUT found_customer boolean, OUT period text, OUT window_days int, OUT soft boolean,
    OUT plan text, OUT usage_limit bigint, OUT in_plan boolean,
    OUT billing_period_start timestamptz, OUT billing_period_end timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE
AS $$
    SELECT c.customer_id IS NOT NULL, f.period, f.window_days, f.soft, p.plan,
           CASE WHEN o.customer_id IS NOT NULL THEN o.usage_limit ELSE l.usage_limit END,
           CASE WHEN o.customer_id IS NOT NULL THEN o.usage_limit IS DISTINCT FROM 0
                ELSE l.plan IS NOT NULL AND l.usage_limit IS DISTINCT FROM 0 END,
           c.billing_period_start, c.billing_period_end
      FROM skene.features f
      LEFT JOIN skene.customers c ON c.customer_id = $1
      -- a customer not seen yet is judged on the default plan
      JOIN skene.plans p ON p.plan = c.plan OR (c.customer_id IS NULL AND p.is_default)
      LEFT JOIN skene.feature_limits l ON l.feature = f.feature AND l.plan = p.plan
      LEFT JOIN skene.limit_overrides o ON o.customer_id = c.customer_id AND o.feature = f.feature
     WHERE f.feature = $2
$$;
COMMENT ON FUNCTION skene.limit_context(text, text) IS 'Plan, effective limit and period of a customer and feature; internal to the gate';

CREATE FUNCTION skene.require_customer_id(customer_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF customer_id IS NULL OR customer_id = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: customer_id must be a non-empty string, got %s',
                             coalesce(quote_literal(customer_id), 'NULL')),
            HINT = 'Pass your application''s id of the customer (user, team or account).';
    END IF;
END
$$;
COMMENT ON FUNCTION skene.require_customer_id(text) IS 'Raise 22023 for a NULL or empty customer id; internal';

-- Validates arguments of the gate; raises 22023 naming the value, with a hint.
CREATE FUNCTION skene.require_valid(customer_id text, feature text, amount bigint)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
    v_known text;
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF amount IS NULL OR amount <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: amount must be a positive integer, got %s',
                             coalesce(amount::text, 'NULL')),
            HINT = 'Count at least 1 unit per call; use skene.check() to ask without counting.';
    END IF;
    IF feature IS NULL OR NOT EXISTS (SELECT 1 FROM skene.features f WHERE f.feature = feature) THEN
        SELECT string_agg(f.feature, ', ' ORDER BY f.feature) INTO v_known FROM skene.features f;
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown feature %s', coalesce(quote_literal(feature), 'NULL')),
            HINT = CASE WHEN v_known IS NULL
                        THEN 'No features are defined yet: add them to skene.toml and run skene-pg apply.'
                        ELSE format('Defined features: %s.', v_known) END;
    END IF;
END
$$;
COMMENT ON FUNCTION skene.require_valid(text, text, bigint) IS 'Argument checks of the gate (SQLSTATE 22023 with a hint); internal';

CREATE FUNCTION skene.register_customer(customer_id text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_plan text;
BEGIN
    SELECT p.plan INTO v_plan FROM skene.plans p WHERE p.is_default;
    IF v_plan IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('skene: cannot register customer %L: no default plan', customer_id),
            HINT = 'Set default_plan in skene.toml and run skene-pg apply.';
    END IF;
    INSERT INTO skene.customers AS c (customer_id, plan, created_at, updated_at)
    VALUES (customer_id, v_plan, skene.now(), skene.now())
    ON CONFLICT ON CONSTRAINT customers_pkey DO NOTHING;
    RETURN v_plan;
END
$$;
COMMENT ON FUNCTION skene.register_customer(text) IS 'Register a customer on the default plan if new; internal';

-- The first block of a customer, feature and period: a limit hit, and one upgrade
-- prompt per freemium loop covering the feature. Both deduplicated by unique keys.
CREATE FUNCTION skene.record_block(customer_id text, feature text, hit_period timestamptz,
                                   outcome skene.decision, requested bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_loop record;
    v_period_key text := CASE WHEN isfinite(hit_period)
                              THEN extract(epoch FROM hit_period)::bigint::text
                              ELSE 'lifetime' END;
BEGIN
    INSERT INTO skene.limit_hits AS h
        (customer_id, feature, period_start, reason, plan, used, usage_limit, requested, hit_at)
    VALUES (customer_id, feature, hit_period, outcome.reason, outcome.plan, outcome.used,
            outcome.usage_limit, requested, skene.now())
    ON CONFLICT ON CONSTRAINT limit_hits_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN;  -- not the first block of this period
    END IF;
    FOR v_loop IN
        SELECT l.name, l.config FROM skene.loops l
         WHERE l.type = 'freemium' AND l.feature = feature AND l.enabled
    LOOP
        PERFORM skene.enqueue(
            kind => 'email',
            payload => jsonb_build_object(
                'template', coalesce(v_loop.config #>> '{upgrade_prompt,template}', 'upgrade_prompt'),
                'message', v_loop.config ->> 'message',
                'feature', feature,
                'reason', outcome.reason,
                'plan', outcome.plan,
                'used', outcome.used,
                'usage_limit', outcome.usage_limit,
                'resets_at', skene.utc_text(outcome.resets_at),
                'period_start', skene.utc_text(CASE WHEN isfinite(hit_period) THEN hit_period END)),
            customer_id => customer_id,
            loop_name => v_loop.name,
            dedupe_key => format('upgrade_prompt:%s:%s:%s:%s', v_loop.name, customer_id,
                                 feature, v_period_key),
            max_attempts => coalesce((v_loop.config #>> '{recovery,retries}')::int, 0) + 1);
    END LOOP;
END
$$;
COMMENT ON FUNCTION skene.record_block(text, text, timestamptz, skene.decision, bigint) IS 'Record a limit hit once per period and queue upgrade prompts; internal';

-- ---------------------------------------------------------------------------------
-- Keeping the limit cached in skene.usage honest: whatever changes a customer's
-- effective limit sends that counter's next call down the slow path, which reads the
-- catalogue afresh. The UPDATE takes the row lock, so a concurrent fast-path call
-- waits, re-checks rolls_at and falls through to the slow path too.
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.invalidate_usage_cache() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    CASE TG_TABLE_NAME
        WHEN 'customers' THEN
            UPDATE skene.usage u SET rolls_at = '-infinity'
             WHERE u.customer_id = NEW.customer_id;
        WHEN 'limit_overrides' THEN
            UPDATE skene.usage u SET rolls_at = '-infinity'
             WHERE (u.customer_id, u.feature) IN ((OLD.customer_id, OLD.feature),
                                                   (NEW.customer_id, NEW.feature));
        WHEN 'feature_limits' THEN
            UPDATE skene.usage u SET rolls_at = '-infinity'
             WHERE (u.feature, u.plan) IN ((OLD.feature, OLD.plan), (NEW.feature, NEW.plan));
        WHEN 'features' THEN
            UPDATE skene.usage u SET rolls_at = '-infinity' WHERE u.feature = NEW.feature;
    END CASE;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.invalidate_usage_cache() IS 'Trigger: a plan, limit or override changed, so the counters caching it must be re-read';

CREATE TRIGGER customers_plan_changed AFTER UPDATE OF plan ON skene.customers
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan)
    EXECUTE FUNCTION skene.invalidate_usage_cache();
CREATE TRIGGER limit_overrides_changed AFTER INSERT OR UPDATE OR DELETE ON skene.limit_overrides
    FOR EACH ROW EXECUTE FUNCTION skene.invalidate_usage_cache();
CREATE TRIGGER feature_limits_changed AFTER INSERT OR UPDATE OR DELETE ON skene.feature_limits
    FOR EACH ROW EXECUTE FUNCTION skene.invalidate_usage_cache();
CREATE TRIGGER features_changed AFTER UPDATE OF period, soft ON skene.features
    FOR EACH ROW EXECUTE FUNCTION skene.invalidate_usage_cache();

-- ---------------------------------------------------------------------------------
-- Public functions (the SQL contract: README, "The SQL contract")
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.check_and_increment(customer_id text, feature text, amount bigint DEFAULT 1,
                                          idempotency_key text DEFAULT NULL)
RETURNS skene.decision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now       timestamptz := skene.now();
    v_today     bigint;       -- UTC day number (slow path)
    v_day_start timestamptz;
    v_plan      text;
    v_limit     bigint;
    v_window_days int;
    ctx         record;
    v_start     timestamptz;  -- current period (calendar) or day bucket (Nd)
    v_end       timestamptz;
    v_used      bigint;
    v_resets    timestamptz;
    v_row       record;
    v_window    record;
    v_buckets   bigint[];
    v_day_used  bigint;
    v_claimed   boolean;
    v_locked    boolean;      -- the counter was locked before the catalogue was read
    v_result    skene.decision;
BEGIN
    IF idempotency_key IS NOT NULL THEN
        -- Claim the key before counting: a concurrent call with the same key waits on
        -- it and then replays this call's outcome. Validate first: the key's foreign
        -- keys would otherwise turn an unknown feature into 23503, not 22023.
        PERFORM skene.require_valid(customer_id, feature, amount);
        IF NOT EXISTS (SELECT 1 FROM skene.customers c WHERE c.customer_id = customer_id) THEN
            PERFORM skene.register_customer(customer_id);
        END IF;
        INSERT INTO skene.idempotency_keys AS k (customer_id, feature, idempotency_key, created_at)
        VALUES (customer_id, feature, idempotency_key, v_now)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
            SET outcome = NULL, created_at = excluded.created_at, expires_at = NULL
            WHERE k.expires_at <= v_now  -- an expired key is free again
        RETURNING true INTO v_claimed;
        IF NOT FOUND THEN
            v_result := (SELECT k.outcome FROM skene.idempotency_keys k
                          WHERE k.customer_id = customer_id AND k.feature = feature
                            AND k.idempotency_key = idempotency_key);
            v_result.reason := 'duplicate';
            RETURN v_result;
        END IF;
    END IF;

    -- Fast path, one single-table statement: the counter is in its current period (or
    -- day bucket), its cached limit is current, and the call fits. Row lock and limit
    -- check are one step, so concurrent callers can never overshoot.
    IF amount > 0 THEN
        UPDATE skene.usage u
           SET used = u.used + amount, day_used = u.day_used + amount  -- NULL stays NULL
         WHERE u.customer_id = customer_id AND u.feature = feature
           AND u.period_start <= v_now AND (u.rolls_at IS NULL OR v_now < u.rolls_at)
           AND (u.usage_limit IS NULL OR u.soft OR u.used + amount <= u.usage_limit)
        RETURNING u.used, u.resets_at, u.plan, u.usage_limit, u.rolls_at,
                  cardinality(u.buckets)
             INTO v_used, v_resets, v_plan, v_limit, v_end, v_window_days;
        IF FOUND THEN
            v_result := ROW(true,
                            CASE WHEN v_used > v_limit THEN 'over_soft_limit' ELSE 'ok' END,
                            feature, v_plan, v_used, v_limit,
                            -- past a soft limit: 0, not negative; unlimited: NULL
                            CASE WHEN v_limit IS NOT NULL THEN greatest(v_limit - v_used, 0) END,
                            v_resets)::skene.decision;
            IF idempotency_key IS NOT NULL THEN
                UPDATE skene.idempotency_keys k
                   SET outcome = v_result,
                       expires_at = CASE WHEN v_window_days IS NULL THEN v_end
                                         ELSE to_timestamp((skene.utc_day(v_now) + v_window_days)
                                                           * 86400) END
                 WHERE k.customer_id = customer_id AND k.feature = feature
                   AND k.idempotency_key = idempotency_key;
            END IF;
            RETURN v_result;
        END IF;
    END IF;

    -- Slow path: bad input, a new customer or counter, a period that ended, a changed
    -- limit, or a block.
    v_today := skene.utc_day(v_now);
    v_day_start := to_timestamp(v_today * 86400);
    -- Lock the counter before reading the catalogue, so the limit cached below is
    -- current: a plan, limit or override change that commits after this read has to
    -- wait for the lock, and its invalidation lands after our write.
    SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
      FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature
       FOR UPDATE;
    v_locked := FOUND;
    SELECT * INTO ctx FROM skene.limit_context(customer_id, feature);
    IF NOT FOUND OR NOT ctx.found_customer OR amount IS NULL OR amount <= 0 THEN
        PERFORM skene.require_valid(customer_id, feature, amount);
        PERFORM skene.register_customer(customer_id);
        SELECT * INTO ctx FROM skene.limit_context(customer_id, feature);
    END IF;

    IF ctx.window_days IS NULL THEN
        SELECT b.period_start, b.period_end INTO v_start, v_end
          FROM skene.period_bounds(ctx.period, v_now, ctx.billing_period_start,
                                   ctx.billing_period_end) b;
    ELSE
        v_start := v_day_start;
        v_end := v_day_start + interval '1 day';
    END IF;

    IF ctx.in_plan AND NOT v_locked THEN
        -- A new counter: create it (or wait for whoever is creating it) and lock it so
        -- concurrent callers count in turn.
        INSERT INTO skene.usage AS u (customer_id, feature, period_start, used, rolls_at)
        VALUES (customer_id, feature, v_start, 0, '-infinity')  -- no cached limit yet
        ON CONFLICT ON CONSTRAINT usage_pkey DO NOTHING;
        SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
          FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature
           FOR UPDATE;
    END IF;
    IF ctx.in_plan AND v_row.period_start > v_now THEN
        -- Others have rolled the counter into a later period than this call's clock:
        -- now() is when a transaction began, so one begun before the rollover gets here
        -- late. Count in the counter's period; rolling it back would lose that period's
        -- usage and let the limit be overshot.
        v_now := v_row.period_start;
        v_today := skene.utc_day(v_now);
        v_day_start := to_timestamp(v_today * 86400);
        SELECT b.period_start, b.period_end INTO v_start, v_end
          FROM skene.period_bounds(ctx.period, v_now, ctx.billing_period_start,
                                   ctx.billing_period_end) b;
    END IF;
    IF ctx.in_plan THEN
        IF ctx.window_days IS NULL THEN
            v_used := CASE WHEN v_row.period_start = v_start THEN v_row.used ELSE 0 END;
            v_resets := v_end;
        ELSE
            SELECT * INTO v_window FROM skene.roll_window(
                v_row.buckets, v_row.used, v_row.day_used, skene.utc_day(v_row.period_start),
                v_today, ctx.window_days) w;
            v_used := v_window.used_now;
            -- an empty window: a unit counted now frees up N days from today
            v_resets := coalesce(v_window.frees_at,
                                 v_day_start + make_interval(days => ctx.window_days));
        END IF;
        IF ctx.usage_limit IS NULL OR ctx.soft OR v_used + amount <= ctx.usage_limit THEN
            v_used := v_used + amount;
            IF ctx.window_days IS NOT NULL THEN
                -- today's count moves out of the ring into day_used, for the fast path
                v_buckets := v_window.buckets_now;
                v_day_used := v_buckets[v_today % ctx.window_days + 1] + amount;
                v_buckets[v_today % ctx.window_days + 1] := 0;
            END IF;
            UPDATE skene.usage u
               -- a counter locked only after the catalogue was read caches nothing: a
               -- change committed meanwhile could not see (so not invalidate) a row
               -- still being created; the next call reads the catalogue again
               SET used = v_used, period_start = v_start,
                   rolls_at = CASE WHEN v_locked THEN v_end ELSE '-infinity' END,
                   resets_at = v_resets, buckets = v_buckets, day_used = v_day_used,
                   plan = ctx.plan, usage_limit = ctx.usage_limit, soft = ctx.soft
             WHERE u.customer_id = customer_id AND u.feature = feature;
            v_result := ROW(true,
                            CASE WHEN v_used > ctx.usage_limit THEN 'over_soft_limit' ELSE 'ok' END,
                            feature, ctx.plan, v_used, ctx.usage_limit,
                            CASE WHEN ctx.usage_limit IS NOT NULL
                                 THEN greatest(ctx.usage_limit - v_used, 0) END,
                            v_resets)::skene.decision;
            IF idempotency_key IS NOT NULL THEN
                UPDATE skene.idempotency_keys k
                   SET outcome = v_result,
                       expires_at = CASE WHEN ctx.window_days IS NULL THEN v_end
                                         ELSE v_day_start + make_interval(days => ctx.window_days) END
                 WHERE k.customer_id = customer_id AND k.feature = feature
                   AND k.idempotency_key = idempotency_key;
            END IF;
            RETURN v_result;
        END IF;
        v_result := ROW(false, 'limit_reached', feature, ctx.plan, v_used, ctx.usage_limit,
                        greatest(ctx.usage_limit - v_used, 0), v_resets)::skene.decision;
    ELSE
        v_result := skene.check(customer_id, feature, amount);
    END IF;

    -- Blocked: nothing counted, the key is not kept, the first block is recorded.
    IF idempotency_key IS NOT NULL THEN
        DELETE FROM skene.idempotency_keys k
         WHERE k.customer_id = customer_id AND k.feature = feature
           AND k.idempotency_key = idempotency_key;
    END IF;
    PERFORM skene.record_block(
        customer_id, feature,
        CASE WHEN ctx.window_days IS NULL THEN v_start  -- the calendar period
             -- Nd: the N-day block (aligned at the epoch), so prompts come at most every N days
             ELSE to_timestamp(v_today / ctx.window_days * ctx.window_days * 86400) END,
        v_result, amount);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION skene.check_and_increment(text, text, bigint, text) IS 'Atomically count usage and decide; blocks past the limit, first block queues the upgrade prompt';

CREATE FUNCTION skene.check(customer_id text, feature text, amount bigint DEFAULT 1)
RETURNS skene.decision
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now    timestamptz := skene.now();
    ctx      record;
    v_row    record;
    v_start  timestamptz;
    v_end    timestamptz;
    v_window record;
    v_used   bigint := 0;
    v_resets timestamptz;
    v_limit  bigint;
BEGIN
    PERFORM skene.require_valid(customer_id, feature, amount);
    SELECT * INTO ctx FROM skene.limit_context(customer_id, feature);
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'skene: no default plan',
            HINT = 'Set default_plan in skene.toml and run skene-pg apply.';
    END IF;
    SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
      FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature;
    IF ctx.window_days IS NULL THEN
        SELECT b.period_start, b.period_end INTO v_start, v_end
          FROM skene.period_bounds(ctx.period, v_now, ctx.billing_period_start,
                                   ctx.billing_period_end) b;
        IF v_row.period_start = v_start THEN
            v_used := v_row.used;
        END IF;
        v_resets := v_end;
    ELSE
        SELECT * INTO v_window FROM skene.roll_window(
            v_row.buckets, v_row.used, v_row.day_used, skene.utc_day(v_row.period_start),
            skene.utc_day(v_now), ctx.window_days) w;
        v_used := v_window.used_now;
        -- as check_and_increment reports it: an empty window frees N days from today
        v_resets := coalesce(v_window.frees_at, to_timestamp(skene.utc_day(v_now) * 86400)
                                                + make_interval(days => ctx.window_days));
    END IF;

    v_limit := CASE WHEN ctx.in_plan THEN ctx.usage_limit ELSE 0 END;
    IF NOT ctx.in_plan THEN
        RETURN ROW(false, 'not_in_plan', feature, ctx.plan, v_used, 0::bigint, 0::bigint, v_resets)::skene.decision;
    ELSIF v_limit IS NULL THEN
        RETURN ROW(true, 'ok', feature, ctx.plan, v_used, NULL::bigint, NULL::bigint, v_resets)::skene.decision;
    ELSIF v_used + amount <= v_limit THEN
        RETURN ROW(true, 'ok', feature, ctx.plan, v_used, v_limit, v_limit - v_used, v_resets)::skene.decision;
    ELSIF ctx.soft THEN
        RETURN ROW(true, 'over_soft_limit', feature, ctx.plan, v_used, v_limit,
                   greatest(v_limit - v_used, 0), v_resets)::skene.decision;
    END IF;
    RETURN ROW(false, 'limit_reached', feature, ctx.plan, v_used, v_limit,
               greatest(v_limit - v_used, 0), v_resets)::skene.decision;
END
$$;
COMMENT ON FUNCTION skene.check(text, text, bigint) IS 'Would this call be allowed? Read-only: counts nothing, registers no one';

CREATE FUNCTION skene.set_plan(customer_id text, plan text, source text DEFAULT 'manual',
                               external_ref text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_known text;
    v_from  text;
    v_now   timestamptz := skene.now();
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF plan IS NULL OR NOT EXISTS (SELECT 1 FROM skene.plans p WHERE p.plan = plan) THEN
        SELECT string_agg(p.plan, ', ' ORDER BY p.plan) INTO v_known FROM skene.plans p;
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown plan %s', coalesce(quote_literal(plan), 'NULL')),
            HINT = format('Defined plans: %s.', coalesce(v_known, 'none (run skene-pg apply)'));
    END IF;
    IF source IS NULL OR source = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'skene: source must be non-empty',
            HINT = 'Name the biller or tool that changed the plan, e.g. ''stripe'' or ''manual''.';
    END IF;
    -- NO KEY UPDATE, as the UPDATE below takes anyway: a plain FOR UPDATE would also
    -- block the foreign-key checks (FOR KEY SHARE) of a gate call that holds this
    -- customer's counter and is writing a limit hit, while the plan-change trigger
    -- here waits for that counter: a deadlock.
    SELECT c.plan INTO v_from FROM skene.customers c WHERE c.customer_id = customer_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO skene.customers AS c (customer_id, plan, plan_source, plan_external_ref,
                                          plan_changed_at, created_at, updated_at)
        VALUES (customer_id, plan, source, external_ref, v_now, v_now, v_now)
        ON CONFLICT ON CONSTRAINT customers_pkey DO NOTHING;
        IF NOT FOUND THEN  -- registered concurrently: take the update path
            SELECT c.plan INTO v_from FROM skene.customers c
             WHERE c.customer_id = customer_id FOR NO KEY UPDATE;
        END IF;
    END IF;
    IF v_from IS DISTINCT FROM plan THEN
        UPDATE skene.customers c
           SET plan = plan, plan_source = source, plan_external_ref = external_ref,
               plan_changed_at = v_now, updated_at = v_now
         WHERE c.customer_id = customer_id;
        INSERT INTO skene.plan_changes (customer_id, from_plan, to_plan, source, external_ref, changed_at)
        VALUES (customer_id, v_from, plan, source, external_ref, v_now);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.set_plan(text, text, text, text) IS 'Put a customer on a plan (any biller); records the change with its source';

CREATE FUNCTION skene.identify(customer_id text, email text DEFAULT NULL, name text DEFAULT NULL,
                               attributes jsonb DEFAULT '{}', timezone text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF attributes IS NOT NULL AND jsonb_typeof(attributes) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: attributes must be a JSON object, got %s', jsonb_typeof(attributes)),
            HINT = 'Pass e.g. ''{"company": "Acme"}''::jsonb.';
    END IF;
    IF timezone IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = timezone) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown time zone %L', timezone),
            HINT = 'Use an IANA name such as ''Europe/Berlin'' or ''America/New_York''.';
    END IF;
    PERFORM skene.register_customer(customer_id);
    UPDATE skene.customers c
       SET email = coalesce(email, c.email),
           name = coalesce(name, c.name),
           attributes = c.attributes || coalesce(attributes, '{}'),
           timezone = coalesce(timezone, c.timezone),
           updated_at = skene.now()
     WHERE c.customer_id = customer_id;
END
$$;
COMMENT ON FUNCTION skene.identify(text, text, text, jsonb, text) IS 'Register or update a customer''s contact details and attributes (NULL keeps a value)';

CREATE FUNCTION skene.unsubscribe(customer_id text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    PERFORM skene.register_customer(customer_id);
    UPDATE skene.customers c SET unsubscribed_at = coalesce(c.unsubscribed_at, skene.now()),
                                 updated_at = skene.now()
     WHERE c.customer_id = customer_id;
END
$$;
COMMENT ON FUNCTION skene.unsubscribe(text) IS 'Stop all marketing email to a customer';

-- Operator functions (not granted to skene_app).
CREATE FUNCTION skene.set_limit_override(customer_id text, feature text, usage_limit bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM skene.require_valid(customer_id, feature, 1);
    IF usage_limit < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: usage_limit must be >= 0 or NULL, got %s', usage_limit),
            HINT = 'NULL means unlimited, 0 means the feature is not available to this customer.';
    END IF;
    PERFORM skene.register_customer(customer_id);
    INSERT INTO skene.limit_overrides AS o (customer_id, feature, usage_limit)
    VALUES (customer_id, feature, usage_limit)
    ON CONFLICT ON CONSTRAINT limit_overrides_pkey DO UPDATE SET usage_limit = excluded.usage_limit;
END
$$;
COMMENT ON FUNCTION skene.set_limit_override(text, text, bigint) IS 'Give one customer its own limit for a feature (NULL: unlimited)';

CREATE FUNCTION skene.clear_limit_override(customer_id text, feature text) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (DELETE FROM skene.limit_overrides o
                   WHERE o.customer_id = $1 AND o.feature = $2 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;
COMMENT ON FUNCTION skene.clear_limit_override(text, text) IS 'Return a customer to its plan''s limit for a feature';

CREATE FUNCTION skene.set_billing_period(customer_id text, period_start timestamptz,
                                         period_end timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF period_start IS NULL OR period_end IS NULL OR period_end <= period_start THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: billing period [%s, %s) is empty or open', period_start, period_end),
            HINT = 'Pass the current period''s start and end as the biller reports them.';
    END IF;
    PERFORM skene.register_customer(customer_id);
    UPDATE skene.customers c SET billing_period_start = period_start,
                                 billing_period_end = period_end, updated_at = skene.now()
     WHERE c.customer_id = customer_id;
    -- Counters anchored at the old period are re-anchored by the gate's next call.
    UPDATE skene.usage u SET rolls_at = '-infinity'
      FROM skene.features f
     WHERE u.customer_id = customer_id AND f.feature = u.feature AND f.period = 'billing_cycle';
END
$$;
COMMENT ON FUNCTION skene.set_billing_period(text, timestamptz, timestamptz) IS 'Anchor billing_cycle limits at the biller''s current period';

CREATE FUNCTION skene.prune() RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (DELETE FROM skene.idempotency_keys k
                   WHERE k.expires_at <= skene.now() RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION skene.prune() IS 'Delete idempotency keys whose usage has left its period; returns how many';

-- ---------------------------------------------------------------------------------
-- Privileges: skene_app calls the public functions and can read or write nothing.
-- ---------------------------------------------------------------------------------

REVOKE ALL ON SCHEMA skene FROM PUBLIC;
GRANT USAGE ON SCHEMA skene TO skene_app, skene_worker;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA skene FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    skene.check(text, text, bigint),
    skene.check_and_increment(text, text, bigint, text),
    skene.set_plan(text, text, text, text),
    skene.identify(text, text, text, jsonb, text),
    skene.unsubscribe(text)
  TO skene_app, skene_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA skene TO skene_worker;
GRANT INSERT, UPDATE ON skene.jobs TO skene_worker;
GRANT EXECUTE ON FUNCTION skene.now(), skene.test_now(), skene.enqueue(text, jsonb, text, text, text, timestamptz, integer),
    skene.prune()
  TO skene_worker;
