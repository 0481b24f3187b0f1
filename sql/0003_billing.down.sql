-- skene-pg 0003 down: removes the billing inbox, links, conversions, the funnel and
-- the metered-usage buckets, with their functions and triggers.

REVOKE EXECUTE ON FUNCTION skene.suppress(text, text, text) FROM skene_worker;

DROP TRIGGER IF EXISTS usage_metered ON skene.usage;
DROP TRIGGER IF EXISTS features_meter_changed ON skene.features;
DROP TRIGGER IF EXISTS plan_changes_conversion ON skene.plan_changes;

DROP FUNCTION IF EXISTS skene.record_meter_report(text, text, timestamptz, bigint);
DROP FUNCTION IF EXISTS skene.pin_meter_reports(bigint[]);
DROP FUNCTION IF EXISTS skene.rebuild_meter_trigger();
DROP FUNCTION IF EXISTS skene.sync_usage_trigger(text, text, text, regproc);
DROP FUNCTION IF EXISTS skene.count_metered_usage();
DROP VIEW IF EXISTS skene.funnel;
DROP FUNCTION IF EXISTS skene.record_conversion();
DROP FUNCTION IF EXISTS skene.attribution_window(jsonb);
DROP FUNCTION IF EXISTS skene.apply_stripe_subscription(text, timestamptz, jsonb, text);
DROP FUNCTION IF EXISTS skene.enqueue_billing_reconcile();
DROP FUNCTION IF EXISTS skene.ingest_billing_event(text, jsonb);
DROP FUNCTION IF EXISTS skene.link_billing_customer(text, text, text);

DROP TABLE IF EXISTS skene.meter_usage;
DROP TABLE IF EXISTS skene.conversions;
DROP TABLE IF EXISTS skene.billing_customers;
DROP TABLE IF EXISTS skene.billing_events;
