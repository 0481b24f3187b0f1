-- skene-pg 0002: the worker's queue protocol.
-- Every attempt of a job and its error, the suppression list the worker honours, and
-- the functions that are the queue protocol: claim (FOR UPDATE SKIP LOCKED, with a
-- lease and a lease token), extend, finish (only while the token matches), reap
-- expired leases, and the operators' retry and cancel.

-- ---------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.job_attempts (
    job_id      bigint NOT NULL REFERENCES skene.jobs ON DELETE CASCADE,
    attempt     integer NOT NULL,            -- skene.jobs.attempt when it was claimed
    worker      text NOT NULL,               -- host:pid of the worker that claimed it
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text CHECK (outcome IN (     -- NULL while running
                    'succeeded',   -- delivered
                    'skipped',     -- no longer eligible at send time
                    'failed',      -- a transient error; counts against max_attempts
                    'deferred',    -- rate-limited; retried after Retry-After, not a failure
                    'dead',        -- a permanent error
                    'lost',        -- the lease expired: the worker died or hung
                    'cancelled')), -- an operator cancelled the job while it ran
    error       text,
    PRIMARY KEY (job_id, attempt)
);
COMMENT ON TABLE skene.job_attempts IS 'Every attempt of every job: who ran it, when, how it ended and its error';

CREATE TABLE skene.suppressions (
    -- stored trimmed and lower-cased, as the worker compares them
    email      text PRIMARY KEY CHECK (email = pg_catalog.lower(pg_catalog.btrim(email)) AND email <> ''),
    reason     text NOT NULL CHECK (reason IN (
                   'bounce',      -- the address bounced
                   'complaint',   -- the recipient marked a message as spam
                   'manual')),    -- an operator added it
    source     text,              -- where it came from: resend, smtp, an operator's name, ...
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE skene.suppressions IS 'Addresses that never get marketing email again (bounces, complaints, manual)';

-- ---------------------------------------------------------------------------------
-- The queue protocol. Workers call only these; they never select-then-update jobs.
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.claim_jobs(worker text, max_jobs integer DEFAULT 10,
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
        SELECT c.id, c.attempt, worker, v_now FROM claimed c
    )
    SELECT * FROM claimed c ORDER BY c.run_at, c.id;
END
$$;
COMMENT ON FUNCTION skene.claim_jobs(text, integer, interval, text[]) IS 'Claim up to max_jobs due jobs (SKIP LOCKED) with a lease and a new lease token; attempt + 1';

CREATE FUNCTION skene.extend_lease(job_id bigint, lease_token uuid, lease interval DEFAULT '30 seconds')
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH extended AS (
        UPDATE skene.jobs j SET locked_until = skene.now() + $3
         WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM extended)
$$;
COMMENT ON FUNCTION skene.extend_lease(bigint, uuid, interval) IS 'Keep a running job''s lease; false when the lease was lost (reaped or cancelled)';

CREATE FUNCTION skene.finish_job(job_id bigint, lease_token uuid, outcome text,
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
BEGIN
    IF outcome IS NULL OR outcome NOT IN ('succeeded', 'skipped', 'dead', 'retryable', 'deferred') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown job outcome %s', coalesce(quote_literal(outcome), 'NULL')),
            HINT = 'Outcomes are succeeded, skipped, dead, retryable (a failure, retried at retry_at) '
                   'and deferred (rate-limited: retried at retry_at, not counted as a failure).';
    END IF;
    SELECT j.attempt, j.max_attempts INTO v_job FROM skene.jobs j
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
           run_at = CASE WHEN v_state IN ('retryable', 'available')
                         THEN greatest(coalesce(retry_at, v_now), v_now) ELSE j.run_at END,
           finished_at = CASE WHEN v_state IN ('succeeded', 'skipped', 'dead') THEN v_now END
     WHERE j.id = job_id;
    UPDATE skene.job_attempts a
       SET finished_at = v_now, error = error,
           outcome = CASE outcome WHEN 'retryable' THEN 'failed' ELSE outcome END
     WHERE a.job_id = job_id AND a.attempt = v_job.attempt;
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.finish_job(bigint, uuid, text, text, timestamptz) IS 'End a job''s attempt while the lease token matches; false (and nothing changed) for a stale worker';

CREATE FUNCTION skene.reap_expired_leases(max_lost integer DEFAULT 3) RETURNS integer
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
        SELECT j.id, j.attempt, j.locked_by, j.locked_until FROM skene.jobs j
         WHERE j.state = 'running' AND j.locked_until < v_now
         ORDER BY j.locked_until
           FOR UPDATE SKIP LOCKED
    LOOP
        v_error := format('lease expired at %s: worker %s stopped without finishing',
                          v_job.locked_until, v_job.locked_by);
        UPDATE skene.job_attempts a SET finished_at = v_now, outcome = 'lost', error = v_error
         WHERE a.job_id = v_job.id AND a.attempt = v_job.attempt;
        -- A lost lease is not the job's failure (the send is idempotent, so it is simply
        -- run again), but a job that takes its worker down every time must stop.
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

-- ---------------------------------------------------------------------------------
-- Operators (skene-pg jobs retry|cancel, suppressions)
-- ---------------------------------------------------------------------------------

-- The job, locked for an operator's change; 22023 naming the id when there is none.
CREATE FUNCTION skene.lock_job(job_id bigint) RETURNS skene.jobs
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_job skene.jobs;
BEGIN
    SELECT j.* INTO v_job FROM skene.jobs j WHERE j.id = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: no job %s', coalesce(job_id::text, 'NULL')),
            HINT = 'List jobs with `skene-pg jobs list`.';
    END IF;
    RETURN v_job;
END
$$;
COMMENT ON FUNCTION skene.lock_job(bigint) IS 'Lock one job for retry_job or cancel_job, or raise that it does not exist; internal';

CREATE FUNCTION skene.retry_job(job_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_job      skene.jobs := skene.lock_job(job_id);
    v_failures integer;
BEGIN
    IF v_job.state NOT IN ('dead', 'cancelled', 'skipped', 'retryable', 'available') THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('skene: job %s is %s and cannot be retried', job_id, v_job.state),
            DETAIL = 'A succeeded job was delivered; a running one is held by a worker.',
            HINT = 'Retry dead, cancelled, skipped or waiting (available, retryable) jobs.';
    END IF;
    SELECT count(*) INTO v_failures FROM skene.job_attempts a
     WHERE a.job_id = job_id AND a.outcome = 'failed';
    UPDATE skene.jobs j
       SET state = 'available', run_at = skene.now(), finished_at = NULL,
           max_attempts = greatest(j.max_attempts, v_failures + 1)  -- at least one more try
     WHERE j.id = job_id;
    PERFORM pg_catalog.pg_notify('skene_jobs', v_job.kind);
END
$$;
COMMENT ON FUNCTION skene.retry_job(bigint) IS 'Run a dead, cancelled, skipped or waiting job again now, with at least one more attempt';

CREATE FUNCTION skene.cancel_job(job_id bigint) RETURNS boolean
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
         WHERE a.job_id = job_id AND a.attempt = v_job.attempt;
    END IF;
    UPDATE skene.jobs j
       SET state = 'cancelled', lease_token = NULL, locked_until = NULL, locked_by = NULL,
           finished_at = skene.now()
     WHERE j.id = job_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.cancel_job(bigint) IS 'Cancel a job that has not finished; false when it was cancelled already';

CREATE FUNCTION skene.suppress(email text, reason text DEFAULT 'manual', source text DEFAULT NULL)
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

CREATE FUNCTION skene.unsuppress(email text) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (DELETE FROM skene.suppressions s
                   WHERE s.email = pg_catalog.lower(pg_catalog.btrim($1)) RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;
COMMENT ON FUNCTION skene.unsuppress(text) IS 'Allow email to a suppressed address again; false when it was not suppressed';

-- ---------------------------------------------------------------------------------
-- Privileges: the worker changes jobs only through the protocol above.
-- ---------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION
    skene.lock_job(bigint),
    skene.claim_jobs(text, integer, interval, text[]),
    skene.extend_lease(bigint, uuid, interval),
    skene.finish_job(bigint, uuid, text, text, timestamptz),
    skene.reap_expired_leases(integer),
    skene.retry_job(bigint),
    skene.cancel_job(bigint),
    skene.suppress(text, text, text),
    skene.unsuppress(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    skene.claim_jobs(text, integer, interval, text[]),
    skene.extend_lease(bigint, uuid, interval),
    skene.finish_job(bigint, uuid, text, text, timestamptz),
    skene.reap_expired_leases(integer)
  TO skene_worker;
REVOKE INSERT, UPDATE ON skene.jobs FROM skene_worker;
GRANT SELECT ON skene.job_attempts, skene.suppressions TO skene_worker;
