-- skene-pg 0007: operations never deadlock the app.
--
-- The gate caches a customer's plan and limit on the counter row. Before, whatever
-- changed them (apply changing a limit, set_plan, an override, a billing period)
-- invalidated the cache by updating counter rows one at a time. An app transaction
-- that counts two features holds one counter and waits for the other; an
-- invalidation that took the second and waited for the first was a deadlock, and the
-- app got 40P01.
--
-- Now nothing of the operator's side touches a counter. The cache is valid while two
-- version numbers are what they were when it was read: the catalogue's
-- (skene.catalog_state, bumped by every change to features or limits) and the
-- customer's (skene.customers.limits_version, bumped by a new plan, override or
-- billing period). The fast path compares both in its one UPDATE, reading them
-- without locks; a mismatch takes the slow path, which reads the catalogue afresh.

-- ---------------------------------------------------------------------------------
-- The versions
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.catalog_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),  -- one row
    version   bigint NOT NULL DEFAULT 1
);
COMMENT ON TABLE skene.catalog_state IS 'One row: the version of the limits catalogue, bumped by every change to features or feature_limits';
INSERT INTO skene.catalog_state DEFAULT VALUES;

ALTER TABLE skene.customers ADD COLUMN limits_version bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN skene.customers.limits_version IS 'Bumped by a change of plan, limit override or billing period: counters caching an older one read their limit again';
ALTER TABLE skene.usage ADD COLUMN catalog_version bigint,  -- NULL: read the catalogue
                        ADD COLUMN customer_version bigint;
COMMENT ON COLUMN skene.usage.catalog_version IS 'skene.catalog_state.version when the cached plan and limit were read';
COMMENT ON COLUMN skene.usage.customer_version IS 'The customer''s limits_version when the cached plan and limit were read';

CREATE FUNCTION skene.bump_catalog_version() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE skene.catalog_state SET version = version + 1;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.bump_catalog_version() IS 'Trigger: a feature or limit changed, so every cached limit is stale';

CREATE FUNCTION skene.bump_customer_version() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'customers' THEN  -- BEFORE UPDATE of the customer's own row
        NEW.limits_version := OLD.limits_version + 1;
        RETURN NEW;
    END IF;
    -- an override, AFTER it changed: the customer row only, never a counter
    UPDATE skene.customers c SET limits_version = c.limits_version + 1
     WHERE c.customer_id IN (OLD.customer_id, NEW.customer_id);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.bump_customer_version() IS 'Trigger: a customer''s plan, override or billing period changed, so its cached limits are stale';

DROP TRIGGER feature_limits_changed ON skene.feature_limits;
DROP TRIGGER features_changed ON skene.features;
DROP TRIGGER customers_plan_changed ON skene.customers;
DROP TRIGGER limit_overrides_changed ON skene.limit_overrides;
CREATE TRIGGER feature_limits_version AFTER INSERT OR UPDATE OR DELETE ON skene.feature_limits
    FOR EACH STATEMENT EXECUTE FUNCTION skene.bump_catalog_version();
CREATE TRIGGER features_version AFTER UPDATE OF period, soft ON skene.features
    FOR EACH STATEMENT EXECUTE FUNCTION skene.bump_catalog_version();
CREATE TRIGGER customers_limits_version
    BEFORE UPDATE OF plan, billing_period_start, billing_period_end ON skene.customers
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan
                       OR OLD.billing_period_start IS DISTINCT FROM NEW.billing_period_start
                       OR OLD.billing_period_end IS DISTINCT FROM NEW.billing_period_end)
    EXECUTE FUNCTION skene.bump_customer_version();
CREATE TRIGGER limit_overrides_version AFTER INSERT OR UPDATE OR DELETE ON skene.limit_overrides
    FOR EACH ROW EXECUTE FUNCTION skene.bump_customer_version();

CREATE FUNCTION skene.gate_context(customer_id text, feature text,
    OUT found_customer boolean, OUT period text, OUT window_days int, OUT soft boolean,
    OUT plan text, OUT usage_limit bigint, OUT in_plan boolean,
    OUT billing_period_start timestamptz, OUT billing_period_end timestamptz,
    OUT catalog_version bigint, OUT customer_version bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
AS $$
    -- One statement, so the versions and what they version come from one snapshot.
    SELECT lc.*, (SELECT s.version FROM skene.catalog_state s),
           (SELECT c.limits_version FROM skene.customers c WHERE c.customer_id = $1)
      FROM skene.limit_context($1, $2) lc
$$;
COMMENT ON FUNCTION skene.gate_context(text, text) IS 'limit_context and the versions it was read under; internal to the gate';

-- ---------------------------------------------------------------------------------
-- The gate compares the versions; set_billing_period no longer touches counters
-- ---------------------------------------------------------------------------------

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

CREATE OR REPLACE FUNCTION skene.set_billing_period(customer_id text, period_start timestamptz,
                                         period_end timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
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
    -- The customer's new limits_version sends its counters anchored at the old period
    -- down the gate's slow path, which re-anchors them: no counter is touched here.
    UPDATE skene.customers c SET billing_period_start = period_start,
                                 billing_period_end = period_end, updated_at = skene.now()
     WHERE c.customer_id = customer_id;
END
$$;
COMMENT ON FUNCTION skene.set_billing_period(text, timestamptz, timestamptz) IS 'Anchor billing_cycle limits at the biller''s current period';

-- Internal: PostgreSQL lets PUBLIC execute a new function until told otherwise.
REVOKE EXECUTE ON FUNCTION skene.gate_context(text, text), skene.bump_catalog_version(),
    skene.bump_customer_version() FROM PUBLIC;
