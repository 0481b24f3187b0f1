-- skene-pg 0006 down: the privileges and attributes of 0005 again (the revision's
-- downgrade first restores the function bodies 0006 replaced, with restore_function). The
-- role skene_billing is cluster-wide and stays (other databases may use it); it loses
-- its rights here.

-- Privileges as 0005 left them.
REVOKE EXECUTE ON FUNCTION
    skene.set_plan(text, text, text, text),
    skene.set_billing_period(text, timestamptz, timestamptz),
    skene.ingest_billing_event(text, jsonb),
    skene.link_billing_customer(text, text, text)
  FROM skene_billing;
REVOKE USAGE ON SCHEMA skene FROM skene_billing;
GRANT EXECUTE ON FUNCTION
    skene.check(text, text, bigint),
    skene.check_and_increment(text, text, bigint, text),
    skene.set_plan(text, text, text, text),
    skene.identify(text, text, text, jsonb, text),
    skene.unsubscribe(text)
  TO skene_app, skene_worker;
-- revoked first, so the grants come back in their old order (pg_dump shows that order)
REVOKE EXECUTE ON FUNCTION skene.ingest_billing_event(text, jsonb) FROM skene_worker;
GRANT EXECUTE ON FUNCTION skene.ingest_billing_event(text, jsonb) TO skene_app, skene_worker;
GRANT EXECUTE ON FUNCTION skene.track(text, text, jsonb, timestamptz) TO skene_app, skene_worker;

ALTER FUNCTION skene.invalidate_usage_cache() RESET search_path;
ALTER FUNCTION skene.prune() SECURITY INVOKER;
ALTER FUNCTION skene.set_billing_period(text, timestamptz, timestamptz) SECURITY INVOKER;
COMMENT ON FUNCTION skene.prune() IS 'Delete idempotency keys whose usage has left its period; returns how many';

-- Functions 0006 added (after the restored bodies, which no longer call them).
DROP FUNCTION IF EXISTS skene.unsafe_schemas(text);
DROP FUNCTION IF EXISTS skene.search_path_risks(text);
DROP FUNCTION IF EXISTS skene.is_trusted_role(oid, oid);
DROP FUNCTION IF EXISTS skene.canonical_timezone(text);
DROP FUNCTION IF EXISTS skene.require_room(text, text, bigint, bigint);
DROP FUNCTION IF EXISTS skene.require_email(text);
DROP FUNCTION IF EXISTS skene.require_text(text, text, integer, text, text, text);
DROP FUNCTION IF EXISTS skene.text_problem(text, integer, text);
DROP FUNCTION IF EXISTS skene.show(text);
