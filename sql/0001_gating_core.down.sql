-- skene-pg 0001 down: removes everything 0001 created except the schema itself, which
-- holds alembic's version table, and the cluster-wide roles, which other databases
-- may use. `DROP SCHEMA skene CASCADE` removes the rest by hand.

REVOKE USAGE ON SCHEMA skene FROM skene_app, skene_worker;

DROP FUNCTION IF EXISTS skene.prune();
DROP FUNCTION IF EXISTS skene.set_billing_period(text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS skene.clear_limit_override(text, text);
DROP FUNCTION IF EXISTS skene.set_limit_override(text, text, bigint);
DROP FUNCTION IF EXISTS skene.unsubscribe(text);
DROP FUNCTION IF EXISTS skene.identify(text, text, text, jsonb, text);
DROP FUNCTION IF EXISTS skene.set_plan(text, text, text, text);
DROP FUNCTION IF EXISTS skene.check(text, text, bigint);
DROP FUNCTION IF EXISTS skene.check_and_increment(text, text, bigint, text);
DROP FUNCTION IF EXISTS skene.record_block(text, text, timestamptz, skene.decision, bigint);
DROP FUNCTION IF EXISTS skene.register_customer(text);
DROP FUNCTION IF EXISTS skene.require_valid(text, text, bigint);
DROP FUNCTION IF EXISTS skene.require_customer_id(text);
DROP FUNCTION IF EXISTS skene.limit_context(text, text);
DROP FUNCTION IF EXISTS skene.roll_window(bigint[], bigint, bigint, bigint, bigint, int);
DROP FUNCTION IF EXISTS skene.period_bounds(text, timestamptz, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS skene.enqueue(text, jsonb, text, text, text, timestamptz, integer);

DROP TRIGGER IF EXISTS features_changed ON skene.features;
DROP TRIGGER IF EXISTS feature_limits_changed ON skene.feature_limits;
DROP TRIGGER IF EXISTS limit_overrides_changed ON skene.limit_overrides;
DROP TRIGGER IF EXISTS customers_plan_changed ON skene.customers;
DROP FUNCTION IF EXISTS skene.invalidate_usage_cache();

DROP TABLE IF EXISTS skene.jobs;
DROP TABLE IF EXISTS skene.limit_hits;
DROP TABLE IF EXISTS skene.idempotency_keys;
DROP TYPE IF EXISTS skene.decision;
DROP TABLE IF EXISTS skene.usage;
DROP TABLE IF EXISTS skene.limit_overrides;
DROP TABLE IF EXISTS skene.plan_changes;
DROP TABLE IF EXISTS skene.customers;
DROP TABLE IF EXISTS skene.loops;
DROP TABLE IF EXISTS skene.feature_limits;
DROP TABLE IF EXISTS skene.features;
DROP TABLE IF EXISTS skene.plan_prices;
DROP TABLE IF EXISTS skene.plans;

DROP FUNCTION IF EXISTS skene.utc_text(timestamptz);
DROP FUNCTION IF EXISTS skene.utc_day(timestamptz);
DROP FUNCTION IF EXISTS skene.now();
DROP FUNCTION IF EXISTS skene.test_now();
