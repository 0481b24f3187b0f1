-- skene-pg 0007 down: counters are invalidated row by row again. The revision's
-- downgrade first restores check_and_increment and set_billing_period (with the
-- ALTERs 0006 made) with restore_function.

DROP TRIGGER feature_limits_version ON skene.feature_limits;
DROP TRIGGER features_version ON skene.features;
DROP TRIGGER customers_limits_version ON skene.customers;
DROP TRIGGER limit_overrides_version ON skene.limit_overrides;
CREATE TRIGGER customers_plan_changed AFTER UPDATE OF plan ON skene.customers
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan)
    EXECUTE FUNCTION skene.invalidate_usage_cache();
CREATE TRIGGER limit_overrides_changed AFTER INSERT OR UPDATE OR DELETE ON skene.limit_overrides
    FOR EACH ROW EXECUTE FUNCTION skene.invalidate_usage_cache();
CREATE TRIGGER feature_limits_changed AFTER INSERT OR UPDATE OR DELETE ON skene.feature_limits
    FOR EACH ROW EXECUTE FUNCTION skene.invalidate_usage_cache();
CREATE TRIGGER features_changed AFTER UPDATE OF period, soft ON skene.features
    FOR EACH ROW EXECUTE FUNCTION skene.invalidate_usage_cache();
DROP FUNCTION skene.gate_context(text, text);
DROP FUNCTION skene.bump_customer_version();
DROP FUNCTION skene.bump_catalog_version();
ALTER TABLE skene.usage DROP COLUMN catalog_version, DROP COLUMN customer_version;
ALTER TABLE skene.customers DROP COLUMN limits_version;
DROP TABLE skene.catalog_state;
