-- skene-pg 0008: paper cuts.
-- A deferral (quiet hours, a provider's rate limit) is no longer counted as an attempt:
-- skene.jobs keeps it apart in `deferrals`. A retention message's sent_at is the time
-- it really went out, so reactivation is measured from then. A retention loop may give
-- customers without a time zone a default one for its quiet hours. An upgrade prompt
-- carries the amount the blocked call requested. The test clock may be moved by
-- members of skene_test_clock, a role an operator creates in test clusters only.

-- ---------------------------------------------------------------------------------
-- Attempts and deferrals
-- ---------------------------------------------------------------------------------

ALTER TABLE skene.jobs ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN skene.jobs.attempt IS 'Attempts so far (the running one included); a deferral is not one';
COMMENT ON COLUMN skene.jobs.deferrals IS 'Times the job was deferred (quiet hours, rate limit) instead of attempted';
COMMENT ON COLUMN skene.job_attempts.attempt IS 'The run''s number for its job, 1, 2, ...: attempts and deferrals counted together (skene.jobs.attempt + deferrals when claimed)';

-- Until now every claim counted as an attempt, deferred ones too.
UPDATE skene.jobs j SET deferrals = d.n, attempt = j.attempt - d.n
  FROM (SELECT a.job_id, count(*)::integer AS n FROM skene.job_attempts a
         WHERE a.outcome = 'deferred' GROUP BY a.job_id) d
 WHERE j.id = d.job_id;

CREATE OR REPLACE FUNCTION skene.claim_jobs(worker text, max_jobs integer DEFAULT 10,
                                            lease interval DEFAULT '30 seconds', kinds text[] DEFAULT NULL)
RETURNS SETOF skene.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now timestamptz := skene.now();
BEGIN
    IF worker IS NULL OR worker = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'skene: worker must be a non-empty name',
            HINT = 'Name the worker, e.g. host:pid, so operators can see who holds a job.';
    END IF;
    IF max_jobs IS NULL OR max_jobs < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: max_jobs must be at least 1, got %s', coalesce(max_jobs::text, 'NULL')),
            HINT = 'Claim as many jobs as the worker has free slots.';
    END IF;
    IF lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: lease must be a positive interval, got %s', coalesce(lease::text, 'NULL')),
            HINT = 'A lease of 30 seconds, extended while the job runs, is the default.';
    END IF;
    -- A claim is an attempt until its finish says it was deferred (finish_job gives the
    -- attempt back and counts a deferral). job_attempts numbers every run of the job,
    -- attempts and deferrals together.
    RETURN QUERY
    WITH due AS (
        SELECT j.id FROM skene.jobs j
         WHERE j.state IN ('available', 'retryable') AND j.run_at <= v_now
           AND (kinds IS NULL OR j.kind = ANY (kinds))
         ORDER BY j.run_at, j.id
         LIMIT max_jobs
           FOR UPDATE SKIP LOCKED  -- concurrent workers take different jobs, never wait
    ), claimed AS (
        UPDATE skene.jobs j
           SET state = 'running', attempt = j.attempt + 1,
               lease_token = pg_catalog.gen_random_uuid(),
               locked_until = v_now + lease, locked_by = worker
          FROM due
         WHERE j.id = due.id
        RETURNING j.*
    ), attempts AS (
        INSERT INTO skene.job_attempts (job_id, attempt, worker, started_at)
        SELECT c.id, c.attempt + c.deferrals, worker, v_now FROM claimed c
    )
    SELECT * FROM claimed c ORDER BY c.run_at, c.id;
END
$$;
COMMENT ON FUNCTION skene.claim_jobs(text, integer, interval, text[]) IS 'Claim up to max_jobs due jobs (SKIP LOCKED) with a lease and a new lease token; attempt + 1 (given back if the run ends deferred)';

-- A retention message went out: its reactivation window starts now. Activity while it
-- was being sent may have ended the customer's wait (note_comeback): wait again.
CREATE FUNCTION skene.note_retention_sent(job_id bigint, loop_name text, customer_id text,
                                          at_time timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
BEGIN
    -- (loop_name, customer_id) is the primary key's prefix: an index lookup, and
    -- nothing for jobs of other loops
    UPDATE skene.loop_sends s SET sent_at = at_time
     WHERE s.loop_name = loop_name AND s.customer_id = customer_id AND s.job_id = job_id
       AND s.sent_at IS NULL;
    IF FOUND THEN
        UPDATE skene.customers c SET awaiting_reactivation = true
         WHERE c.customer_id = customer_id AND NOT c.awaiting_reactivation;
    END IF;
END
$$;
COMMENT ON FUNCTION skene.note_retention_sent(bigint, text, text, timestamptz) IS 'Record when a retention message really went out (finish_job of a succeeded job); internal';

CREATE OR REPLACE FUNCTION skene.finish_job(job_id bigint, lease_token uuid, outcome text,
                                            error text DEFAULT NULL, retry_at timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now      timestamptz := skene.now();
    v_job      record;
    v_failures integer;
    v_state    text;
    v_error    text := error;
    v_deferred integer := CASE WHEN outcome = 'deferred' THEN 1 ELSE 0 END;
BEGIN
    IF outcome IS NULL OR outcome NOT IN ('succeeded', 'skipped', 'dead', 'retryable', 'deferred') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown job outcome %s', coalesce(quote_literal(outcome), 'NULL')),
            HINT = 'Outcomes are succeeded, skipped, dead, retryable (a failure, retried at retry_at) '
                   'and deferred (rate-limited: retried at retry_at, not counted as a failure).';
    END IF;
    SELECT j.attempt, j.deferrals, j.max_attempts, j.loop_name, j.customer_id INTO v_job
      FROM skene.jobs j
     WHERE j.id = job_id AND j.lease_token = lease_token AND j.state = 'running'
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;  -- a stale worker: its lease was reaped or the job cancelled
    END IF;
    v_state := CASE outcome WHEN 'deferred' THEN 'available' ELSE outcome END;
    IF outcome = 'retryable' THEN
        SELECT count(*) + 1 INTO v_failures FROM skene.job_attempts a
         WHERE a.job_id = job_id AND a.outcome = 'failed';
        IF v_failures >= v_job.max_attempts THEN
            v_state := 'dead';
            v_error := format('gave up after %s failed attempt(s): %s', v_failures, error);
        END IF;
    END IF;
    UPDATE skene.jobs j
       SET state = v_state, lease_token = NULL, locked_until = NULL, locked_by = NULL,
           last_error = v_error,
           -- a deferral gives the claim's attempt back: it was not tried
           attempt = j.attempt - v_deferred, deferrals = j.deferrals + v_deferred,
           run_at = CASE WHEN v_state IN ('retryable', 'available')
                         THEN greatest(coalesce(retry_at, v_now), v_now) ELSE j.run_at END,
           finished_at = CASE WHEN v_state IN ('succeeded', 'skipped', 'dead') THEN v_now END
     WHERE j.id = job_id;
    UPDATE skene.job_attempts a
       SET finished_at = v_now, error = error,
           outcome = CASE outcome WHEN 'retryable' THEN 'failed' ELSE outcome END
     WHERE a.job_id = job_id AND a.attempt = v_job.attempt + v_job.deferrals;
    IF outcome = 'succeeded' AND v_job.loop_name IS NOT NULL AND v_job.customer_id IS NOT NULL THEN
        PERFORM skene.note_retention_sent(job_id, v_job.loop_name, v_job.customer_id, v_now);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.finish_job(bigint, uuid, text, text, timestamptz) IS 'End a job''s attempt (or deferral) while the lease token matches; false (and nothing changed) for a stale worker';

CREATE OR REPLACE FUNCTION skene.reap_expired_leases(max_lost integer DEFAULT 3) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now   timestamptz := skene.now();
    v_job   record;
    v_lost  integer;
    v_error text;
    v_count integer := 0;
BEGIN
    FOR v_job IN
        SELECT j.id, j.attempt, j.deferrals, j.locked_by, j.locked_until FROM skene.jobs j
         WHERE j.state = 'running' AND j.locked_until < v_now
         ORDER BY j.locked_until
           FOR UPDATE SKIP LOCKED
    LOOP
        v_error := format('lease expired at %s: worker %s stopped without finishing',
                          v_job.locked_until, v_job.locked_by);
        UPDATE skene.job_attempts a SET finished_at = v_now, outcome = 'lost', error = v_error
         WHERE a.job_id = v_job.id AND a.attempt = v_job.attempt + v_job.deferrals;
        -- A lost lease is not the job's failure (the send is idempotent, so it is simply
        -- run again), but a job that takes its worker down every time must stop. It
        -- stays counted as an attempt: the send may have gone out.
        SELECT count(*) INTO v_lost FROM skene.job_attempts a
         WHERE a.job_id = v_job.id AND a.outcome = 'lost';
        UPDATE skene.jobs j
           SET state = CASE WHEN v_lost >= max_lost THEN 'dead' ELSE 'retryable' END,
               lease_token = NULL, locked_until = NULL, locked_by = NULL, run_at = v_now,
               last_error = CASE WHEN v_lost >= max_lost
                                 THEN format('lost its lease %s times, last: %s', v_lost, v_error)
                                 ELSE v_error END,
               finished_at = CASE WHEN v_lost >= max_lost THEN v_now END
         WHERE j.id = v_job.id;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION skene.reap_expired_leases(integer) IS 'Return running jobs whose lease expired to the queue (dead after max_lost lost leases); returns how many';

CREATE OR REPLACE FUNCTION skene.cancel_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_job skene.jobs := skene.lock_job(job_id);
BEGIN
    IF v_job.state = 'cancelled' THEN
        RETURN false;
    END IF;
    IF v_job.state NOT IN ('available', 'retryable', 'running') THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('skene: job %s is %s and cannot be cancelled', job_id, v_job.state),
            HINT = 'Only jobs that have not finished (available, retryable, running) can be cancelled.';
    END IF;
    IF v_job.state = 'running' THEN
        -- The worker's finish will no longer match; a send already in flight may land.
        UPDATE skene.job_attempts a SET finished_at = skene.now(), outcome = 'cancelled',
                                        error = 'cancelled by an operator while running'
         WHERE a.job_id = job_id AND a.attempt = v_job.attempt + v_job.deferrals;
    END IF;
    UPDATE skene.jobs j
       SET state = 'cancelled', lease_token = NULL, locked_until = NULL, locked_by = NULL,
           finished_at = skene.now()
     WHERE j.id = job_id;
    RETURN true;
END
$$;

-- ---------------------------------------------------------------------------------
-- Retention: sent_at is when the message went out; a loop's default time zone
-- ---------------------------------------------------------------------------------

-- sent_at was the time the run queued the message, also while quiet hours held it
-- back. It is now the time it went out (NULL until then, and for messages never
-- sent); for a held-out twin, the time its message would have gone out.
ALTER TABLE skene.loop_sends ADD COLUMN IF NOT EXISTS queued_at timestamptz;
UPDATE skene.loop_sends s SET queued_at = s.sent_at;
ALTER TABLE skene.loop_sends ALTER COLUMN queued_at SET NOT NULL;
ALTER TABLE skene.loop_sends ALTER COLUMN sent_at DROP NOT NULL;
-- a message queued before this migration: its job finished when it went out
UPDATE skene.loop_sends s SET sent_at = CASE WHEN j.state = 'succeeded' THEN j.finished_at END
  FROM skene.jobs j
 WHERE j.id = s.job_id AND NOT s.held_out;
COMMENT ON COLUMN skene.loop_sends.queued_at IS 'When the run queued the message (or recorded its held-out twin)';
COMMENT ON COLUMN skene.loop_sends.sent_at IS 'When the message went out (NULL until then, and if it never did); held out: when it would have';
COMMENT ON COLUMN skene.loop_sends.reactivated_at IS 'First activity after sent_at';

-- The time zone a loop's quiet hours use for a customer: the customer's own, else the
-- loop's quiet_hours.default_timezone, else UTC.
CREATE FUNCTION skene.loop_timezone(config jsonb, customer_timezone text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce($2, $1 #>> '{quiet_hours,default_timezone}', 'UTC') $$;
COMMENT ON FUNCTION skene.loop_timezone(jsonb, text) IS 'The customer''s time zone, else the loop''s quiet_hours.default_timezone, else UTC';

-- skene-pg apply checks the name first (with the file's line); this guards every
-- other writer, so a run never fails on a zone PostgreSQL does not know.
CREATE FUNCTION skene.check_loop_timezone() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_zone text := NEW.config #>> '{quiet_hours,default_timezone}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = v_zone) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown time zone %L in quiet_hours.default_timezone of loop %s',
                             v_zone, NEW.name),
            HINT = 'Use a name PostgreSQL knows (pg_timezone_names), such as ''America/New_York'' or ''Europe/Berlin''.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION skene.check_loop_timezone() IS 'Trigger on skene.loops: a quiet_hours.default_timezone must be a time zone PostgreSQL knows';

CREATE TRIGGER loops_default_timezone BEFORE INSERT OR UPDATE OF config ON skene.loops
    FOR EACH ROW WHEN ((NEW.config #>> '{quiet_hours,default_timezone}') IS NOT NULL)
    EXECUTE FUNCTION skene.check_loop_timezone();

-- A customer back after a retention message (or its held-out twin): success is
-- measured from here, and messages still waiting (quiet hours) are no longer needed.
CREATE OR REPLACE FUNCTION skene.note_comeback(customer_id text, at_time timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
BEGIN
    -- only messages that were out by then: a comeback before the send is not theirs
    UPDATE skene.loop_sends s SET reactivated_at = at_time
     WHERE s.customer_id = customer_id AND s.reactivated_at IS NULL AND s.sent_at <= at_time;
    -- A held-out twin whose message would still be waiting is treated like that
    -- message, which is skipped below: it never went out.
    UPDATE skene.loop_sends s SET sent_at = NULL
     WHERE s.customer_id = customer_id AND s.held_out AND s.reactivated_at IS NULL
       AND s.sent_at > skene.now();
    IF NOT EXISTS (SELECT 1 FROM skene.loop_sends s
                    WHERE s.customer_id = customer_id AND s.reactivated_at IS NULL
                      AND s.sent_at IS NOT NULL) THEN
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
COMMENT ON FUNCTION skene.note_comeback(text, timestamptz) IS 'Record a comeback after retention messages that went out and skip those still waiting; internal';

CREATE OR REPLACE FUNCTION skene.retention_send_after(job_ids bigint[])
RETURNS TABLE (job_id bigint, send_after timestamptz, now timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT j.id,
           skene.quiet_until(skene.now(), skene.loop_timezone(l.config, c.timezone),
                             q.quiet_start, q.quiet_end),
           skene.now()
      FROM skene.jobs j
      JOIN skene.loops l ON l.name = j.loop_name AND l.type = 'retention'
      JOIN skene.customers c ON c.customer_id = j.customer_id
     CROSS JOIN LATERAL skene.quiet_hours(l.config) q
     WHERE j.id = ANY (job_ids)
$$;
COMMENT ON FUNCTION skene.retention_send_after(bigint[]) IS 'For the worker: when each retention job may be sent (after quiet hours, in the customer''s or the loop''s default time zone), and the time now';

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

CREATE OR REPLACE FUNCTION skene.retention_report(window_days integer DEFAULT 7)
RETURNS TABLE (loop_name text, arm text, measured bigint, reactivated bigint, rate numeric,
               open bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    -- One unit per loop, customer and episode, reactivated if the customer came back
    -- within the window after any of its messages went out (or after their held-out
    -- twins would have). An episode is measured once its whole sequence could have
    -- run: its first message out, plus the time to the loop's last step, plus the
    -- window. That moment does not depend on the outcome (a customer who comes back
    -- gets no later steps), so successes are not counted sooner than failures.
    -- Episodes whose first message is still waiting, or not measured yet, are `open`;
    -- episodes none of whose messages ever went out (skipped: the customer was back
    -- before) are neither.
    WITH spans AS (
        SELECT l.name AS loop_name,
               coalesce((SELECT max((st ->> 'after')::interval)
                           FROM jsonb_array_elements(l.config -> 'steps') st)
                        - (l.config ->> 'dormant_after')::interval, interval '0')
                 + make_interval(days => $1) AS span
          FROM skene.loops l WHERE l.type = 'retention'
    ), episodes AS (
        SELECT s.loop_name, s.customer_id, s.episode_start, bool_or(s.held_out) AS held_out,
               bool_or(s.reactivated_at >= s.sent_at
                       AND s.reactivated_at <= s.sent_at + make_interval(days => $1)) AS back,
               min(s.sent_at) + coalesce(min(p.span), make_interval(days => $1))
                 <= skene.now() AS closed,
               bool_or(j.state IN ('available', 'retryable', 'running')) AS waiting
          FROM skene.loop_sends s LEFT JOIN spans p ON p.loop_name = s.loop_name
          LEFT JOIN skene.jobs j ON j.id = s.job_id AND s.sent_at IS NULL
         GROUP BY s.loop_name, s.customer_id, s.episode_start
    )
    SELECT e.loop_name, CASE WHEN e.held_out THEN 'holdout' ELSE 'emailed' END,
           count(*) FILTER (WHERE e.closed),
           count(*) FILTER (WHERE e.closed AND e.back),
           round(count(*) FILTER (WHERE e.closed AND e.back)::numeric
                 / nullif(count(*) FILTER (WHERE e.closed), 0), 4),
           count(*) FILTER (WHERE NOT e.closed OR (e.closed IS NULL AND e.waiting))
      FROM episodes e
     GROUP BY 1, 2 ORDER BY 1, 2
$$;
COMMENT ON FUNCTION skene.retention_report(integer) IS 'Reactivation within N days of a message going out per retention loop, emailed vs holdout, over episodes whose sequence and window have passed';

-- ---------------------------------------------------------------------------------
-- Upgrade prompts carry the amount the blocked call requested
-- ---------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION skene.record_block(customer_id text, feature text, hit_period timestamptz,
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
                -- the blocked call's amount: "this request needs 8; your plan allows 5"
                -- reads right where "you've used 0 of 5" does not
                'requested', requested,
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

-- ---------------------------------------------------------------------------------
-- The test clock
-- ---------------------------------------------------------------------------------

-- skene_test_clock is not created here: an operator creates it in test clusters only
-- (CREATE ROLE skene_test_clock NOLOGIN; GRANT skene_test_clock TO app_test), so in
-- production there is no role that moves time. Roles are cluster-wide: one granted to
-- skene_app or skene_worker would reach every application role of the cluster, so
-- the clock role is ignored then. Still a separate function, so that skene.now()
-- stays an inlinable CASE.
CREATE OR REPLACE FUNCTION skene.test_now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                       WHERE r.rolname = pg_catalog.session_user())
                  OR EXISTS (
                         SELECT 1 FROM pg_catalog.pg_roles g
                          WHERE g.rolname = 'skene_test_clock'
                            AND pg_catalog.pg_has_role(pg_catalog.session_user(), g.oid, 'MEMBER')
                            AND NOT EXISTS (
                                    SELECT 1 FROM pg_catalog.pg_roles a
                                     WHERE a.rolname IN ('skene_app', 'skene_worker')
                                       AND pg_catalog.pg_has_role(a.oid, g.oid, 'MEMBER')))
                THEN pg_catalog.current_setting('skene.now')::timestamptz
                ELSE pg_catalog.now() END
$$;
COMMENT ON FUNCTION skene.test_now() IS 'The skene.now setting when the session''s login role may move the clock (a superuser, or a member of skene_test_clock), else now(); internal to skene.now()';
COMMENT ON FUNCTION skene.now() IS 'Current time for skene: the skene.now setting when the session''s login role may move the clock (superusers, members of skene_test_clock), else now()';

REVOKE EXECUTE ON FUNCTION
    skene.note_retention_sent(bigint, text, text, timestamptz),
    skene.loop_timezone(jsonb, text),
    skene.check_loop_timezone()
  FROM PUBLIC;
