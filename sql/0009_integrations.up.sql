-- skene-pg 0009: integrations.
-- What the framework middleware (skene_pg.django, skene_pg.fastapi) and the Python
-- client need: skene.refund (give back what a counted call consumed, when the request
-- it was counted for failed), skene.gates (each feature's display name, request
-- patterns, freemium message and the upgrade URL), and the catalogue for them: a
-- feature's display name and top-level settings, written by `skene-pg apply`.

-- ---------------------------------------------------------------------------------
-- Catalogue: display names and settings
-- ---------------------------------------------------------------------------------

ALTER TABLE skene.features ADD COLUMN IF NOT EXISTS name text CHECK (name <> '');
COMMENT ON COLUMN skene.features.name IS 'Display name ([features.X] name in skene.toml); NULL: the feature''s own name';

CREATE TABLE skene.settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.settings IS 'Top-level settings of skene.toml (upgrade_url), written by skene-pg apply';

-- ---------------------------------------------------------------------------------
-- Refunds: an idempotency key now remembers how much its call counted
-- ---------------------------------------------------------------------------------

ALTER TABLE skene.idempotency_keys ADD COLUMN IF NOT EXISTS amount bigint;
COMMENT ON COLUMN skene.idempotency_keys.amount IS 'Units the call counted (NULL: claimed before 0009, not refundable)';

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
        -- keys would otherwise turn an unknown feature into 23503, not 22023, and a
        -- key too long for its index into 54000.
        PERFORM skene.require_valid(customer_id, feature, amount);
        IF skene.text_problem(idempotency_key, 255, 'opaque') IS NOT NULL THEN
            PERFORM skene.require_text('idempotency_key', idempotency_key, 255,
                'Send one key per logical request, e.g. a UUID, or NULL for none.', 'opaque', 'key');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM skene.customers c WHERE c.customer_id = customer_id) THEN
            PERFORM skene.register_customer(customer_id);
        END IF;
        -- The claim keeps the amount: skene.refund gives back what the call counted.
        INSERT INTO skene.idempotency_keys AS k (customer_id, feature, idempotency_key,
                                                 created_at, amount)
        VALUES (customer_id, feature, idempotency_key, v_now, amount)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
            SET outcome = NULL, created_at = excluded.created_at, expires_at = NULL,
                amount = excluded.amount
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
           -- the cached plan and limit were read under the current versions of the
           -- catalogue and of the customer (plan, overrides, billing period)
           AND u.catalog_version = (SELECT s.version FROM skene.catalog_state s)
           AND u.customer_version = (SELECT c.limits_version FROM skene.customers c
                                      WHERE c.customer_id = customer_id)
           -- written so that nothing overflows: a huge amount is blocked or refused
           -- on the slow path, never a bigint error here
           AND CASE WHEN u.usage_limit IS NULL OR u.soft
                    THEN u.used <= 9223372036854775807 - amount
                    ELSE amount <= u.usage_limit - u.used END
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
    -- limit, a block, or a counter about to overflow.
    v_today := skene.utc_day(v_now);
    v_day_start := to_timestamp(v_today * 86400);
    -- Lock the counter before reading the catalogue, so the limit cached below is
    -- current: a plan, limit or override change that commits after this read has to
    -- wait for the lock, and its invalidation lands after our write.
    SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
      FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature
       FOR UPDATE;
    v_locked := FOUND;
    SELECT * INTO ctx FROM skene.gate_context(customer_id, feature);
    IF NOT FOUND OR NOT ctx.found_customer OR amount IS NULL OR amount <= 0 THEN
        PERFORM skene.require_valid(customer_id, feature, amount);
        PERFORM skene.register_customer(customer_id);
        SELECT * INTO ctx FROM skene.gate_context(customer_id, feature);
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
        IF ctx.usage_limit IS NULL OR ctx.soft OR amount <= ctx.usage_limit - v_used THEN
            PERFORM skene.require_room(customer_id, feature, v_used, amount);
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
                   plan = ctx.plan, usage_limit = ctx.usage_limit, soft = ctx.soft,
                   catalog_version = ctx.catalog_version,
                   customer_version = ctx.customer_version
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

-- ---------------------------------------------------------------------------------
-- skene.refund
-- ---------------------------------------------------------------------------------

CREATE TYPE skene.refund_result AS (
    refunded    bigint,      -- units given back; 0 when nothing was
    reason      text,        -- refunded | not_counted | expired
    feature     text,
    plan        text,
    used        bigint,      -- the usage after the refund, as skene.check reports it
    usage_limit bigint,      -- NULL: unlimited
    remaining   bigint,      -- NULL: unlimited
    resets_at   timestamptz  -- NULL: usage never resets
);
COMMENT ON TYPE skene.refund_result IS 'Outcome of skene.refund: what was given back, and the usage after it';

CREATE FUNCTION skene.refund(customer_id text, feature text, amount bigint DEFAULT NULL,
                             idempotency_key text DEFAULT NULL)
RETURNS skene.refund_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now    timestamptz := skene.now();
    v_key    record;
    v_row    record;
    v_days   int;
    v_day    bigint;   -- Nd windows: the UTC day the call was counted on
    v_newest bigint;   -- Nd windows: the counter's newest day
    v_slot   int;
    v_give   bigint := 0;
    v_bucket timestamptz;
    v_reason text;
    v_after  skene.decision;
BEGIN
    PERFORM skene.require_valid(customer_id, feature, coalesce(amount, 1));
    IF idempotency_key IS NULL OR idempotency_key = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'skene: refund needs the idempotency key of the call to give back',
            HINT = 'Pass the key the call to check_and_increment was made with; a call without one cannot be refunded.';
    END IF;

    -- Take the key: only a call that counted left one (a blocked call deleted its
    -- claim), deleting it makes the refund happen at most once, and a retry of the
    -- refunded request with the same key then counts afresh, as after a block.
    DELETE FROM skene.idempotency_keys k
     WHERE k.customer_id = customer_id AND k.feature = feature
       AND k.idempotency_key = idempotency_key
       AND k.amount IS NOT NULL AND (k.outcome).allowed
    RETURNING k.amount, k.expires_at, k.created_at INTO v_key;

    IF NOT FOUND THEN
        v_reason := 'not_counted';  -- unknown, blocked, or refunded already
    ELSIF v_key.expires_at <= v_now THEN
        v_reason := 'expired';      -- the usage it counted has left its period
    ELSE
        v_reason := 'refunded';
        v_give := least(coalesce(amount, v_key.amount), v_key.amount);
        v_days := (SELECT f.window_days FROM skene.features f WHERE f.feature = feature);
        SELECT u.period_start, u.resets_at, u.used, u.day_used, u.buckets INTO v_row
          FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature
           FOR UPDATE;
        IF NOT FOUND THEN
            v_give := 0;  -- no counter (the feature's period changed since: counts restarted)
        ELSIF v_days IS NULL THEN
            -- Calendar periods: the key expires when the period it counted in ends, so
            -- the counter still holds that period while its end is the key's.
            IF v_row.resets_at IS NOT DISTINCT FROM v_key.expires_at THEN
                v_give := least(v_give, v_row.used);
                UPDATE skene.usage u SET used = u.used - v_give
                 WHERE u.customer_id = customer_id AND u.feature = feature;
            ELSE
                v_give := 0;
            END IF;
        ELSE
            -- Nd windows: the key expires N days after the day it counted on; take the
            -- units back from that day's count, newest day or ring.
            v_day := skene.utc_day(v_key.expires_at) - v_days;
            v_newest := skene.utc_day(v_row.period_start);
            v_slot := (v_day % v_days)::int + 1;
            IF v_day = v_newest THEN
                v_give := least(v_give, coalesce(v_row.day_used, 0));
                UPDATE skene.usage u SET used = u.used - v_give, day_used = u.day_used - v_give
                 WHERE u.customer_id = customer_id AND u.feature = feature;
            ELSIF v_day < v_newest AND v_day > v_newest - v_days
                  AND cardinality(v_row.buckets) = v_days THEN
                v_give := least(v_give, v_row.buckets[v_slot]);
                UPDATE skene.usage u SET used = u.used - v_give,
                                         buckets[v_slot] = u.buckets[v_slot] - v_give
                 WHERE u.customer_id = customer_id AND u.feature = feature;
            ELSE
                v_give := 0;
            END IF;
        END IF;
        -- Metered features: units not yet sent to the biller are not billed either;
        -- units reported (or pinned for a report in flight) stay billed.
        IF v_give > 0 AND EXISTS (SELECT 1 FROM skene.features f
                                   WHERE f.feature = feature AND f.meter IS NOT NULL) THEN
            v_bucket := date_trunc('hour', v_key.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
            UPDATE skene.meter_usage m
               SET quantity = m.quantity - least(v_give, m.quantity - m.reported
                                                         - coalesce(m.pending_quantity, 0))
             WHERE m.customer_id = customer_id AND m.feature = feature
               AND m.bucket_start = v_bucket
               AND m.quantity - m.reported - coalesce(m.pending_quantity, 0) > 0;
        END IF;
    END IF;

    v_after := skene.check(customer_id, feature, 1);
    RETURN ROW(v_give, v_reason, feature, v_after.plan, v_after.used, v_after.usage_limit,
               v_after.remaining, v_after.resets_at)::skene.refund_result;
END
$$;
COMMENT ON FUNCTION skene.refund(text, text, bigint, text) IS 'Give back (up to amount; NULL: all) what a counted call with this idempotency key consumed, at most once';

-- ---------------------------------------------------------------------------------
-- skene.gates
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.gates()
RETURNS TABLE (feature text, name text, match jsonb, message text, upgrade_url text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.feature, coalesce(f.name, f.feature), f.match,
           -- the freemium loop's message is the title of a blocked request's 402
           (SELECT l.config ->> 'message' FROM skene.loops l
             WHERE l.type = 'freemium' AND l.feature = f.feature AND l.enabled
             ORDER BY l.name LIMIT 1),
           (SELECT s.value FROM skene.settings s WHERE s.name = 'upgrade_url')
      FROM skene.features f
     ORDER BY f.feature
$$;
COMMENT ON FUNCTION skene.gates() IS 'Per feature: display name, request match patterns, freemium message and upgrade URL, for framework middleware';

-- ---------------------------------------------------------------------------------
-- Privileges: both are on the request path of the application.
-- ---------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION skene.refund(text, text, bigint, text), skene.gates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION skene.refund(text, text, bigint, text), skene.gates()
  TO skene_app, skene_worker;
GRANT SELECT ON skene.settings TO skene_worker;
