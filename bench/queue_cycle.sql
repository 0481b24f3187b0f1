-- The queue's whole cycle, three transactions as the app and a worker run them: an
-- upgrade prompt is queued (due now, with a unique dedupe key shaped like the keys of
-- skene's own prompts, so it lands among theirs in the index), a worker claims one due job with a 30 s lease for the kinds it handles, and
-- records that it succeeded. A claim that finds nothing (another client took the job)
-- finishes job 0, which matches nothing and changes nothing. pgbench takes a colon
-- followed by a name for a variable even inside a string: keep such pairs out of it.
\set c random(:lo, :hi)
SELECT skene.enqueue('email', '{"template": "upgrade_prompt", "message": "Upgrade to continue.", "feature": "api_calls", "reason": "limit_reached", "plan": "free", "used": 100, "usage_limit": 100}', :c, 'free_tier_limit', concat_ws(':', 'upgrade_prompt', 'free_tier_limit', :c::text, 'api_calls', gen_random_uuid()), NULL, 3);
SELECT coalesce(max(id), 0) AS job, coalesce(max(lease_token::text), '00000000-0000-0000-0000-000000000000') AS token FROM skene.claim_jobs('bench:' || :client_id, 1, '30 seconds', '{email,stripe_meter,stripe_sync}') \gset
SELECT skene.finish_job(:job, :token::uuid, 'succeeded');
