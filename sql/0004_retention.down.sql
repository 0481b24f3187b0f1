-- skene-pg 0004 down: removes activity tracking, retention runs and sends, and
-- milestones. Triggers installed by skene.watch_activity on application tables are
-- dropped with their function (CASCADE names them in a NOTICE).

-- pg_cron jobs that run retention loops (skene-pg apply names them skene:<loop>) would
-- fail every schedule once run_loop is gone. Jobs kept in another database (named
-- skene:<db>:<loop>) are out of reach here: unschedule them there.
DO $$
BEGIN
    -- to_regclass itself fails without USAGE on the schema
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = 'cron')
       AND pg_catalog.has_schema_privilege('cron', 'USAGE')
       AND pg_catalog.to_regclass('cron.job') IS NOT NULL THEN
        PERFORM cron.unschedule(j.jobid) FROM cron.job j
         WHERE j.jobname LIKE 'skene:%' AND j.database = pg_catalog.current_database();
    END IF;
END
$$;

DROP FUNCTION IF EXISTS skene.retention_report(integer);
DROP FUNCTION IF EXISTS skene.run_loop(text, timestamptz);
DROP FUNCTION IF EXISTS skene.queue_retention(text, jsonb, timestamptz, bigint);
DROP FUNCTION IF EXISTS skene.holdout_bucket(text, text);
DROP FUNCTION IF EXISTS skene.retention_send_after(bigint[]);
DROP FUNCTION IF EXISTS skene.quiet_hours(jsonb);
DROP FUNCTION IF EXISTS skene.retention_turn();
DROP FUNCTION IF EXISTS skene.quiet_until(timestamptz, text, time, time);
DROP FUNCTION IF EXISTS skene.unwatch_activity(regclass);
DROP FUNCTION IF EXISTS skene.watch_activity(regclass, text, text);
DROP FUNCTION IF EXISTS skene.watched_activity() CASCADE;
DROP FUNCTION IF EXISTS skene.track(text, text, jsonb, timestamptz);
DROP FUNCTION IF EXISTS skene.record_activity(text, timestamptz);
DROP FUNCTION IF EXISTS skene.activity_resolution();
DROP FUNCTION IF EXISTS skene.note_comeback(text, timestamptz);
DROP TRIGGER IF EXISTS loops_milestone_features ON skene.loops;
DROP TRIGGER IF EXISTS usage_milestones ON skene.usage;
DROP TRIGGER IF EXISTS usage_milestones_insert ON skene.usage;
DROP FUNCTION IF EXISTS skene.sync_milestone_trigger();
DROP FUNCTION IF EXISTS skene.usage_milestones();
DROP FUNCTION IF EXISTS skene.reach_milestones(text, text, text, bigint, bigint);

DROP INDEX IF EXISTS skene.loops_milestone_event;
DROP TABLE IF EXISTS skene.milestones_reached;
DROP TABLE IF EXISTS skene.loop_sends;
DROP TABLE IF EXISTS skene.loop_runs;
DROP TABLE IF EXISTS skene.event_counts;

ALTER TABLE skene.loops DROP COLUMN IF EXISTS cron_job;
ALTER TABLE skene.loops DROP COLUMN IF EXISTS segment_search_path;
ALTER TABLE skene.customers DROP COLUMN IF EXISTS awaiting_reactivation;
ALTER TABLE skene.customers DROP COLUMN IF EXISTS last_activity_at;
