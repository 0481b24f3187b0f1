-- Baseline: the bare single-row counter that skene.check_and_increment competes with.
-- :lo and :hi (pgbench -D) bound the customer ids; lo = hi pins one customer.
\set c random(:lo, :hi)
UPDATE bench.counters SET used = used + 1 WHERE customer_id = :c AND feature = 'api_calls' RETURNING used;
