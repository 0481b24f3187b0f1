-- skene-pg 0005 down: removes housekeeping, the periodic-task claims and the rolled-up
-- loop run counts (the runs housekeeping deleted are not brought back).

DROP FUNCTION IF EXISTS skene.release_periodic(text);
DROP FUNCTION IF EXISTS skene.claim_periodic(text, interval);
DROP FUNCTION IF EXISTS skene.housekeep(integer);

DROP INDEX IF EXISTS skene.loop_sends_run;
DROP INDEX IF EXISTS skene.billing_events_processed;
DROP INDEX IF EXISTS skene.jobs_housekeeping;

DROP TABLE IF EXISTS skene.loop_run_totals;
DROP TABLE IF EXISTS skene.periodic_runs;
DROP TABLE IF EXISTS skene.housekeeping_settings;
