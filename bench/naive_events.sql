-- The naive design skene avoids: append an event per call, count the window per check.
\set c random(:lo, :hi)
BEGIN;
INSERT INTO bench.events (customer_id, feature, created_at) VALUES (:c, 'api_calls', now());
SELECT count(*) FROM bench.events WHERE customer_id = :c AND feature = 'api_calls' AND created_at > now() - interval '30 days';
COMMIT;
