-- skene-pg 0003: billing.
-- The webhook inbox (deduped by event id) and its sync jobs, the links between skene
-- customers and biller customers, applying a re-fetched subscription, conversions
-- (free -> paid) with their attribution to an upgrade prompt, the funnel view, and
-- hourly buckets of metered usage reported to Stripe Billing Meters.

-- ---------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------

CREATE TABLE skene.billing_events (
    provider     text NOT NULL,           -- stripe
    event_id     text NOT NULL,           -- the biller's event id (evt_...)
    type         text NOT NULL,           -- e.g. customer.subscription.updated
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL,
    processed_at timestamptz,             -- NULL until a sync applied (or ignored) it
    error        text,                    -- why it was ignored, when it was
    PRIMARY KEY (provider, event_id)
);
COMMENT ON TABLE skene.billing_events IS 'Inbox of verified biller webhooks, one row per event id';
CREATE INDEX IF NOT EXISTS billing_events_unprocessed ON skene.billing_events (received_at)
    WHERE processed_at IS NULL;

CREATE TABLE skene.billing_customers (
    provider             text NOT NULL,
    external_customer_id text NOT NULL,    -- e.g. Stripe's cus_...
    customer_id          text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    linked_at            timestamptz NOT NULL,
    -- clock_timestamp() when the worker read the job whose re-fetch was applied last:
    -- an apply read earlier than this is stale and changes nothing
    synced_at            timestamptz,
    subscription_id      text,
    subscription_status  text,
    PRIMARY KEY (provider, external_customer_id),
    UNIQUE (provider, customer_id)
);
COMMENT ON TABLE skene.billing_customers IS 'Which biller customer each skene customer is, and its last applied subscription';

CREATE TABLE skene.conversions (
    plan_change_id bigint PRIMARY KEY REFERENCES skene.plan_changes ON DELETE CASCADE,
    customer_id    text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    from_plan      text,
    to_plan        text NOT NULL,
    source         text NOT NULL,
    converted_at   timestamptz NOT NULL,
    prompt_job_id  bigint,                 -- the upgrade prompt it is attributed to; NULL: unattributed
    loop_name      text,                   -- that prompt's loop
    prompt_sent_at timestamptz
);
COMMENT ON TABLE skene.conversions IS 'Every free -> paid plan change, attributed to the last upgrade prompt sent within the loop''s window';
CREATE INDEX IF NOT EXISTS conversions_loop ON skene.conversions (loop_name, converted_at);

CREATE TABLE skene.meter_usage (
    customer_id     text NOT NULL REFERENCES skene.customers ON DELETE CASCADE,
    feature         text NOT NULL REFERENCES skene.features ON DELETE CASCADE,
    bucket_start    timestamptz NOT NULL,  -- the UTC hour the units were counted in
    quantity        bigint NOT NULL DEFAULT 0,
    reported        bigint NOT NULL DEFAULT 0,  -- units Stripe has acknowledged
    -- a report in flight: units [pending_from, pending_from + pending_quantity), pinned
    -- on its first attempt so every retry sends the same identifier and value
    pending_from     bigint,
    pending_quantity bigint,
    reported_at     timestamptz,
    PRIMARY KEY (customer_id, feature, bucket_start)
);
COMMENT ON TABLE skene.meter_usage IS 'Usage of metered features per customer and UTC hour, and how much of it Stripe has acknowledged';

-- ---------------------------------------------------------------------------------
-- Linking and the inbox
-- ---------------------------------------------------------------------------------

CREATE FUNCTION skene.link_billing_customer(customer_id text, provider text,
                                            external_customer_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF provider IS NULL OR provider = '' OR external_customer_id IS NULL OR external_customer_id = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: provider and external customer id must be non-empty, got %s and %s',
                             coalesce(quote_literal(provider), 'NULL'),
                             coalesce(quote_literal(external_customer_id), 'NULL')),
            HINT = 'E.g. SELECT skene.link_billing_customer(''cus_42'', ''stripe'', ''cus_NffrFeUfNV2Hib'').';
    END IF;
    PERFORM skene.register_customer(customer_id);
    -- one biller customer per skene customer and provider: the newest link wins
    DELETE FROM skene.billing_customers b
     WHERE b.provider = provider
       AND (b.customer_id = customer_id OR b.external_customer_id = external_customer_id)
       AND NOT (b.customer_id = customer_id AND b.external_customer_id = external_customer_id);
    INSERT INTO skene.billing_customers AS b (provider, external_customer_id, customer_id, linked_at)
    VALUES (provider, external_customer_id, customer_id, skene.now())
    ON CONFLICT ON CONSTRAINT billing_customers_pkey DO NOTHING;
END
$$;
COMMENT ON FUNCTION skene.link_billing_customer(text, text, text) IS 'Link a skene customer to its biller customer (e.g. a Stripe cus_ id); the newest link wins';

CREATE FUNCTION skene.ingest_billing_event(provider text, payload jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now      timestamptz := skene.now();
    v_id       text := payload ->> 'id';
    v_type     text := payload ->> 'type';
    v_object   jsonb := payload #> '{data,object}';
    v_external text;
    v_customer text;
BEGIN
    IF provider IS DISTINCT FROM 'stripe' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown billing provider %s', coalesce(quote_literal(provider), 'NULL')),
            HINT = 'Only ''stripe'' events are synced; other billers call skene.set_plan() from their webhook handler.';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' OR v_id IS NULL OR v_id = ''
       OR v_type IS NULL OR jsonb_typeof(v_object) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'skene: not a Stripe event: it needs id, type and data.object',
            HINT = 'Pass the verified webhook body as jsonb, e.g. skene.ingest_billing_event(''stripe'', body::jsonb).';
    END IF;
    INSERT INTO skene.billing_events AS e (provider, event_id, type, payload, received_at)
    VALUES (provider, v_id, v_type, payload, v_now)
    ON CONFLICT ON CONSTRAINT billing_events_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;  -- seen before: its sync was queued then
    END IF;
    IF v_type NOT IN ('checkout.session.completed', 'customer.subscription.created',
                      'customer.subscription.updated', 'customer.subscription.deleted',
                      'customer.subscription.paused', 'customer.subscription.resumed',
                      'invoice.paid', 'invoice.payment_failed') THEN
        UPDATE skene.billing_events e SET processed_at = v_now, error = 'event type not handled'
         WHERE e.provider = provider AND e.event_id = v_id;
        RETURN true;
    END IF;
    v_external := v_object ->> 'customer';
    -- the app names its own customer id when it creates the checkout session
    -- (client_reference_id) or the subscription (metadata.skene_customer_id)
    v_customer := coalesce(nullif(v_object ->> 'client_reference_id', ''),
                           nullif(v_object #>> '{metadata,skene_customer_id}', ''),
                           nullif(v_object #>> '{subscription_details,metadata,skene_customer_id}', ''));
    IF v_external IS NULL OR v_external = '' THEN
        UPDATE skene.billing_events e SET processed_at = v_now, error = 'no customer in the event'
         WHERE e.provider = provider AND e.event_id = v_id;
        RETURN true;
    END IF;
    IF v_customer IS NOT NULL THEN
        PERFORM skene.link_billing_customer(v_customer, provider, v_external);
    END IF;
    -- The event is only a signal: the job re-fetches what Stripe says now.
    PERFORM skene.enqueue(
        kind => 'stripe_sync',
        payload => jsonb_build_object('external_customer_id', v_external, 'event_id', v_id,
                                      'event_type', v_type),
        customer_id => (SELECT b.customer_id FROM skene.billing_customers b
                         WHERE b.provider = provider AND b.external_customer_id = v_external),
        dedupe_key => 'stripe_sync:' || v_id,
        max_attempts => 10);
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.ingest_billing_event(text, jsonb) IS 'Store a verified biller webhook once per event id and queue its sync; false when seen before';

CREATE FUNCTION skene.enqueue_billing_reconcile() RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(skene.enqueue(
               kind => 'stripe_sync',
               payload => pg_catalog.jsonb_build_object('external_customer_id', b.external_customer_id,
                                                        'event_type', 'reconcile'),
               customer_id => b.customer_id,
               dedupe_key => pg_catalog.format('stripe_sync:reconcile:%s:%s', b.external_customer_id,
                                               pg_catalog.to_char(skene.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')),
               max_attempts => 10))::integer
      FROM skene.billing_customers b
     WHERE b.provider = 'stripe'
$$;
COMMENT ON FUNCTION skene.enqueue_billing_reconcile() IS 'Queue a re-sync of every linked Stripe customer, once per customer and UTC day; returns how many were queued';

-- ---------------------------------------------------------------------------------
-- Applying what Stripe says now (the worker, after its re-fetch)
-- ---------------------------------------------------------------------------------

-- subscription: NULL (no current subscription: the default plan) or
-- {"id", "status", "price_ids": [...], "period_start", "period_end"} (unix seconds).
CREATE FUNCTION skene.apply_stripe_subscription(external_customer_id text, read_at timestamptz,
                                                subscription jsonb, event_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_link   record;
    v_plan   text;
    v_prices text[];
    v_result text;
BEGIN
    SELECT b.customer_id, b.synced_at INTO v_link FROM skene.billing_customers b
     WHERE b.provider = 'stripe' AND b.external_customer_id = external_customer_id
       FOR UPDATE;  -- applies of one customer happen one at a time, in read order
    IF NOT FOUND THEN
        v_result := 'unlinked';
    ELSIF v_link.synced_at IS NOT NULL AND v_link.synced_at >= read_at THEN
        -- a later re-fetch was applied already: this one may be older
        v_result := 'stale';
    ELSE
        IF subscription IS NULL THEN
            SELECT p.plan INTO v_plan FROM skene.plans p WHERE p.is_default;
        ELSE
            v_prices := ARRAY(SELECT jsonb_array_elements_text(subscription -> 'price_ids'));
            SELECT p.plan INTO v_plan FROM skene.plan_prices pp JOIN skene.plans p ON p.plan = pp.plan
             WHERE pp.price_id = ANY (v_prices)
             ORDER BY p.paid DESC, p.plan LIMIT 1;
            IF v_plan IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = format('skene: Stripe price(s) %s of subscription %s map to no plan',
                                     array_to_string(v_prices, ', '), subscription ->> 'id'),
                    HINT = 'Add the price to stripe_prices of a plan in skene.toml and run skene-pg apply.';
            END IF;
        END IF;
        PERFORM skene.set_plan(v_link.customer_id, v_plan, 'stripe', subscription ->> 'id');
        IF (subscription ->> 'period_start') IS NOT NULL AND (subscription ->> 'period_end') IS NOT NULL
           AND (subscription ->> 'period_end')::bigint > (subscription ->> 'period_start')::bigint THEN
            PERFORM skene.set_billing_period(v_link.customer_id,
                                             to_timestamp((subscription ->> 'period_start')::bigint),
                                             to_timestamp((subscription ->> 'period_end')::bigint));
        END IF;
        UPDATE skene.billing_customers b
           SET synced_at = read_at, subscription_id = subscription ->> 'id',
               subscription_status = coalesce(subscription ->> 'status', 'none')
         WHERE b.provider = 'stripe' AND b.external_customer_id = external_customer_id;
        v_result := v_plan;
    END IF;
    IF event_id IS NOT NULL THEN
        UPDATE skene.billing_events e
           SET processed_at = skene.now(),
               error = CASE WHEN v_result = 'unlinked'
                            THEN 'the Stripe customer is linked to no skene customer' END
         WHERE e.provider = 'stripe' AND e.event_id = event_id;
    END IF;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION skene.apply_stripe_subscription(text, timestamptz, jsonb, text) IS 'Apply a re-fetched Stripe subscription (plan and billing period) unless a later re-fetch was applied; returns the plan, stale or unlinked';

-- ---------------------------------------------------------------------------------
-- Conversions and the funnel
-- ---------------------------------------------------------------------------------

-- A loop's attribution_window; a value that is not an interval must not make set_plan
-- fail, so it falls back to the default (skene-pg apply validates it first).
CREATE FUNCTION skene.attribution_window(loop_config jsonb) RETURNS interval
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((loop_config ->> 'attribution_window')::interval, interval '14 days');
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
    RETURN interval '14 days';
END
$$;
COMMENT ON FUNCTION skene.attribution_window(jsonb) IS 'The attribution window of a freemium loop''s config (default 14 days); internal';

CREATE FUNCTION skene.record_conversion() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prompt record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM skene.plans p WHERE p.plan = NEW.to_plan AND p.paid)
       OR EXISTS (SELECT 1 FROM skene.plans p WHERE p.plan = NEW.from_plan AND p.paid) THEN
        RETURN NULL;  -- not free -> paid
    END IF;
    -- the last upgrade prompt sent to the customer within its loop's window
    SELECT j.id, j.loop_name, j.finished_at INTO v_prompt
      FROM skene.jobs j JOIN skene.loops l ON l.name = j.loop_name AND l.type = 'freemium'
     WHERE j.customer_id = NEW.customer_id AND j.kind = 'email' AND j.state = 'succeeded'
       AND j.finished_at <= NEW.changed_at
       AND j.finished_at > NEW.changed_at - skene.attribution_window(l.config)
     ORDER BY j.finished_at DESC, j.id DESC LIMIT 1;
    INSERT INTO skene.conversions (plan_change_id, customer_id, from_plan, to_plan, source,
                                   converted_at, prompt_job_id, loop_name, prompt_sent_at)
    VALUES (NEW.id, NEW.customer_id, NEW.from_plan, NEW.to_plan, NEW.source, NEW.changed_at,
            v_prompt.id, v_prompt.loop_name, v_prompt.finished_at)
    ON CONFLICT ON CONSTRAINT conversions_pkey DO NOTHING;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.record_conversion() IS 'Trigger: record a free -> paid plan change as a conversion, attributed to the last upgrade prompt in the window';

CREATE TRIGGER plan_changes_conversion AFTER INSERT ON skene.plan_changes
    FOR EACH ROW EXECUTE FUNCTION skene.record_conversion();

CREATE VIEW skene.funnel AS
SELECT l.name AS loop_name,
       l.feature,
       (SELECT count(*) FROM skene.limit_hits h WHERE h.feature = l.feature) AS limit_hits,
       (SELECT count(*) FROM skene.jobs j
         WHERE j.loop_name = l.name AND j.kind = 'email' AND j.state = 'succeeded') AS prompts_sent,
       (SELECT count(*) FROM skene.conversions c WHERE c.loop_name = l.name) AS conversions,
       round((SELECT count(*) FROM skene.conversions c WHERE c.loop_name = l.name)::numeric
             / nullif((SELECT count(*) FROM skene.jobs j
                        WHERE j.loop_name = l.name AND j.kind = 'email' AND j.state = 'succeeded'), 0),
             4) AS conversion_rate
  FROM skene.loops l
 WHERE l.type = 'freemium';
COMMENT ON VIEW skene.funnel IS 'Per freemium loop: limit hits, upgrade prompts sent, attributed conversions, conversions per prompt';

-- ---------------------------------------------------------------------------------
-- Metered usage: hourly buckets fed by the gate's counters, reported by the worker
-- ---------------------------------------------------------------------------------

-- Adds what a gate call counted on a metered feature into the hour's bucket; the
-- first units of a bucket queue its report, run once the hour is over.
CREATE FUNCTION skene.count_metered_usage() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_delta    bigint;
    v_bucket   timestamptz;
    v_inserted boolean;
    v_reported bigint;
BEGIN
    -- calendar periods count in used; Nd windows count the newest day in day_used
    v_delta := CASE WHEN NEW.period_start = OLD.period_start
                    THEN coalesce(NEW.day_used, NEW.used) - coalesce(OLD.day_used, OLD.used)
                    ELSE coalesce(NEW.day_used, NEW.used) END;
    IF v_delta IS NULL OR v_delta <= 0 THEN
        RETURN NULL;
    END IF;
    v_bucket := date_trunc('hour', skene.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    INSERT INTO skene.meter_usage AS m (customer_id, feature, bucket_start, quantity)
    VALUES (NEW.customer_id, NEW.feature, v_bucket, v_delta)
    ON CONFLICT ON CONSTRAINT meter_usage_pkey DO UPDATE SET quantity = m.quantity + excluded.quantity
    RETURNING (m.xmax = 0), m.reported INTO v_inserted, v_reported;
    IF v_inserted OR v_reported > 0 THEN
        -- a late unit in a bucket reported already gets its own report (its offset)
        PERFORM skene.enqueue(
            kind => 'stripe_meter',
            payload => jsonb_build_object('feature', NEW.feature,
                                          'bucket_start', skene.utc_text(v_bucket)),
            customer_id => NEW.customer_id,
            dedupe_key => format('stripe_meter:%s:%s:%s:%s', NEW.customer_id, NEW.feature,
                                 extract(epoch FROM v_bucket)::bigint, v_reported),
            run_at => greatest(v_bucket + interval '1 hour 5 minutes', skene.now()),
            max_attempts => 20);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.count_metered_usage() IS 'Trigger on skene.usage (metered features only): add the counted units to the hour''s bucket';

-- Keep one row trigger on skene.usage, the gate's hottest table, to a WHEN condition
-- (NULL: no trigger). The trigger's comment holds its condition, so an unchanged one
-- is left alone: DROP TRIGGER would wait for, and block, every gate call. Used for
-- metered features here and for milestones (0004).
CREATE FUNCTION skene.sync_usage_trigger(name text, events text, condition text,
                                         function regproc)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_oid oid;
BEGIN
    SELECT t.oid INTO v_oid FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = 'skene.usage'::regclass AND t.tgname = name;
    IF v_oid IS NOT NULL AND condition IS NOT NULL
       AND pg_catalog.obj_description(v_oid, 'pg_trigger') = condition THEN
        RETURN;
    END IF;
    IF v_oid IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER %I ON skene.usage', name);
    END IF;
    IF condition IS NOT NULL THEN
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON skene.usage FOR EACH ROW WHEN (%s) '
                       'EXECUTE FUNCTION %s()', name, events, condition, function);
        EXECUTE format('COMMENT ON TRIGGER %I ON skene.usage IS %L', name, condition);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.sync_usage_trigger(text, text, text, regproc) IS 'Create, replace or drop a conditional row trigger on skene.usage, only when its condition changed; internal';

-- Only metered features pay for the bucket: the trigger on skene.usage names them in
-- its WHEN clause, and is rebuilt whenever the set of metered features changes.
CREATE FUNCTION skene.rebuild_meter_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM skene.sync_usage_trigger(
        'usage_metered', 'UPDATE OF used',
        (SELECT format('new.feature IN (%s)',
                       string_agg(quote_literal(f.feature), ', ' ORDER BY f.feature))
           FROM skene.features f WHERE f.meter IS NOT NULL
         HAVING count(*) > 0),
        'skene.count_metered_usage');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skene.rebuild_meter_trigger() IS 'Trigger: rebuild skene.usage''s usage_metered trigger for the features that have a meter';

CREATE TRIGGER features_meter_changed AFTER INSERT OR DELETE OR UPDATE OF meter ON skene.features
    FOR EACH STATEMENT EXECUTE FUNCTION skene.rebuild_meter_trigger();

-- The worker's first step for meter report jobs: pin what each report sends (the
-- unreported units of its bucket), so a retry sends the same identifier and value.
CREATE FUNCTION skene.pin_meter_reports(job_ids bigint[])
RETURNS TABLE (job_id bigint, stripe_customer_id text, event_name text, identifier text,
               value bigint, pending_from bigint, bucket_start timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_job record;
    v_row record;
    v_id  text;
BEGIN
    FOR v_job IN
        SELECT j.id, j.customer_id, j.payload ->> 'feature' AS feature,
               (j.payload ->> 'bucket_start')::timestamptz AS bucket
          FROM skene.jobs j WHERE j.id = ANY (job_ids) AND j.kind = 'stripe_meter' ORDER BY j.id
    LOOP
        UPDATE skene.meter_usage m
           SET pending_from = coalesce(m.pending_from, m.reported),
               pending_quantity = coalesce(m.pending_quantity, m.quantity - m.reported)
         WHERE m.customer_id = v_job.customer_id AND m.feature = v_job.feature
           AND m.bucket_start = v_job.bucket
        RETURNING m.pending_from, m.pending_quantity INTO v_row;
        v_id := format('skene:%s:%s:%s:%s', v_job.customer_id, v_job.feature,
                       extract(epoch FROM v_job.bucket)::bigint, v_row.pending_from);
        job_id := v_job.id;
        stripe_customer_id := (SELECT b.external_customer_id FROM skene.billing_customers b
                                WHERE b.provider = 'stripe' AND b.customer_id = v_job.customer_id);
        event_name := (SELECT f.meter FROM skene.features f WHERE f.feature = v_job.feature);
        -- Stripe takes identifiers of up to 100 characters
        identifier := CASE WHEN length(v_id) <= 100 THEN v_id ELSE 'skene:' || md5(v_id) END;
        value := v_row.pending_quantity;
        pending_from := v_row.pending_from;
        bucket_start := v_job.bucket;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION skene.pin_meter_reports(bigint[]) IS 'Pin the units each meter report job sends (stable across retries); worker only';

CREATE FUNCTION skene.record_meter_report(customer_id text, feature text, bucket_start timestamptz,
                                          pending_from bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_row record;
BEGIN
    UPDATE skene.meter_usage m
       SET reported = m.reported + m.pending_quantity, pending_from = NULL,
           pending_quantity = NULL, reported_at = skene.now()
     WHERE m.customer_id = customer_id AND m.feature = feature AND m.bucket_start = bucket_start
       AND m.pending_from = pending_from
    RETURNING m.quantity, m.reported INTO v_row;
    IF NOT FOUND THEN
        RETURN false;  -- recorded already
    END IF;
    IF v_row.quantity > v_row.reported THEN  -- units that came in while it was reported
        PERFORM skene.enqueue(
            kind => 'stripe_meter',
            payload => jsonb_build_object('feature', feature, 'bucket_start', skene.utc_text(bucket_start)),
            customer_id => customer_id,
            dedupe_key => format('stripe_meter:%s:%s:%s:%s', customer_id, feature,
                                 extract(epoch FROM bucket_start)::bigint, v_row.reported),
            max_attempts => 20);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION skene.record_meter_report(text, text, timestamptz, bigint) IS 'Mark a pinned meter report as acknowledged by Stripe; worker only';

-- ---------------------------------------------------------------------------------
-- Privileges: apps may ingest events they verified; the worker applies and reports.
-- ---------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION
    skene.link_billing_customer(text, text, text),
    skene.ingest_billing_event(text, jsonb),
    skene.enqueue_billing_reconcile(),
    skene.apply_stripe_subscription(text, timestamptz, jsonb, text),
    skene.attribution_window(jsonb),
    skene.record_conversion(),
    skene.count_metered_usage(),
    skene.rebuild_meter_trigger(),
    skene.sync_usage_trigger(text, text, text, regproc),
    skene.pin_meter_reports(bigint[]),
    skene.record_meter_report(text, text, timestamptz, bigint)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION skene.ingest_billing_event(text, jsonb) TO skene_app, skene_worker;
GRANT EXECUTE ON FUNCTION
    skene.link_billing_customer(text, text, text),
    skene.enqueue_billing_reconcile(),
    skene.apply_stripe_subscription(text, timestamptz, jsonb, text),
    skene.pin_meter_reports(bigint[]),
    skene.record_meter_report(text, text, timestamptz, bigint)
  TO skene_worker;
-- the webhook server inside skene-pg listen records Resend bounces and complaints
GRANT EXECUTE ON FUNCTION skene.suppress(text, text, text) TO skene_worker;
GRANT SELECT ON skene.billing_events, skene.billing_customers, skene.conversions,
                skene.meter_usage, skene.funnel
  TO skene_worker;
