-- skene-pg 0002 down: removes the worker's protocol, attempts and suppressions, and
-- gives skene_worker back the direct INSERT and UPDATE on skene.jobs that 0001 granted.

GRANT INSERT, UPDATE ON skene.jobs TO skene_worker;

DROP FUNCTION IF EXISTS skene.unsuppress(text);
DROP FUNCTION IF EXISTS skene.suppress(text, text, text);
DROP FUNCTION IF EXISTS skene.cancel_job(bigint);
DROP FUNCTION IF EXISTS skene.retry_job(bigint);
DROP FUNCTION IF EXISTS skene.lock_job(bigint);
DROP FUNCTION IF EXISTS skene.reap_expired_leases(integer);
DROP FUNCTION IF EXISTS skene.finish_job(bigint, uuid, text, text, timestamptz);
DROP FUNCTION IF EXISTS skene.extend_lease(bigint, uuid, interval);
DROP FUNCTION IF EXISTS skene.claim_jobs(text, integer, interval, text[]);

DROP TABLE IF EXISTS skene.suppressions;
DROP TABLE IF EXISTS skene.job_attempts;
