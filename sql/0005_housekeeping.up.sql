-- skene-pg 0005: housekeeping.
-- Nothing deleted finished work before: skene.housekeep() deletes finished jobs and
-- their attempts, processed billing events, old retention loop runs (their counts
-- rolled up first) and expired idempotency keys, one short batch per table and call,
-- and keeps whatever a report or a dedupe still reads. skene.claim_periodic() lets
-- many workers run a daily task (housekeeping, the billing reconcile) once between them.

-- ---------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.housekeeping_settings (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),  -- one row
    -- at least a day: today's dedupe keys (the daily reconcile's) must outlive the day
    keep_finished interval NOT NULL DEFAULT '30 days' CHECK (keep_finished >= interval '1 day'),
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.housekeeping_settings IS 'The [housekeeping] table of skene.toml (written by skene-pg apply): how long finished work is kept';
COMMENT ON COLUMN skene.housekeeping_settings.keep_finished IS 'Finished jobs, processed billing events and loop runs older than this are deleted by skene.housekeep()';
INSERT INTO skene.housekeeping_settings DEFAULT VALUES;

CREATE TABLE skene.periodic_runs (
    name        text PRIMARY KEY CHECK (name <> ''),
    last_run_at timestamptz NOT NULL,      -- when a worker last claimed the task
    claims      bigint NOT NULL DEFAULT 1  -- how often it was claimed, for operators
);
COMMENT ON TABLE skene.periodic_runs IS 'Periodic tasks of skene-pg listen (housekeeping, billing reconcile): one claim per period across all workers';

-- Housekeeping deletes old loop runs; `skene-pg report` adds these to the runs left.
CREATE TABLE skene.loop_run_totals (
    loop_name text PRIMARY KEY,
    runs      bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    queued    bigint NOT NULL DEFAULT 0,
    held_out  bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE skene.loop_run_totals IS 'Counts of the retention loop runs housekeeping deleted, per loop, so the report''s run totals stay whole';

-- What each batch looks for, by index, so a batch never scans the table. The jobs
-- index leaves out sent upgrade prompts, which are kept for good (see housekeep): a
-- batch must not step over all of them every time.
CREATE INDEX IF NOT EXISTS jobs_housekeeping ON skene.jobs (finished_at)
    WHERE state IN ('succeeded', 'skipped', 'dead', 'cancelled')
      AND NOT (state = 'succeeded' AND kind = 'email'
               AND pg_catalog.starts_with(coalesce(dedupe_key, ''), 'upgrade_prompt:'));
CREATE INDEX IF NOT EXISTS billing_events_processed ON skene.billing_events (processed_at)
    WHERE processed_at IS NOT NULL;
-- also what the foreign key's ON DELETE SET NULL looks up when a run is deleted
CREATE INDEX IF NOT EXISTS loop_sends_run ON skene.loop_sends (run_id) WHERE run_id IS NOT NULL;

-- ---------------------------------------------------------------------------------
-- Housekeeping
-- ---------------------------------------------------------------------------------

-- One batch per table, in the caller's (short) transaction: call it again while a
-- count reaches batch_size. Rows are taken FOR UPDATE SKIP LOCKED, so a batch never
-- waits for the gate, the queue or an operator, and nobody waits long for a batch.
CREATE FUNCTION skene.housekeep(batch_size integer DEFAULT 1000)
RETURNS TABLE (what text, deleted bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := skene.now();
    v_cutoff   timestamptz;
    v_cap      interval;
    v_jobs     bigint;
    v_attempts bigint;
    v_events   bigint;
    v_detached bigint;
    v_runs     bigint;
    v_keys     bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: batch_size must be at least 1, got %s',
                             coalesce(batch_size::text, 'NULL')),
            HINT = 'Each call deletes at most batch_size rows per table; 1000 is the default.';
    END IF;
    SELECT v_now - s.keep_finished INTO v_cutoff FROM skene.housekeeping_settings s;
    v_cutoff := coalesce(v_cutoff, v_now - interval '30 days');
    -- A retention run counts the marketing email each customer got within its loop's
    -- frequency_cap (skene.queue_retention): keep the sent ones of the longest cap.
    SELECT coalesce(max(coalesce(l.config ->> 'frequency_cap', '24 hours')::interval), interval '0')
      INTO v_cap FROM skene.loops l WHERE l.type = 'retention';

    -- Finished jobs and their attempts. Kept: sent upgrade prompts (skene.funnel counts
    -- them, conversions are attributed to them) and marketing email inside the cap.
    -- Dedupe keys of deleted jobs are safe to free: the rows that make each message
    -- once (limit_hits, loop_sends, milestones_reached, billing_events) are kept.
    WITH batch AS (
        SELECT j.id FROM skene.jobs j
         WHERE j.state IN ('succeeded', 'skipped', 'dead', 'cancelled')
           AND NOT (j.state = 'succeeded' AND j.kind = 'email'
                    AND pg_catalog.starts_with(coalesce(j.dedupe_key, ''), 'upgrade_prompt:'))
           AND j.finished_at <= v_cutoff
           AND NOT (j.state = 'succeeded' AND j.kind = 'email'
                    AND EXISTS (SELECT 1 FROM skene.loops l
                                 WHERE l.name = j.loop_name AND l.type = 'freemium'))
           AND NOT (j.state = 'succeeded' AND j.loop_name IS NOT NULL AND j.run_at > v_now - v_cap)
         ORDER BY j.finished_at
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    ), attempts AS (
        DELETE FROM skene.job_attempts a USING batch WHERE a.job_id = batch.id RETURNING 1
    ), gone AS (
        DELETE FROM skene.jobs j USING batch WHERE j.id = batch.id RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM attempts) INTO v_jobs, v_attempts;

    -- Processed billing events. Unprocessed ones stay: their sync has not applied yet
    -- (or died, and the row is the evidence). A deleted event that Stripe delivers again
    -- only queues one more re-fetch, which applies what Stripe says now.
    WITH batch AS (
        SELECT e.provider, e.event_id FROM skene.billing_events e
         WHERE e.processed_at IS NOT NULL AND e.processed_at <= v_cutoff
         ORDER BY e.processed_at
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM skene.billing_events e USING batch
         WHERE e.provider = batch.provider AND e.event_id = batch.event_id
        RETURNING 1
    )
    SELECT count(*) INTO v_events FROM gone;

    -- Loop runs whose slot is older than the cutoff, except each loop's newest: the
    -- worker runs a loop's latest due slot unless a run at or after it exists, so the
    -- newest run is what keeps an old slot from running again. Their sends lose the
    -- run first, in batches (the foreign key would do all of a run's at once).
    WITH batch AS (
        SELECT s.loop_name, s.customer_id, s.episode_start, s.step FROM skene.loop_sends s
         WHERE s.run_id IN (
                SELECT r.id FROM skene.loop_runs r
                 WHERE r.slot <= v_cutoff
                   AND r.slot < (SELECT max(x.slot) FROM skene.loop_runs x
                                  WHERE x.loop_name = r.loop_name))
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    ), detached AS (
        UPDATE skene.loop_sends s SET run_id = NULL FROM batch
         WHERE s.loop_name = batch.loop_name AND s.customer_id = batch.customer_id
           AND s.episode_start = batch.episode_start AND s.step = batch.step
        RETURNING 1
    )
    SELECT count(*) INTO v_detached FROM detached;
    -- The report's run counts must not drop: each deleted run is added to the totals.
    WITH batch AS (
        SELECT r.id FROM skene.loop_runs r
         WHERE r.slot <= v_cutoff
           AND r.slot < (SELECT max(x.slot) FROM skene.loop_runs x WHERE x.loop_name = r.loop_name)
           AND NOT EXISTS (SELECT 1 FROM skene.loop_sends s WHERE s.run_id = r.id)
         ORDER BY r.slot
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM skene.loop_runs r USING batch WHERE r.id = batch.id
        RETURNING r.loop_name, r.state, r.queued, r.held_out
    ), rolled_up AS (
        INSERT INTO skene.loop_run_totals AS t (loop_name, runs, failed, queued, held_out)
        SELECT g.loop_name, count(*), count(*) FILTER (WHERE g.state = 'failed'),
               sum(g.queued), sum(g.held_out)
          FROM gone g GROUP BY g.loop_name
        ON CONFLICT ON CONSTRAINT loop_run_totals_pkey DO UPDATE
           SET runs = t.runs + excluded.runs, failed = t.failed + excluded.failed,
               queued = t.queued + excluded.queued, held_out = t.held_out + excluded.held_out
    )
    SELECT count(*) INTO v_runs FROM gone;

    -- What skene.prune() deletes: keys whose usage has left its period. The gate treats
    -- an expired key as free already, so nothing reads them.
    WITH batch AS (
        SELECT k.customer_id, k.feature, k.idempotency_key FROM skene.idempotency_keys k
         WHERE k.expires_at <= v_now
         ORDER BY k.expires_at
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM skene.idempotency_keys k USING batch
         WHERE k.customer_id = batch.customer_id AND k.feature = batch.feature
           AND k.idempotency_key = batch.idempotency_key
        RETURNING 1
    )
    SELECT count(*) INTO v_keys FROM gone;

    RETURN QUERY VALUES ('jobs', v_jobs), ('job_attempts', v_attempts),
                        ('billing_events', v_events), ('loop_sends.run_id', v_detached),
                        ('loop_runs', v_runs), ('idempotency_keys', v_keys);
END
$$;
COMMENT ON FUNCTION skene.housekeep(integer) IS 'Delete one batch per table of finished work older than keep_finished (and expired idempotency keys), keeping what reports and dedupes read; returns the counts (loop_sends.run_id: sends detached from deleted runs). Repeat while a count reaches batch_size';

-- ---------------------------------------------------------------------------------
-- Periodic tasks, once across many workers
-- ---------------------------------------------------------------------------------

-- The claim is the row's update: concurrent claimers queue on the row lock and see
-- the winner's time, so exactly one of them gets true per period.
CREATE FUNCTION skene.claim_periodic(name text, every interval) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now timestamptz := skene.now();
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'skene: a periodic task needs a non-empty name',
            HINT = 'Name the task, e.g. ''housekeeping''.';
    END IF;
    IF every IS NULL OR every <= interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: periodic task %s needs a positive period, got %s',
                             name, coalesce(every::text, 'NULL')),
            HINT = 'E.g. skene.claim_periodic(''housekeeping'', interval ''1 day'').';
    END IF;
    INSERT INTO skene.periodic_runs AS p (name, last_run_at) VALUES (name, v_now)
    ON CONFLICT ON CONSTRAINT periodic_runs_pkey DO UPDATE
       SET last_run_at = excluded.last_run_at, claims = p.claims + 1
     WHERE p.last_run_at <= excluded.last_run_at - every;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION skene.claim_periodic(text, interval) IS 'Claim a periodic task for this period: true for exactly one caller per period, however many workers ask';

CREATE FUNCTION skene.release_periodic(name text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH released AS (
        UPDATE skene.periodic_runs p SET last_run_at = '-infinity'
         WHERE p.name = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM released)
$$;
COMMENT ON FUNCTION skene.release_periodic(text) IS 'Let the next claim of a periodic task succeed at once: its run stopped with work left, or failed';

-- ---------------------------------------------------------------------------------
-- Privileges: the worker runs both; nobody else needs them.
-- ---------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION
    skene.housekeep(integer),
    skene.claim_periodic(text, interval),
    skene.release_periodic(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    skene.housekeep(integer),
    skene.claim_periodic(text, interval),
    skene.release_periodic(text)
  TO skene_worker;
GRANT SELECT ON skene.housekeeping_settings, skene.periodic_runs, skene.loop_run_totals
  TO skene_worker;
