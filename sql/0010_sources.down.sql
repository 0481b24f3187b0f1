-- skene-pg 0010 down: the retention functions 0010 changed are restored by the revision
-- (restore_function); this removes the sources. The triggers they installed on the
-- app's tables go first (what they fed into skene stays).

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT s.name FROM skene.sources s LOOP
        PERFORM skene.drop_source(v.name);
    END LOOP;
END
$$;

DROP FUNCTION IF EXISTS skene.backfill_source(text);
DROP FUNCTION IF EXISTS skene.drop_source(text);
DROP FUNCTION IF EXISTS skene.install_source(text);
DROP FUNCTION IF EXISTS skene.source_count_row();
DROP FUNCTION IF EXISTS skene.count_rows(text, text, integer);
DROP FUNCTION IF EXISTS skene.source_activity_row();
DROP FUNCTION IF EXISTS skene.source_subscription_row();
DROP FUNCTION IF EXISTS skene.sync_subscription_plan(text);
DROP FUNCTION IF EXISTS skene.subscription_plans(text);
DROP FUNCTION IF EXISTS skene.source_customer_row();
DROP FUNCTION IF EXISTS skene.absorb_customer(text, text, text, text);
DROP FUNCTION IF EXISTS skene.is_email(text);
DROP FUNCTION IF EXISTS skene.source_columns(regclass, jsonb);
DROP FUNCTION IF EXISTS skene.source_select_list(jsonb, text[]);
DROP FUNCTION IF EXISTS skene.source_trigger_name(text);
DROP TABLE IF EXISTS skene.sources;
