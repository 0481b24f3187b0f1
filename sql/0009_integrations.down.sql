-- skene-pg 0009 down: removes skene.refund, skene.gates, settings and display names.
-- skene.check_and_increment is put back by the revision (restore_function).

DROP FUNCTION IF EXISTS skene.gates();
DROP FUNCTION IF EXISTS skene.refund(text, text, bigint, text);
DROP TYPE IF EXISTS skene.refund_result;
ALTER TABLE skene.idempotency_keys DROP COLUMN IF EXISTS amount;
DROP TABLE IF EXISTS skene.settings;
ALTER TABLE skene.features DROP COLUMN IF EXISTS name;
