-- skene-pg 0008 down: the functions 0008 changed are restored by the revision
-- (restore_function); this removes what it added. sent_at goes back to the time the
-- message was queued, and deferrals are counted as attempts again.

DROP TRIGGER IF EXISTS loops_default_timezone ON skene.loops;
DROP FUNCTION IF EXISTS skene.check_loop_timezone();
DROP FUNCTION IF EXISTS skene.loop_timezone(jsonb, text);
DROP FUNCTION IF EXISTS skene.note_retention_sent(bigint, text, text, timestamptz);

UPDATE skene.loop_sends s SET sent_at = s.queued_at;
ALTER TABLE skene.loop_sends ALTER COLUMN sent_at SET NOT NULL;
ALTER TABLE skene.loop_sends DROP COLUMN IF EXISTS queued_at;
COMMENT ON COLUMN skene.loop_sends.sent_at IS NULL;
COMMENT ON COLUMN skene.loop_sends.reactivated_at IS NULL;

UPDATE skene.jobs j SET attempt = j.attempt + j.deferrals WHERE j.deferrals > 0;
ALTER TABLE skene.jobs DROP COLUMN IF EXISTS deferrals;
COMMENT ON COLUMN skene.jobs.attempt IS NULL;
COMMENT ON COLUMN skene.job_attempts.attempt IS NULL;
