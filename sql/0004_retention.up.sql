-- skene-pg 0004: retention.
-- Activity (skene.track and a trigger for an app's own events table), retention loops
-- run per time slot (pg_cron or the worker), dormancy episodes and their steps, a
-- deterministic holdout, reactivation, and milestones once per customer and threshold.

-- ---------------------------------------------------------------------------------
-- Activity
-- ---------------------------------------------------------------------------------

-- On the customer row, not indexed: the update stays HOT, and the daily scan reads
-- the table once anyway.
ALTER TABLE skene.customers ADD COLUMN IF NOT EXISTS last_activity_at timestamptz;
-- true while a retention message (or a held-out non-message) waits for the customer
-- to come back: only then does track() look further than the customer row.
ALTER TABLE skene.customers ADD COLUMN IF NOT EXISTS awaiting_reactivation boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN skene.customers.last_activity_at IS 'Latest activity seen by skene.track or a watched events table';
COMMENT ON COLUMN skene.customers.awaiting_reactivation IS 'A retention loop reached this customer and waits for activity';

ALTER TABLE skene.loops ADD COLUMN IF NOT EXISTS cron_job text;
COMMENT ON COLUMN skene.loops.cron_job IS 'pg_cron job that runs this retention loop; NULL: skene-pg listen runs its schedule';
-- run_loop runs with its owner's rights whoever calls it (pg_cron, the worker's role,
-- a person), so a segment's unqualified names must not depend on the caller's session.
ALTER TABLE skene.loops ADD COLUMN IF NOT EXISTS segment_search_path text NOT NULL
    DEFAULT pg_catalog.current_setting('search_path');
COMMENT ON COLUMN skene.loops.segment_search_path IS 'search_path a segment query runs with: that of the session that wrote the loop (skene-pg apply)';

CREATE TABLE skene.event_counts (
    customer_id text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    event       text NOT NULL,
    count       bigint NOT NULL,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (customer_id, event)
) WITH (fillfactor = 80);
COMMENT ON TABLE skene.event_counts IS 'Per customer, how often each event that a milestone loop counts was tracked';

CREATE TABLE skene.loop_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loop_name   text NOT NULL,
    slot        timestamptz NOT NULL,  -- the schedule's minute this run is for
    state       text NOT NULL CHECK (state IN (
                    'running',     -- in progress (only visible to its own transaction)
                    'succeeded',   -- done
                    'failed')),    -- error holds the database's message; nothing queued
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    candidates  integer NOT NULL DEFAULT 0,
    queued      integer NOT NULL DEFAULT 0,
    held_out    integer NOT NULL DEFAULT 0,
    error       text,
    CONSTRAINT loop_runs_slot UNIQUE (loop_name, slot)
);
COMMENT ON TABLE skene.loop_runs IS 'One row per loop and time slot: a slot runs once, however many schedulers fire it';

CREATE TABLE skene.loop_sends (
    loop_name      text NOT NULL,
    customer_id    text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    episode_start  timestamptz NOT NULL,  -- the last activity before the customer went dormant
    step           integer NOT NULL,      -- 0: dormant_after, 1..: steps[]
    held_out       boolean NOT NULL,
    job_id         bigint,                -- NULL when held out
    run_id         bigint REFERENCES skene.loop_runs ON DELETE SET NULL,
    sent_at        timestamptz NOT NULL,
    reactivated_at timestamptz,           -- first activity after sent_at
    PRIMARY KEY (loop_name, customer_id, episode_start, step)
);
COMMENT ON TABLE skene.loop_sends IS 'Each dormancy episode''s steps reached per loop: one row, one message at most, holdout recorded too';
CREATE INDEX IF NOT EXISTS loop_sends_waiting ON skene.loop_sends (customer_id) WHERE reactivated_at IS NULL;

CREATE TABLE skene.milestones_reached (
    loop_name   text NOT NULL,
    customer_id text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    threshold   bigint NOT NULL,
    value       bigint NOT NULL,
    job_id      bigint,
    reached_at  timestamptz NOT NULL,
    PRIMARY KEY (loop_name, customer_id, threshold)
);
COMMENT ON TABLE skene.milestones_reached IS 'Thresholds each customer crossed: the celebration is sent once, never again';

CREATE INDEX IF NOT EXISTS loops_milestone_event ON skene.loops ((config ->> 'event')) WHERE type = 'milestone';

-- ---------------------------------------------------------------------------------
-- Milestones
-- ---------------------------------------------------------------------------------

-- Crossing from `before` to `after`: each threshold in (before, after] of each
-- milestone loop counting this feature or event is recorded and celebrated once.
CREATE FUNCTION skene.reach_milestones(customer_id text, feature text, event text,
                                       before bigint, after bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_loop  record;
    v_t     bigint;
    v_job   bigint;
    v_count integer := 0;
    v_now   timestamptz := skene.now();
BEGIN
    FOR v_loop IN
        SELECT l.name, l.config FROM skene.loops l
         WHERE l.type = 'milestone' AND l.enabled
           AND ((feature IS NOT NULL AND l.feature = feature)
                OR (event IS NOT NULL AND l.config ->> 'event' = event))
    LOOP
        FOR v_t IN
            SELECT t::bigint FROM jsonb_array_elements_text(v_loop.config -> 'thresholds') t
             WHERE t::bigint > before AND t::bigint <= after
        LOOP
            INSERT INTO skene.milestones_reached AS m (loop_name, customer_id, threshold, value, reached_at)
            VALUES (v_loop.name, customer_id, v_t, after, v_now)
            ON CONFLICT ON CONSTRAINT milestones_reached_pkey DO NOTHING;
            CONTINUE WHEN NOT FOUND;  -- celebrated before: never again
            v_job := skene.enqueue(
                kind => 'email',
                payload => jsonb_build_object(
                    'template', coalesce(v_loop.config ->> 'template', 'milestone'),
                    'feature', coalesce(feature, event), 'event', event,
                    'used', v_t, 'value', after, 'threshold', v_t,
                    'message', v_loop.config ->> 'message'),
                customer_id => customer_id, loop_name => v_loop.name,
                dedupe_key => format('milestone:%s:%s:%s', v_loop.name, v_t, customer_id),
                max_attempts => coalesce((v_loop.config #>> '{recovery,retries}')::int + 1, 5));
            UPDATE skene.milestones_reached m SET job_id = v_job
             WHERE m.loop_name = v_loop.name AND m.customer_id = customer_id AND m.threshold = v_t;
            v_count := v_count + 1;
        END LOOP;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION skene.reach_milestones(text, text, text, bigint, bigint) IS 'Record and celebrate the milestone thresholds crossed between two counts; internal';

CREATE FUNCTION skene.usage_milestones() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before bigint := 0;
BEGIN
    -- a new period starts from zero: crossing is measured within the period
    IF TG_OP = 'UPDATE' AND OLD.period_start IS NOT DISTINCT FROM NEW.period_start THEN
        v_before := OLD.used;
    END IF;
    IF NEW.used > v_before THEN
        PERFORM skene.reach_milestones(NEW.customer_id, NEW.feature, NULL, v_before, NEW.used);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.usage_milestones() IS 'Trigger on skene.usage for features with a milestone loop; installed by skene.sync_milestone_trigger';

-- The triggers on the gate's hottest table exist only while a milestone loop counts a
-- feature, and fire only when a call crosses one of that feature's thresholds: their
-- WHEN names each feature with its sorted thresholds, and width_bucket() counts the
-- thresholds at or below a count. Other calls pay one expression, not a trigger call.
CREATE FUNCTION skene.sync_milestone_trigger() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_on_insert text;
    v_on_update text;
BEGIN
    SELECT string_agg(format('(new.feature = %L AND width_bucket(new.used, %L::bigint[]) > 0)',
                             f.feature, f.thresholds), ' OR ' ORDER BY f.feature),
           string_agg(format('(new.feature = %L AND width_bucket(new.used, %2$L::bigint[]) > '
                             'width_bucket(CASE WHEN old.period_start IS NOT DISTINCT FROM '
                             'new.period_start THEN old.used ELSE 0 END, %2$L::bigint[]))',
                             f.feature, f.thresholds), ' OR ' ORDER BY f.feature)
      INTO v_on_insert, v_on_update
      FROM (SELECT l.feature, array_agg(DISTINCT t::bigint ORDER BY t::bigint) AS thresholds
              FROM skene.loops l CROSS JOIN jsonb_array_elements_text(l.config -> 'thresholds') t
             WHERE l.type = 'milestone' AND l.enabled AND l.feature IS NOT NULL
             GROUP BY l.feature) f;
    PERFORM skene.sync_usage_trigger('usage_milestones_insert', 'INSERT', v_on_insert,
                                     'skene.usage_milestones');
    PERFORM skene.sync_usage_trigger('usage_milestones', 'UPDATE OF used', v_on_update,
                                     'skene.usage_milestones');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.sync_milestone_trigger() IS 'Keep the skene.usage milestone triggers to exactly the features and thresholds milestone loops count';

CREATE TRIGGER loops_milestone_features AFTER INSERT OR UPDATE OR DELETE ON skene.loops
    FOR EACH STATEMENT EXECUTE FUNCTION skene.sync_milestone_trigger();

-- ---------------------------------------------------------------------------------
-- skene.track and watched tables
-- ---------------------------------------------------------------------------------

-- A customer back after a retention message (or its held-out twin): success is
-- measured from here, and messages still waiting (quiet hours) are no longer needed.
CREATE FUNCTION skene.note_comeback(customer_id text, at_time timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
BEGIN
    UPDATE skene.loop_sends s SET reactivated_at = at_time
     WHERE s.customer_id = customer_id AND s.reactivated_at IS NULL AND s.sent_at <= at_time;
    IF NOT EXISTS (SELECT 1 FROM skene.loop_sends s
                    WHERE s.customer_id = customer_id AND s.reactivated_at IS NULL) THEN
        UPDATE skene.customers c SET awaiting_reactivation = false WHERE c.customer_id = customer_id;
    END IF;
    UPDATE skene.jobs j SET state = 'skipped', finished_at = skene.now(),
                            last_error = format('the customer was active again at %s', at_time)
      FROM skene.loops l
     WHERE j.customer_id = customer_id AND j.state IN ('available', 'retryable')
       AND l.name = j.loop_name AND l.type = 'retention'
       AND (j.payload ->> 'episode_start')::timestamptz < at_time;
END
$$;
COMMENT ON FUNCTION skene.note_comeback(text, timestamptz) IS 'Record a comeback after retention messages and skip those still waiting; internal';

-- How finely last_activity_at is kept. Activity within this of the stored time only
-- reads the customer row: a session's events cost a lookup each, not a write of the
-- wide, hot row, so track() stays near the cost of a bare insert. Dormancy is measured
-- in days; the stored time is at most this much earlier than the true last activity.
CREATE FUNCTION skene.activity_resolution() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN interval '1 minute';
COMMENT ON FUNCTION skene.activity_resolution() IS 'How finely skene.customers.last_activity_at is kept';

-- The activity of one customer at one time, without validation (track() validates;
-- the watch trigger trusts its table). Writes the customer row only for activity newer
-- than the stored time by more than the resolution, a comeback after a retention
-- message, or a new customer; otherwise the UPDATE matches nothing and writes nothing.
-- UPDATE first: a write then costs one index lookup, not a read and then a write.
CREATE FUNCTION skene.record_activity(customer_id text, at_time timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_waiting boolean;
BEGIN
    UPDATE skene.customers c SET last_activity_at = greatest(c.last_activity_at, at_time)
     WHERE c.customer_id = customer_id
       AND (c.awaiting_reactivation OR c.last_activity_at IS NULL
            OR c.last_activity_at < at_time - skene.activity_resolution())
    RETURNING c.awaiting_reactivation INTO v_waiting;
    IF FOUND THEN
        IF v_waiting THEN
            PERFORM skene.note_comeback(customer_id, at_time);
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM skene.customers c WHERE c.customer_id = customer_id) THEN
        PERFORM skene.register_customer(customer_id);
        UPDATE skene.customers c SET last_activity_at = greatest(c.last_activity_at, at_time)
         WHERE c.customer_id = customer_id;
    END IF;
END
$$;
COMMENT ON FUNCTION skene.record_activity(text, timestamptz) IS 'Keep a customer''s last activity and note a comeback after a retention message; internal';

-- Runs on every tracked event, so it should cost little more than the INSERT into an
-- events table it replaces (docs/benchmarks.md): see skene.activity_resolution.
CREATE FUNCTION skene.track(customer_id text, event text, properties jsonb DEFAULT '{}',
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

CREATE FUNCTION skene.watched_activity() RETURNS trigger
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

CREATE FUNCTION skene.watch_activity("table" regclass, customer_column text, time_column text)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_column text;
BEGIN
    FOREACH v_column IN ARRAY ARRAY[customer_column, time_column] LOOP
        IF v_column IS NULL OR NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = "table" AND a.attname = v_column AND a.attnum > 0
                   AND NOT a.attisdropped) THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: %s has no column %s', "table", coalesce(quote_ident(v_column), 'NULL')),
                HINT = 'Name the columns holding the customer id and the time of each row.';
        END IF;
    END LOOP;
    EXECUTE format('DROP TRIGGER IF EXISTS skene_activity ON %s', "table");
    EXECUTE format('CREATE TRIGGER skene_activity AFTER INSERT ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION skene.watched_activity(%L, %L)',
                   "table", customer_column, time_column);
END
$$;
COMMENT ON FUNCTION skene.watch_activity(regclass, text, text) IS 'Treat every row inserted into an app''s events table as activity of its customer';

CREATE FUNCTION skene.unwatch_activity("table" regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS skene_activity ON %s', "table");
END
$$;
COMMENT ON FUNCTION skene.unwatch_activity(regclass) IS 'Remove the trigger skene.watch_activity installed';

-- ---------------------------------------------------------------------------------
-- Retention loops
-- ---------------------------------------------------------------------------------

-- When a message may go out: `at_time`, or the end of the customer's quiet window.
CREATE FUNCTION skene.quiet_until(at_time timestamptz, timezone text, quiet_start time,
                                  quiet_end time)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
    v_local timestamp := at_time AT TIME ZONE coalesce(timezone, 'UTC');
    v_time  time := v_local::time;
BEGIN
    IF quiet_start IS NULL OR quiet_end IS NULL OR quiet_start = quiet_end THEN
        RETURN at_time;
    ELSIF quiet_start > quiet_end THEN  -- across midnight, e.g. 21:00-08:00
        IF v_time >= quiet_start THEN
            RETURN (v_local::date + 1 + quiet_end) AT TIME ZONE coalesce(timezone, 'UTC');
        ELSIF v_time < quiet_end THEN
            RETURN (v_local::date + quiet_end) AT TIME ZONE coalesce(timezone, 'UTC');
        END IF;
    ELSIF v_time >= quiet_start AND v_time < quiet_end THEN
        RETURN (v_local::date + quiet_end) AT TIME ZONE coalesce(timezone, 'UTC');
    END IF;
    RETURN at_time;
END
$$;
COMMENT ON FUNCTION skene.quiet_until(timestamptz, text, time, time) IS 'The first time at or after at_time outside the quiet window in that time zone';

-- A loop's quiet window (default 21:00-08:00; equal start and end: none).
CREATE FUNCTION skene.quiet_hours(config jsonb, OUT quiet_start time, OUT quiet_end time)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(config #>> '{quiet_hours,start}', '21:00')::time,
           coalesce(config #>> '{quiet_hours,end}', '08:00')::time
$$;
COMMENT ON FUNCTION skene.quiet_hours(jsonb) IS 'The quiet window of a retention loop''s config, with its defaults';

-- When each retention job may go out now: the end of its loop's quiet hours in the
-- customer's time zone, or now. The worker asks before sending, so a retry or a
-- rate-limit deferral that lands in quiet hours waits as well.
CREATE FUNCTION skene.retention_send_after(job_ids bigint[])
RETURNS TABLE (job_id bigint, send_after timestamptz, now timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT j.id, skene.quiet_until(skene.now(), c.timezone, q.quiet_start, q.quiet_end),
           skene.now()
      FROM skene.jobs j
      JOIN skene.loops l ON l.name = j.loop_name AND l.type = 'retention'
      JOIN skene.customers c ON c.customer_id = j.customer_id
     CROSS JOIN LATERAL skene.quiet_hours(l.config) q
     WHERE j.id = ANY (job_ids)
$$;
COMMENT ON FUNCTION skene.retention_send_after(bigint[]) IS 'For the worker: when each retention job may be sent (after quiet hours), and the time now';

-- 0-99, stable for a customer and loop: below the holdout percentage means held out.
CREATE FUNCTION skene.holdout_bucket(customer_id text, loop_name text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (('x' || pg_catalog.substr(pg_catalog.md5($2 || ':' || $1), 1, 8))::bit(32)::bigint % 100)::integer
$$;
COMMENT ON FUNCTION skene.holdout_bucket(text, text) IS 'Deterministic 0-99 bucket of a customer in a loop (md5), for the holdout';

-- Runs of retention loops take turns (a transaction-level advisory lock), so the
-- frequency cap sees what another loop's run queued in the same minute. The callers
-- that set a statement_timeout for the segment (pg_cron's command, the worker) take
-- their turn in a statement of its own first: waiting must not use up the timeout.
CREATE FUNCTION skene.retention_turn() RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('skene.retention_turn')) $$;
COMMENT ON FUNCTION skene.retention_turn() IS 'Wait for the turn to run a retention loop, until the transaction ends';

-- SECURITY DEFINER: a loop runs with the rights of the schema's owner (who applied
-- the config) whether pg_cron, the worker's role or a person starts it; its segment
-- runs with the loop's segment_search_path.
CREATE FUNCTION skene.run_loop(name text, slot timestamptz DEFAULT NULL)
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

CREATE FUNCTION skene.queue_retention(loop_name text, config jsonb, at_time timestamptz, run_id bigint,
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
    v_path      text;
BEGIN
    IF v_segment THEN
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
          FROM pg_temp.skene_segment s WHERE v_segment
    ), dormant AS (
        SELECT c.customer_id, c.last_activity_at AS episode_start, c.timezone,
               coalesce(g.vars, '{}') AS vars, due.step, due.template
          FROM skene.customers c
          LEFT JOIN segment g ON g.customer_id = c.customer_id
          -- the latest step due: a customer found late skips the steps it missed
          CROSS JOIN LATERAL (SELECT st.step, st.template FROM steps st
                               WHERE st.after <= at_time - c.last_activity_at
                               ORDER BY st.after DESC LIMIT 1) due
         WHERE c.last_activity_at <= at_time - v_first
           AND (NOT v_segment OR g.customer_id IS NOT NULL)
           AND c.email IS NOT NULL AND c.unsubscribed_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM skene.suppressions x
                            WHERE x.email = pg_catalog.lower(pg_catalog.btrim(c.email)))
    )
    SELECT d.customer_id, d.episode_start, d.timezone, d.vars, d.step, d.template,
           skene.holdout_bucket(d.customer_id, loop_name) < v_holdout AS held_out
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
               skene.quiet_until(at_time, d.timezone, v_quiet_s, v_quiet_e), v_attempts
          FROM pg_temp.skene_due d WHERE NOT d.held_out
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING j.id, j.customer_id
    ), sends AS (
        INSERT INTO skene.loop_sends (loop_name, customer_id, episode_start, step, held_out, job_id, run_id, sent_at)
        SELECT loop_name, d.customer_id, d.episode_start, d.step, d.held_out, jobs.id, run_id, at_time
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
COMMENT ON FUNCTION skene.queue_retention(text, jsonb, timestamptz, bigint) IS 'The body of a retention run: dormant customers'' due steps, holdout recorded, messages queued; internal';

-- ---------------------------------------------------------------------------------
-- Reports
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.retention_report(window_days integer DEFAULT 7)
RETURNS TABLE (loop_name text, arm text, measured bigint, reactivated bigint, rate numeric,
               open bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    -- One unit per loop, customer and episode, reactivated if the customer came back
    -- within the window after any of its messages (or their held-out twins). An
    -- episode is measured once its whole sequence could have run: its first message,
    -- plus the time to the loop's last step, plus the window. That moment does not
    -- depend on the outcome (a customer who comes back gets no later steps), so
    -- successes are not counted sooner than failures. The rest are `open`.
    WITH spans AS (
        SELECT l.name AS loop_name,
               coalesce((SELECT max((st ->> 'after')::interval)
                           FROM jsonb_array_elements(l.config -> 'steps') st)
                        - (l.config ->> 'dormant_after')::interval, interval '0')
                 + make_interval(days => $1) AS span
          FROM skene.loops l WHERE l.type = 'retention'
    ), episodes AS (
        SELECT s.loop_name, s.customer_id, s.episode_start, bool_or(s.held_out) AS held_out,
               bool_or(s.reactivated_at <= s.sent_at + make_interval(days => $1)) AS back,
               min(s.sent_at) + coalesce(min(p.span), make_interval(days => $1))
                 <= skene.now() AS closed
          FROM skene.loop_sends s LEFT JOIN spans p ON p.loop_name = s.loop_name
         GROUP BY s.loop_name, s.customer_id, s.episode_start
    )
    SELECT e.loop_name, CASE WHEN e.held_out THEN 'holdout' ELSE 'emailed' END,
           count(*) FILTER (WHERE e.closed),
           count(*) FILTER (WHERE e.closed AND e.back),
           round(count(*) FILTER (WHERE e.closed AND e.back)::numeric
                 / nullif(count(*) FILTER (WHERE e.closed), 0), 4),
           count(*) FILTER (WHERE NOT e.closed)
      FROM episodes e
     GROUP BY 1, 2 ORDER BY 1, 2
$$;
COMMENT ON FUNCTION skene.retention_report(integer) IS 'Reactivation within N days of a message per retention loop, emailed vs holdout, over episodes whose sequence and window have passed';

-- ---------------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION
    skene.reach_milestones(text, text, text, bigint, bigint),
    skene.usage_milestones(),
    skene.sync_milestone_trigger(),
    skene.note_comeback(text, timestamptz),
    skene.activity_resolution(),
    skene.record_activity(text, timestamptz),
    skene.track(text, text, jsonb, timestamptz),
    skene.watched_activity(),
    skene.watch_activity(regclass, text, text),
    skene.unwatch_activity(regclass),
    skene.quiet_until(timestamptz, text, time, time),
    skene.quiet_hours(jsonb),
    skene.retention_turn(),
    skene.retention_send_after(bigint[]),
    skene.holdout_bucket(text, text),
    skene.run_loop(text, timestamptz),
    skene.queue_retention(text, jsonb, timestamptz, bigint),
    skene.retention_report(integer)
  FROM PUBLIC;
-- watch_activity is DDL on the app's tables, done once by whoever owns them (a
-- migration), not by the application role at run time: not granted to skene_app.
GRANT EXECUTE ON FUNCTION skene.track(text, text, jsonb, timestamptz) TO skene_app, skene_worker;
GRANT EXECUTE ON FUNCTION skene.retention_report(integer) TO skene_worker;
-- the worker runs the schedules pg_cron does not (skene-pg listen)
GRANT EXECUTE ON FUNCTION skene.run_loop(text, timestamptz) TO skene_worker;
GRANT EXECUTE ON FUNCTION skene.retention_send_after(bigint[]), skene.retention_turn()
  TO skene_worker;
GRANT SELECT ON skene.event_counts, skene.loop_runs, skene.loop_sends, skene.milestones_reached
  TO skene_worker;
