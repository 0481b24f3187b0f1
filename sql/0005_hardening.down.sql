-- skene-pg 0005 down: the privileges, bodies and attributes of 0001-0004 again. The
-- role skene_billing is cluster-wide and stays (other databases may use it); it loses
-- its rights here.

-- Privileges as 0004 left them.
REVOKE EXECUTE ON FUNCTION
    skene.set_plan(text, text, text, text),
    skene.set_billing_period(text, timestamptz, timestamptz),
    skene.ingest_billing_event(text, jsonb),
    skene.link_billing_customer(text, text, text)
  FROM skene_billing;
REVOKE USAGE ON SCHEMA skene FROM skene_billing;
GRANT EXECUTE ON FUNCTION
    skene.check(text, text, bigint),
    skene.check_and_increment(text, text, bigint, text),
    skene.set_plan(text, text, text, text),
    skene.identify(text, text, text, jsonb, text),
    skene.unsubscribe(text)
  TO skene_app, skene_worker;
-- revoked first, so the grants come back in their old order (pg_dump shows that order)
REVOKE EXECUTE ON FUNCTION skene.ingest_billing_event(text, jsonb) FROM skene_worker;
GRANT EXECUTE ON FUNCTION skene.ingest_billing_event(text, jsonb) TO skene_app, skene_worker;
GRANT EXECUTE ON FUNCTION skene.track(text, text, jsonb, timestamptz) TO skene_app, skene_worker;

ALTER FUNCTION skene.invalidate_usage_cache() RESET search_path;
ALTER FUNCTION skene.prune() SECURITY INVOKER;
ALTER FUNCTION skene.set_billing_period(text, timestamptz, timestamptz) SECURITY INVOKER;
COMMENT ON FUNCTION skene.prune() IS 'Delete idempotency keys whose usage has left its period; returns how many';

-- The definitions 0005 replaced, copied from the revision that created them:
-- 0001 require_customer_id, require_valid, register_customer, check_and_increment,
-- check, identify; 0002 suppress; 0003 link_billing_customer, ingest_billing_event;
-- 0004 track, watched_activity, run_loop. Their comments come back with them.

-- skene.require_customer_id as 0001 defined it
CREATE OR REPLACE FUNCTION skene.require_customer_id(customer_id text) RETURNS void
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

-- skene.require_valid as 0001 defined it
CREATE OR REPLACE FUNCTION skene.require_valid(customer_id text, feature text, amount bigint)
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

-- skene.register_customer as 0001 defined it
CREATE OR REPLACE FUNCTION skene.register_customer(customer_id text) RETURNS text
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

-- skene.check_and_increment as 0001 defined it
CREATE OR REPLACE FUNCTION skene.check_and_increment(customer_id text, feature text, amount bigint DEFAULT 1,
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

-- skene.check as 0001 defined it
CREATE OR REPLACE FUNCTION skene.check(customer_id text, feature text, amount bigint DEFAULT 1)
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

-- skene.identify as 0001 defined it
CREATE OR REPLACE FUNCTION skene.identify(customer_id text, email text DEFAULT NULL, name text DEFAULT NULL,
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

-- skene.suppress as 0002 defined it
CREATE OR REPLACE FUNCTION skene.suppress(email text, reason text DEFAULT 'manual', source text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    IF email IS NULL OR pg_catalog.btrim(email) = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'skene: email must be a non-empty address',
            HINT = 'Pass the address to suppress, e.g. ''ada@example.com''.';
    END IF;
    IF reason IS NULL OR reason NOT IN ('bounce', 'complaint', 'manual') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown suppression reason %s', coalesce(quote_literal(reason), 'NULL')),
            HINT = 'Reasons are bounce, complaint and manual.';
    END IF;
    INSERT INTO skene.suppressions AS s (email, reason, source, created_at)
    VALUES (pg_catalog.lower(pg_catalog.btrim(email)), reason, source, skene.now())
    ON CONFLICT ON CONSTRAINT suppressions_pkey DO NOTHING;  -- the first reason stays
END
$$;
COMMENT ON FUNCTION skene.suppress(text, text, text) IS 'Never send marketing email to this address again (bounce, complaint or manual)';

-- skene.link_billing_customer as 0003 defined it
CREATE OR REPLACE FUNCTION skene.link_billing_customer(customer_id text, provider text,
                                            external_customer_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF provider IS NULL OR provider = '' OR external_customer_id IS NULL OR external_customer_id = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: provider and external customer id must be non-empty, got %s and %s',
                             coalesce(quote_literal(provider), 'NULL'),
                             coalesce(quote_literal(external_customer_id), 'NULL')),
            HINT = 'E.g. SELECT skene.link_billing_customer(''cus_42'', ''stripe'', ''cus_NffrFeUfNV2Hib'').';
    END IF;
    PERFORM skene.register_customer(customer_id);
    -- one biller customer per skene customer and provider: the newest link wins
    DELETE FROM skene.billing_customers b
     WHERE b.provider = provider
       AND (b.customer_id = customer_id OR b.external_customer_id = external_customer_id)
       AND NOT (b.customer_id = customer_id AND b.external_customer_id = external_customer_id);
    INSERT INTO skene.billing_customers AS b (provider, external_customer_id, customer_id, linked_at)
    VALUES (provider, external_customer_id, customer_id, skene.now())
    ON CONFLICT ON CONSTRAINT billing_customers_pkey DO NOTHING;
END
$$;
COMMENT ON FUNCTION skene.link_billing_customer(text, text, text) IS 'Link a skene customer to its biller customer (e.g. a Stripe cus_ id); the newest link wins';

-- skene.ingest_billing_event as 0003 defined it
CREATE OR REPLACE FUNCTION skene.ingest_billing_event(provider text, payload jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now      timestamptz := skene.now();
    v_id       text := payload ->> 'id';
    v_type     text := payload ->> 'type';
    v_object   jsonb := payload #> '{data,object}';
    v_external text;
    v_customer text;
BEGIN
    IF provider IS DISTINCT FROM 'stripe' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown billing provider %s', coalesce(quote_literal(provider), 'NULL')),
            HINT = 'Only ''stripe'' events are synced; other billers call skene.set_plan() from their webhook handler.';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' OR v_id IS NULL OR v_id = ''
       OR v_type IS NULL OR jsonb_typeof(v_object) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'skene: not a Stripe event: it needs id, type and data.object',
            HINT = 'Pass the verified webhook body as jsonb, e.g. skene.ingest_billing_event(''stripe'', body::jsonb).';
    END IF;
    INSERT INTO skene.billing_events AS e (provider, event_id, type, payload, received_at)
    VALUES (provider, v_id, v_type, payload, v_now)
    ON CONFLICT ON CONSTRAINT billing_events_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;  -- seen before: its sync was queued then
    END IF;
    IF v_type NOT IN ('checkout.session.completed', 'customer.subscription.created',
                      'customer.subscription.updated', 'customer.subscription.deleted',
                      'customer.subscription.paused', 'customer.subscription.resumed',
                      'invoice.paid', 'invoice.payment_failed') THEN
        UPDATE skene.billing_events e SET processed_at = v_now, error = 'event type not handled'
         WHERE e.provider = provider AND e.event_id = v_id;
        RETURN true;
    END IF;
    v_external := v_object ->> 'customer';
    -- the app names its own customer id when it creates the checkout session
    -- (client_reference_id) or the subscription (metadata.skene_customer_id)
    v_customer := coalesce(nullif(v_object ->> 'client_reference_id', ''),
                           nullif(v_object #>> '{metadata,skene_customer_id}', ''),
                           nullif(v_object #>> '{subscription_details,metadata,skene_customer_id}', ''));
    IF v_external IS NULL OR v_external = '' THEN
        UPDATE skene.billing_events e SET processed_at = v_now, error = 'no customer in the event'
         WHERE e.provider = provider AND e.event_id = v_id;
        RETURN true;
    END IF;
    IF v_customer IS NOT NULL THEN
        PERFORM skene.link_billing_customer(v_customer, provider, v_external);
    END IF;
    -- The event is only a signal: the job re-fetches what Stripe says now.
    PERFORM skene.enqueue(
        kind => 'stripe_sync',
        payload => jsonb_build_object('external_customer_id', v_external, 'event_id', v_id,
                                      'event_type', v_type),
        customer_id => (SELECT b.customer_id FROM skene.billing_customers b
                         WHERE b.provider = provider AND b.external_customer_id = v_external),
        dedupe_key => 'stripe_sync:' || v_id,
        max_attempts => 10);
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.ingest_billing_event(text, jsonb) IS 'Store a verified biller webhook once per event id and queue its sync; false when seen before';

-- skene.track as 0004 defined it
CREATE OR REPLACE FUNCTION skene.track(customer_id text, event text, properties jsonb DEFAULT '{}',
                            occurred_at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_at    timestamptz := occurred_at;
    v_count bigint;
BEGIN
    IF customer_id IS NULL OR customer_id = '' THEN
        PERFORM skene.require_customer_id(customer_id);
    END IF;
    IF event IS NULL OR event = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: event must be a non-empty name, got %s',
                             coalesce(quote_literal(event), 'NULL')),
            HINT = 'Name what the customer did, e.g. ''project_created''.';
    END IF;
    IF properties IS NOT NULL AND jsonb_typeof(properties) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: properties must be a JSON object, got %s', jsonb_typeof(properties)),
            HINT = 'Pass e.g. ''{"plan": "pro"}''::jsonb, or omit it.';
    END IF;
    IF v_at IS NULL OR NOT isfinite(v_at) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: occurred_at must be a finite time, got %s', coalesce(v_at::text, 'NULL')),
            HINT = 'Omit it to mean now.';
    END IF;
    -- The default is the transaction's now(): then take skene's clock (tests move it).
    IF v_at = pg_catalog.now() AND pg_catalog.current_setting('skene.now', true) <> '' THEN
        v_at := skene.now();
    END IF;
    PERFORM skene.record_activity(customer_id, v_at);
    -- Counts are kept only for events a milestone loop counts (an index lookup).
    IF EXISTS (SELECT 1 FROM skene.loops l
                WHERE l.type = 'milestone' AND l.config ->> 'event' = event AND l.enabled) THEN
        INSERT INTO skene.event_counts AS e (customer_id, event, count, first_at, last_at)
        VALUES (customer_id, event, 1, v_at, v_at)
        ON CONFLICT ON CONSTRAINT event_counts_pkey
        DO UPDATE SET count = e.count + 1, last_at = greatest(e.last_at, excluded.last_at)
        RETURNING e.count INTO v_count;  -- the row lock serialises concurrent calls
        PERFORM skene.reach_milestones(customer_id, NULL, event, v_count - 1, v_count);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.track(text, text, jsonb, timestamptz) IS 'Record a customer''s activity (retention) and count events milestones watch; registers new customers';

-- skene.watched_activity as 0004 defined it
CREATE OR REPLACE FUNCTION skene.watched_activity() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row jsonb := pg_catalog.to_jsonb(NEW);
    v_customer text := v_row ->> TG_ARGV[0];
BEGIN
    IF v_customer IS NOT NULL AND v_customer <> '' THEN
        PERFORM skene.record_activity(v_customer,
                                      coalesce((v_row ->> TG_ARGV[1])::timestamptz, skene.now()));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.watched_activity() IS 'Trigger installed by skene.watch_activity: a row in an app''s events table is activity';

-- skene.run_loop as 0004 defined it
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
BEGIN
    IF v_slot > v_now THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: slot %s of loop %s is in the future', v_slot, name),
            HINT = 'Omit the slot to run the loop for this minute.';
    END IF;
    SELECT l.name, l.type, l.config, l.enabled INTO v_loop FROM skene.loops l WHERE l.name = name;
    IF NOT FOUND OR v_loop.type <> 'retention' THEN
        SELECT string_agg(l.name, ', ' ORDER BY l.name) INTO v_known
          FROM skene.loops l WHERE l.type = 'retention';
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: no retention loop %s', coalesce(quote_literal(name), 'NULL')),
            HINT = format('Retention loops: %s.', coalesce(v_known, 'none (add one to skene.toml and run skene-pg apply)'));
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
COMMENT ON FUNCTION skene.run_loop(text, timestamptz) IS 'Run a retention loop for a time slot (default: this minute) once; returns its run, failed with the error on a bad segment';

-- Functions 0005 added (after the bodies above, which no longer call them).
DROP FUNCTION IF EXISTS skene.unsafe_schemas(text);
DROP FUNCTION IF EXISTS skene.search_path_risks(text);
DROP FUNCTION IF EXISTS skene.is_trusted_role(oid, oid);
DROP FUNCTION IF EXISTS skene.canonical_timezone(text);
DROP FUNCTION IF EXISTS skene.require_room(text, text, bigint, bigint);
DROP FUNCTION IF EXISTS skene.require_email(text);
DROP FUNCTION IF EXISTS skene.require_text(text, text, integer, text, text, text);
DROP FUNCTION IF EXISTS skene.text_problem(text, integer, text);
DROP FUNCTION IF EXISTS skene.show(text);
