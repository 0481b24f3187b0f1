-- skene-pg 0006: least privilege and hostile input.
-- A role per trust level (skene_billing for whatever changes plans), the worker's
-- functions runnable by the worker, retention segments refused when their search_path
-- holds schemas other roles control, and every public function checking the length
-- and shape of what it is given (SQLSTATE 22023 with a hint, never another error).
--
-- Redefined here (CREATE OR REPLACE, same signatures and grants): the helpers
-- require_customer_id, require_valid and register_customer; check_and_increment and
-- check (overflow-proof arithmetic, idempotency key checks); identify (email syntax,
-- time zones as PostgreSQL reads them); track (event names, future times);
-- watched_activity; suppress; link_billing_customer; ingest_billing_event; run_loop
-- (the segment's search_path). The down file restores the 0001-0004 definitions.

-- A cluster-wide role, like skene_app and skene_worker in 0001: an operator may have
-- created it already, and downgrades leave it in place.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'skene_billing') THEN
        CREATE ROLE skene_billing NOLOGIN;
    END IF;
END
$roles$;

-- ---------------------------------------------------------------------------------
-- Checking text: one definition of what a name, an id or a key may look like
-- ---------------------------------------------------------------------------------

-- A value as error messages show it: quoted, and cut short when long, so a 1 MB
-- argument does not become a 1 MB message.
CREATE FUNCTION skene.show(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN value IS NULL THEN 'NULL'
                WHEN pg_catalog.length(value) <= 64 THEN pg_catalog.quote_literal(value)
                ELSE pg_catalog.format('%s... (%s characters)',
                                       pg_catalog.quote_literal(pg_catalog.left(value, 32)),
                                       pg_catalog.length(value)) END
$$;
COMMENT ON FUNCTION skene.show(text) IS 'A value quoted for an error message, cut short after 32 characters when longer than 64; internal';

-- What is wrong with a piece of text, or NULL. kinds:
--   opaque: non-empty and not too long (idempotency keys: any characters)
--   label:  not too long, no control characters; may be empty (display names)
--   id:     non-empty, not too long, no control characters, not blank, no leading
--           or trailing whitespace ('user_42 ' would be another customer)
-- A plain SQL CASE, so callers on busy paths (track) inline it. Whitespace is
-- Unicode's White_Space plus the zero-width space and the BOM; control characters are
-- C0, DEL, C1 and the line and paragraph separators. The classes are spelled as \u
-- escapes: in a database that is not UTF8 the ones it cannot hold never match.
CREATE FUNCTION skene.text_problem(value text, max_length integer, kind text DEFAULT 'id')
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN value IS NULL OR (value = '' AND kind <> 'label') THEN 'empty'
        WHEN pg_catalog.length(value) > max_length THEN 'too long'
        WHEN kind = 'opaque' THEN NULL
        -- the common case, a clean id, in one pass
        WHEN kind = 'id' AND value !~ '[\u0001-\u001f\u007f-\u009f\u2028\u2029]|^[\u0020\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff]|[\u0020\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff]$'
            THEN NULL
        WHEN value ~ '[\u0001-\u001f\u007f-\u009f\u2028\u2029]' THEN 'control character'
        WHEN kind = 'label' THEN NULL
        WHEN value ~ '^[\u0020\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff]+$' THEN 'blank'
        ELSE 'whitespace'
    END
$$;
COMMENT ON FUNCTION skene.text_problem(text, integer, text) IS 'What is wrong with an id (kind id), a display name (label) or a key (opaque): empty, too long, control character, blank, whitespace; NULL when nothing; internal';

-- Raise 22023 for what text_problem finds, naming the value and the rule broken.
-- `noun` completes "must be a non-empty ...", as the messages before 0006 read.
CREATE FUNCTION skene.require_text(what text, value text, max_length integer, hint text,
                                   kind text DEFAULT 'id', noun text DEFAULT 'string')
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
#variable_conflict use_variable
DECLARE
    v_problem text := skene.text_problem(value, max_length, kind);
    v_char    text;
BEGIN
    CASE v_problem
        WHEN 'empty' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: %s must be a non-empty %s, got %s', what, noun, skene.show(value)),
                HINT = hint;
        WHEN 'too long' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: %s %s is too long: %s characters, at most %s',
                                 what, skene.show(value), length(value), max_length),
                HINT = format('Pass at most %s characters. %s', max_length, hint);
        WHEN 'control character' THEN
            v_char := substring(value FROM '[\u0001-\u001f\u007f-\u009f\u2028\u2029]');
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: %s %s contains the control character U+%s at position %s',
                                 what, skene.show(value), lpad(upper(to_hex(ascii(v_char))), 4, '0'),
                                 strpos(value, v_char)),
                HINT = 'Remove line breaks, tabs and other control characters: they come from a '
                       'parsing or encoding bug, not from a name.';
        WHEN 'blank' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: %s must not be blank, got %s', what, skene.show(value)),
                HINT = hint;
        WHEN 'whitespace' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: %s %s has leading or trailing whitespace', what, skene.show(value)),
                HINT = format('Trim it: %s would be another %s than %s.', skene.show(value), what,
                              skene.show(regexp_replace(value,
                                  '^[\u0020\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff]+|[\u0020\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff]+$',
                                  '', 'g')));
        ELSE
            NULL;  -- nothing wrong
    END CASE;
END
$$;
COMMENT ON FUNCTION skene.require_text(text, text, integer, text, text, text) IS 'Raise 22023 naming the value when skene.text_problem finds something wrong with it; internal';

-- Replaces 0001's: besides NULL and empty, ids longer than 255 characters (the
-- primary keys they go into hold at most ~2.7 kB), with control characters, blank, or
-- with whitespace around them are refused.
CREATE OR REPLACE FUNCTION skene.require_customer_id(customer_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF skene.text_problem(customer_id, 255, 'id') IS NOT NULL THEN
        PERFORM skene.require_text('customer_id', customer_id, 255,
            'Pass your application''s id of the customer (user, team or account).');
    END IF;
END
$$;
COMMENT ON FUNCTION skene.require_customer_id(text) IS 'Raise 22023 for a customer id that is NULL, empty, blank, longer than 255 characters, or has control characters or whitespace around it; internal';

-- Replaces 0001's: the unknown feature is shown cut short.
CREATE OR REPLACE FUNCTION skene.require_valid(customer_id text, feature text, amount bigint)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
    v_known text;
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF amount IS NULL OR amount <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: amount must be a positive integer, got %s',
                             coalesce(amount::text, 'NULL')),
            HINT = 'Count at least 1 unit per call; use skene.check() to ask without counting.';
    END IF;
    IF feature IS NULL OR NOT EXISTS (SELECT 1 FROM skene.features f WHERE f.feature = feature) THEN
        SELECT string_agg(f.feature, ', ' ORDER BY f.feature) INTO v_known FROM skene.features f;
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown feature %s', skene.show(feature)),
            HINT = CASE WHEN v_known IS NULL
                        THEN 'No features are defined yet: add them to skene.toml and run skene-pg apply.'
                        ELSE format('Defined features: %s.', v_known) END;
    END IF;
END
$$;

-- Replaces 0001's: every way a customer comes into being checks its id here, also
-- track()'s, which skips the check for customers it already knows.
CREATE OR REPLACE FUNCTION skene.register_customer(customer_id text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    v_plan text;
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    SELECT p.plan INTO v_plan FROM skene.plans p WHERE p.is_default;
    IF v_plan IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('skene: cannot register customer %L: no default plan', customer_id),
            HINT = 'Set default_plan in skene.toml and run skene-pg apply.';
    END IF;
    INSERT INTO skene.customers AS c (customer_id, plan, created_at, updated_at)
    VALUES (customer_id, v_plan, skene.now(), skene.now())
    ON CONFLICT ON CONSTRAINT customers_pkey DO NOTHING;
    RETURN v_plan;
END
$$;
COMMENT ON FUNCTION skene.register_customer(text) IS 'Register a customer on the default plan if new, after checking its id; internal';

-- A pragmatic address check, not RFC 5322: at most 254 characters (the SMTP limit),
-- one @ with something before it, a domain with a dot inside it, no whitespace and no
-- control characters. Enough to keep typos and header injection out of the outbox.
CREATE FUNCTION skene.require_email(email text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM skene.require_text('email', email, 254,
        'Pass one address such as ''ada@example.com'', or NULL to keep the stored one.', 'opaque');
    IF email !~ '^[^@]+@[^@.][^@]*\.[^@]*[^@.]$'
       OR email ~ '[\u0001-\u0020\u007f-\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: email %s is not an address', skene.show(email)),
            HINT = 'Pass one address such as ''ada@example.com'': one @, a name before it, '
                   'a domain with a dot after it, no spaces or control characters.';
    END IF;
END
$$;
COMMENT ON FUNCTION skene.require_email(text) IS 'Raise 22023 unless the text looks like one email address (at most 254 characters); internal';

-- A usage counter is a bigint: adding `amount` to `used` must stay below 2^63.
CREATE FUNCTION skene.require_room(customer_id text, feature text, used bigint, amount bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF used > 9223372036854775807 - amount THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: amount %s would overflow the usage of %s by %s (%s counted)',
                             amount, feature, skene.show(customer_id), used),
            HINT = format('At most %s more units can be counted in this period: usage is a bigint '
                          '(at most 9223372036854775807).', 9223372036854775807 - used);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.require_room(text, text, bigint, bigint) IS 'Raise 22023 when counting amount more would overflow a usage counter; internal';

-- The canonical spelling of a time zone PostgreSQL accepts, or NULL: a zone name in
-- any case ('europe/berlin' -> 'Europe/Berlin'), a POSIX zone ('UTC+5'), or an
-- abbreviation ('CEST', a fixed offset) that AT TIME ZONE accepts. Setting TimeZone is
-- what canonicalises a name; the SET clause restores the caller's afterwards. Not
-- pg_timezone_names: it reads every zone file, some 60 ms a call.
CREATE FUNCTION skene.canonical_timezone(timezone text) RETURNS text
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF skene.text_problem(timezone, 64, 'id') IS NOT NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        PERFORM pg_catalog.set_config('timezone', timezone, true);
        RETURN pg_catalog.current_setting('timezone');
    EXCEPTION WHEN data_exception THEN
        -- 22023 for an unknown name, 22007 and others for a bad 'interval ...' value
        NULL;  -- not a zone: maybe an abbreviation
    END;
    BEGIN
        PERFORM pg_catalog.now() AT TIME ZONE timezone;
        RETURN timezone;
    EXCEPTION WHEN data_exception THEN
        RETURN NULL;
    END;
END
$$;
COMMENT ON FUNCTION skene.canonical_timezone(text) IS 'A time zone as PostgreSQL spells it (''europe/berlin'' -> ''Europe/Berlin''), or NULL when PostgreSQL does not know it; internal';

-- ---------------------------------------------------------------------------------
-- Search paths of code that runs with the owner's rights
-- ---------------------------------------------------------------------------------

-- A role trusted as much as owner_id: a superuser, the owner, a role that can become
-- the owner, or pg_database_owner when the database's owner is one of those.
CREATE FUNCTION skene.is_trusted_role(role_id oid, owner_id oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((
        SELECT r.rolsuper OR r.oid = owner_id OR pg_catalog.pg_has_role(r.oid, owner_id, 'MEMBER')
               OR (r.rolname = 'pg_database_owner' AND (
                   SELECT o.rolsuper OR o.oid = owner_id OR pg_catalog.pg_has_role(o.oid, owner_id, 'MEMBER')
                     FROM pg_catalog.pg_database d JOIN pg_catalog.pg_roles o ON o.oid = d.datdba
                    WHERE d.datname = pg_catalog.current_database()))
          FROM pg_catalog.pg_roles r WHERE r.oid = role_id), false)
$$;
COMMENT ON FUNCTION skene.is_trusted_role(oid, oid) IS 'Whether a role is trusted as much as the owner: superuser, the owner, able to become it, or the database owner role when that is one of these; internal';

-- Every schema of a search_path that code running with the rights of skene's owner
-- (the owner of skene.run_loop) must not search, and why: a role it cannot trust can
-- create objects in it (an `=` operator for varchar there beats pg_catalog's text
-- one), already owns functions or operators in it, could create it (it does not
-- exist yet and such a role has CREATE on the database), or it is the calling
-- session's temporary schema. "$user" is the owner's name, as it is for that code.
CREATE FUNCTION skene.search_path_risks(search_path text)
RETURNS TABLE (schema_name text, risk text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_owner  oid := (SELECT p.proowner FROM pg_catalog.pg_proc p
                      WHERE p.oid = 'skene.run_loop(text, timestamptz)'::pg_catalog.regprocedure);
    v_item   text;
    v_ident  text[];
    v_name   text;
    v_schema oid;
    v_who    text;
    v_seen   text[] := '{}';
BEGIN
    IF search_path IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'skene: search_path must not be NULL',
            HINT = 'Pass a search_path such as ''app, public''.';
    END IF;
    -- items are separated by commas outside double quotes
    FOR v_item IN
        SELECT btrim(m[1], E' \t\n\r') FROM regexp_matches(search_path, '((?:[^,"]|"(?:[^"]|"")*")+)', 'g') m
    LOOP
        CONTINUE WHEN v_item = '';
        IF v_item IN ('$user', '"$user"') THEN
            v_name := (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = v_owner);
        ELSE
            BEGIN
                v_ident := parse_ident(v_item);
            EXCEPTION WHEN invalid_parameter_value THEN
                v_ident := NULL;
            END;
            IF cardinality(v_ident) IS DISTINCT FROM 1 THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = format('skene: %s in search_path %s is not a schema name',
                                     skene.show(v_item), skene.show(search_path)),
                    HINT = 'Write a search_path as schema names separated by commas, e.g. ''app, public''.';
            END IF;
            v_name := v_ident[1];
        END IF;
        CONTINUE WHEN v_name = ANY (v_seen);
        v_seen := v_seen || v_name;
        CONTINUE WHEN v_name = 'pg_catalog';
        schema_name := v_name;
        IF v_name = 'pg_temp' OR v_name ~ '^pg_temp_[0-9]+$' THEN
            risk := 'the calling session''s temporary schema, where any caller can create objects';
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT n.oid INTO v_schema FROM pg_catalog.pg_namespace n WHERE n.nspname = v_name;
        IF NOT FOUND THEN
            SELECT CASE WHEN bool_or(a.grantee = 0) THEN 'PUBLIC' END INTO v_who
              FROM pg_catalog.pg_database d, aclexplode(d.datacl) a
             WHERE d.datname = current_database() AND a.privilege_type = 'CREATE';
            v_who := coalesce(v_who, (
                SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname)
                  FROM pg_catalog.pg_roles r
                 WHERE has_database_privilege(r.oid, current_database(), 'CREATE')
                   AND NOT skene.is_trusted_role(r.oid, v_owner)));
            IF v_who IS NOT NULL THEN
                risk := format('does not exist, and %s can create it', v_who);
                RETURN NEXT;
            END IF;
            CONTINUE;
        END IF;
        SELECT CASE WHEN bool_or(a.grantee = 0) THEN 'PUBLIC' END INTO v_who
          FROM pg_catalog.pg_namespace n, aclexplode(n.nspacl) a
         WHERE n.oid = v_schema AND a.privilege_type = 'CREATE';
        v_who := coalesce(v_who, (
            SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname)
              FROM pg_catalog.pg_roles r
             WHERE has_schema_privilege(r.oid, v_schema, 'CREATE')
               AND NOT skene.is_trusted_role(r.oid, v_owner)));
        IF v_who IS NOT NULL THEN
            risk := format('%s can create objects in it', v_who);
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- code planted while the schema was open stays there after a REVOKE
        SELECT string_agg(DISTINCT quote_ident(r.rolname), ', ') INTO v_who
          FROM (SELECT p.proowner AS owner_id FROM pg_catalog.pg_proc p WHERE p.pronamespace = v_schema
                UNION
                SELECT o.oprowner FROM pg_catalog.pg_operator o WHERE o.oprnamespace = v_schema) x
          JOIN pg_catalog.pg_roles r ON r.oid = x.owner_id
         WHERE NOT skene.is_trusted_role(x.owner_id, v_owner);
        IF v_who IS NOT NULL THEN
            risk := format('holds functions or operators owned by %s', v_who);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION skene.search_path_risks(text) IS 'The schemas of a search_path that roles other than skene''s owner control, with the reason: owner-rights code must not search them';

CREATE FUNCTION skene.unsafe_schemas(search_path text) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(r.schema_name ORDER BY r.ord), '{}')
      FROM skene.search_path_risks($1) WITH ORDINALITY r(schema_name, risk, ord)
$$;
COMMENT ON FUNCTION skene.unsafe_schemas(text) IS 'The schemas of a search_path in which a role other than skene''s owner can create objects or owns code, in path order; empty when the path is safe for owner-rights code';

-- ---------------------------------------------------------------------------------
-- The gate: overflow-proof arithmetic, idempotency keys checked
-- ---------------------------------------------------------------------------------

-- Replaces 0001's. Changes: the idempotency key is checked (1-255 characters) before
-- it is claimed; the fast path's limit test is `amount <= limit - used` (no overflow:
-- both are >= 0), and unlimited or soft counters take the slow path when the addition
-- would overflow, which raises 22023 (skene.require_room).
CREATE OR REPLACE FUNCTION skene.check_and_increment(customer_id text, feature text, amount bigint DEFAULT 1,
                                          idempotency_key text DEFAULT NULL)
RETURNS skene.decision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now       timestamptz := skene.now();
    v_today     bigint;       -- UTC day number (slow path)
    v_day_start timestamptz;
    v_plan      text;
    v_limit     bigint;
    v_window_days int;
    ctx         record;
    v_start     timestamptz;  -- current period (calendar) or day bucket (Nd)
    v_end       timestamptz;
    v_used      bigint;
    v_resets    timestamptz;
    v_row       record;
    v_window    record;
    v_buckets   bigint[];
    v_day_used  bigint;
    v_claimed   boolean;
    v_locked    boolean;      -- the counter was locked before the catalogue was read
    v_result    skene.decision;
BEGIN
    IF idempotency_key IS NOT NULL THEN
        -- Claim the key before counting: a concurrent call with the same key waits on
        -- it and then replays this call's outcome. Validate first: the key's foreign
        -- keys would otherwise turn an unknown feature into 23503, not 22023, and a
        -- key too long for its index into 54000.
        PERFORM skene.require_valid(customer_id, feature, amount);
        IF skene.text_problem(idempotency_key, 255, 'opaque') IS NOT NULL THEN
            PERFORM skene.require_text('idempotency_key', idempotency_key, 255,
                'Send one key per logical request, e.g. a UUID, or NULL for none.', 'opaque', 'key');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM skene.customers c WHERE c.customer_id = customer_id) THEN
            PERFORM skene.register_customer(customer_id);
        END IF;
        INSERT INTO skene.idempotency_keys AS k (customer_id, feature, idempotency_key, created_at)
        VALUES (customer_id, feature, idempotency_key, v_now)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
            SET outcome = NULL, created_at = excluded.created_at, expires_at = NULL
            WHERE k.expires_at <= v_now  -- an expired key is free again
        RETURNING true INTO v_claimed;
        IF NOT FOUND THEN
            v_result := (SELECT k.outcome FROM skene.idempotency_keys k
                          WHERE k.customer_id = customer_id AND k.feature = feature
                            AND k.idempotency_key = idempotency_key);
            v_result.reason := 'duplicate';
            RETURN v_result;
        END IF;
    END IF;

    -- Fast path, one single-table statement: the counter is in its current period (or
    -- day bucket), its cached limit is current, and the call fits. Row lock and limit
    -- check are one step, so concurrent callers can never overshoot.
    IF amount > 0 THEN
        UPDATE skene.usage u
           SET used = u.used + amount, day_used = u.day_used + amount  -- NULL stays NULL
         WHERE u.customer_id = customer_id AND u.feature = feature
           AND u.period_start <= v_now AND (u.rolls_at IS NULL OR v_now < u.rolls_at)
           -- written so that nothing overflows: a huge amount is blocked or refused
           -- on the slow path, never a bigint error here
           AND CASE WHEN u.usage_limit IS NULL OR u.soft
                    THEN u.used <= 9223372036854775807 - amount
                    ELSE amount <= u.usage_limit - u.used END
        RETURNING u.used, u.resets_at, u.plan, u.usage_limit, u.rolls_at,
                  cardinality(u.buckets)
             INTO v_used, v_resets, v_plan, v_limit, v_end, v_window_days;
        IF FOUND THEN
            v_result := ROW(true,
                            CASE WHEN v_used > v_limit THEN 'over_soft_limit' ELSE 'ok' END,
                            feature, v_plan, v_used, v_limit,
                            -- past a soft limit: 0, not negative; unlimited: NULL
                            CASE WHEN v_limit IS NOT NULL THEN greatest(v_limit - v_used, 0) END,
                            v_resets)::skene.decision;
            IF idempotency_key IS NOT NULL THEN
                UPDATE skene.idempotency_keys k
                   SET outcome = v_result,
                       expires_at = CASE WHEN v_window_days IS NULL THEN v_end
                                         ELSE to_timestamp((skene.utc_day(v_now) + v_window_days)
                                                           * 86400) END
                 WHERE k.customer_id = customer_id AND k.feature = feature
                   AND k.idempotency_key = idempotency_key;
            END IF;
            RETURN v_result;
        END IF;
    END IF;

    -- Slow path: bad input, a new customer or counter, a period that ended, a changed
    -- limit, a block, or a counter about to overflow.
    v_today := skene.utc_day(v_now);
    v_day_start := to_timestamp(v_today * 86400);
    -- Lock the counter before reading the catalogue, so the limit cached below is
    -- current: a plan, limit or override change that commits after this read has to
    -- wait for the lock, and its invalidation lands after our write.
    SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
      FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature
       FOR UPDATE;
    v_locked := FOUND;
    SELECT * INTO ctx FROM skene.limit_context(customer_id, feature);
    IF NOT FOUND OR NOT ctx.found_customer OR amount IS NULL OR amount <= 0 THEN
        PERFORM skene.require_valid(customer_id, feature, amount);
        PERFORM skene.register_customer(customer_id);
        SELECT * INTO ctx FROM skene.limit_context(customer_id, feature);
    END IF;

    IF ctx.window_days IS NULL THEN
        SELECT b.period_start, b.period_end INTO v_start, v_end
          FROM skene.period_bounds(ctx.period, v_now, ctx.billing_period_start,
                                   ctx.billing_period_end) b;
    ELSE
        v_start := v_day_start;
        v_end := v_day_start + interval '1 day';
    END IF;

    IF ctx.in_plan AND NOT v_locked THEN
        -- A new counter: create it (or wait for whoever is creating it) and lock it so
        -- concurrent callers count in turn.
        INSERT INTO skene.usage AS u (customer_id, feature, period_start, used, rolls_at)
        VALUES (customer_id, feature, v_start, 0, '-infinity')  -- no cached limit yet
        ON CONFLICT ON CONSTRAINT usage_pkey DO NOTHING;
        SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
          FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature
           FOR UPDATE;
    END IF;
    IF ctx.in_plan AND v_row.period_start > v_now THEN
        -- Others have rolled the counter into a later period than this call's clock:
        -- now() is when a transaction began, so one begun before the rollover gets here
        -- late. Count in the counter's period; rolling it back would lose that period's
        -- usage and let the limit be overshot.
        v_now := v_row.period_start;
        v_today := skene.utc_day(v_now);
        v_day_start := to_timestamp(v_today * 86400);
        SELECT b.period_start, b.period_end INTO v_start, v_end
          FROM skene.period_bounds(ctx.period, v_now, ctx.billing_period_start,
                                   ctx.billing_period_end) b;
    END IF;
    IF ctx.in_plan THEN
        IF ctx.window_days IS NULL THEN
            v_used := CASE WHEN v_row.period_start = v_start THEN v_row.used ELSE 0 END;
            v_resets := v_end;
        ELSE
            SELECT * INTO v_window FROM skene.roll_window(
                v_row.buckets, v_row.used, v_row.day_used, skene.utc_day(v_row.period_start),
                v_today, ctx.window_days) w;
            v_used := v_window.used_now;
            -- an empty window: a unit counted now frees up N days from today
            v_resets := coalesce(v_window.frees_at,
                                 v_day_start + make_interval(days => ctx.window_days));
        END IF;
        IF ctx.usage_limit IS NULL OR ctx.soft OR amount <= ctx.usage_limit - v_used THEN
            PERFORM skene.require_room(customer_id, feature, v_used, amount);
            v_used := v_used + amount;
            IF ctx.window_days IS NOT NULL THEN
                -- today's count moves out of the ring into day_used, for the fast path
                v_buckets := v_window.buckets_now;
                v_day_used := v_buckets[v_today % ctx.window_days + 1] + amount;
                v_buckets[v_today % ctx.window_days + 1] := 0;
            END IF;
            UPDATE skene.usage u
               -- a counter locked only after the catalogue was read caches nothing: a
               -- change committed meanwhile could not see (so not invalidate) a row
               -- still being created; the next call reads the catalogue again
               SET used = v_used, period_start = v_start,
                   rolls_at = CASE WHEN v_locked THEN v_end ELSE '-infinity' END,
                   resets_at = v_resets, buckets = v_buckets, day_used = v_day_used,
                   plan = ctx.plan, usage_limit = ctx.usage_limit, soft = ctx.soft
             WHERE u.customer_id = customer_id AND u.feature = feature;
            v_result := ROW(true,
                            CASE WHEN v_used > ctx.usage_limit THEN 'over_soft_limit' ELSE 'ok' END,
                            feature, ctx.plan, v_used, ctx.usage_limit,
                            CASE WHEN ctx.usage_limit IS NOT NULL
                                 THEN greatest(ctx.usage_limit - v_used, 0) END,
                            v_resets)::skene.decision;
            IF idempotency_key IS NOT NULL THEN
                UPDATE skene.idempotency_keys k
                   SET outcome = v_result,
                       expires_at = CASE WHEN ctx.window_days IS NULL THEN v_end
                                         ELSE v_day_start + make_interval(days => ctx.window_days) END
                 WHERE k.customer_id = customer_id AND k.feature = feature
                   AND k.idempotency_key = idempotency_key;
            END IF;
            RETURN v_result;
        END IF;
        v_result := ROW(false, 'limit_reached', feature, ctx.plan, v_used, ctx.usage_limit,
                        greatest(ctx.usage_limit - v_used, 0), v_resets)::skene.decision;
    ELSE
        v_result := skene.check(customer_id, feature, amount);
    END IF;

    -- Blocked: nothing counted, the key is not kept, the first block is recorded.
    IF idempotency_key IS NOT NULL THEN
        DELETE FROM skene.idempotency_keys k
         WHERE k.customer_id = customer_id AND k.feature = feature
           AND k.idempotency_key = idempotency_key;
    END IF;
    PERFORM skene.record_block(
        customer_id, feature,
        CASE WHEN ctx.window_days IS NULL THEN v_start  -- the calendar period
             -- Nd: the N-day block (aligned at the epoch), so prompts come at most every N days
             ELSE to_timestamp(v_today / ctx.window_days * ctx.window_days * 86400) END,
        v_result, amount);
    RETURN v_result;
END
$$;

-- Replaces 0001's: the same overflow-proof comparisons as check_and_increment, and
-- the same 22023 where counting would overflow the counter.
CREATE OR REPLACE FUNCTION skene.check(customer_id text, feature text, amount bigint DEFAULT 1)
RETURNS skene.decision
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now    timestamptz := skene.now();
    ctx      record;
    v_row    record;
    v_start  timestamptz;
    v_end    timestamptz;
    v_window record;
    v_used   bigint := 0;
    v_resets timestamptz;
    v_limit  bigint;
BEGIN
    PERFORM skene.require_valid(customer_id, feature, amount);
    SELECT * INTO ctx FROM skene.limit_context(customer_id, feature);
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'skene: no default plan',
            HINT = 'Set default_plan in skene.toml and run skene-pg apply.';
    END IF;
    SELECT u.period_start, u.used, u.day_used, u.buckets INTO v_row
      FROM skene.usage u WHERE u.customer_id = customer_id AND u.feature = feature;
    IF ctx.window_days IS NULL THEN
        SELECT b.period_start, b.period_end INTO v_start, v_end
          FROM skene.period_bounds(ctx.period, v_now, ctx.billing_period_start,
                                   ctx.billing_period_end) b;
        IF v_row.period_start = v_start THEN
            v_used := v_row.used;
        END IF;
        v_resets := v_end;
    ELSE
        SELECT * INTO v_window FROM skene.roll_window(
            v_row.buckets, v_row.used, v_row.day_used, skene.utc_day(v_row.period_start),
            skene.utc_day(v_now), ctx.window_days) w;
        v_used := v_window.used_now;
        -- as check_and_increment reports it: an empty window frees N days from today
        v_resets := coalesce(v_window.frees_at, to_timestamp(skene.utc_day(v_now) * 86400)
                                                + make_interval(days => ctx.window_days));
    END IF;

    v_limit := CASE WHEN ctx.in_plan THEN ctx.usage_limit ELSE 0 END;
    IF NOT ctx.in_plan THEN
        RETURN ROW(false, 'not_in_plan', feature, ctx.plan, v_used, 0::bigint, 0::bigint, v_resets)::skene.decision;
    ELSIF v_limit IS NULL THEN
        PERFORM skene.require_room(customer_id, feature, v_used, amount);
        RETURN ROW(true, 'ok', feature, ctx.plan, v_used, NULL::bigint, NULL::bigint, v_resets)::skene.decision;
    ELSIF amount <= v_limit - v_used THEN
        RETURN ROW(true, 'ok', feature, ctx.plan, v_used, v_limit, v_limit - v_used, v_resets)::skene.decision;
    ELSIF ctx.soft THEN
        PERFORM skene.require_room(customer_id, feature, v_used, amount);
        RETURN ROW(true, 'over_soft_limit', feature, ctx.plan, v_used, v_limit,
                   greatest(v_limit - v_used, 0), v_resets)::skene.decision;
    END IF;
    RETURN ROW(false, 'limit_reached', feature, ctx.plan, v_used, v_limit,
               greatest(v_limit - v_used, 0), v_resets)::skene.decision;
END
$$;

-- ---------------------------------------------------------------------------------
-- Contact details and activity
-- ---------------------------------------------------------------------------------

-- Replaces 0001's: email syntax and length, names without control characters (they
-- end up in a To: header), and time zones as PostgreSQL reads them, stored in their
-- canonical spelling.
CREATE OR REPLACE FUNCTION skene.identify(customer_id text, email text DEFAULT NULL, name text DEFAULT NULL,
                               attributes jsonb DEFAULT '{}', timezone text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_zone text;
BEGIN
    PERFORM skene.require_customer_id(customer_id);
    IF email IS NOT NULL THEN
        PERFORM skene.require_email(email);
    END IF;
    IF name IS NOT NULL THEN
        PERFORM skene.require_text('name', name, 255,
            'Pass the customer''s display name, e.g. ''Ada Lovelace'', or NULL to keep the stored one.',
            'label');
    END IF;
    IF attributes IS NOT NULL AND jsonb_typeof(attributes) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: attributes must be a JSON object, got %s', jsonb_typeof(attributes)),
            HINT = 'Pass e.g. ''{"company": "Acme"}''::jsonb.';
    END IF;
    IF timezone IS NOT NULL THEN
        v_zone := skene.canonical_timezone(timezone);
        IF v_zone IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('skene: unknown time zone %s', skene.show(timezone)),
                HINT = 'Use a zone PostgreSQL knows, in any case: a name such as ''Europe/Berlin'', '
                       'an abbreviation such as ''CET'' or a POSIX zone such as ''UTC+5'' '
                       '(POSIX counts hours west of Greenwich).';
        END IF;
    END IF;
    PERFORM skene.register_customer(customer_id);
    UPDATE skene.customers c
       SET email = coalesce(email, c.email),
           name = coalesce(name, c.name),
           attributes = c.attributes || coalesce(attributes, '{}'),
           timezone = coalesce(v_zone, c.timezone),
           updated_at = skene.now()
     WHERE c.customer_id = customer_id;
END
$$;

-- Replaces 0004's. Event names follow the rules of ids (at most 255 characters). A
-- time ahead of skene's clock is clamped to now, not refused: track() sits on the
-- request path and is often fed clocks of devices, which run ahead; the activity is
-- real and happening now. Stored activity then never lies in the future, where it
-- would hide a customer from dormancy loops until that time.
CREATE OR REPLACE FUNCTION skene.track(customer_id text, event text, properties jsonb DEFAULT '{}',
                            occurred_at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_at    timestamptz := occurred_at;
    v_count bigint;
BEGIN
    -- Only NULL and '' here: an unknown id is checked in full when skene.register_customer
    -- registers it, so a known customer's events skip the check.
    IF customer_id IS NULL OR customer_id = '' THEN
        PERFORM skene.require_customer_id(customer_id);
    END IF;
    IF skene.text_problem(event, 255, 'id') IS NOT NULL THEN
        PERFORM skene.require_text('event', event, 255,
            'Name what the customer did, e.g. ''project_created''.', 'id', 'name');
    END IF;
    IF properties IS NOT NULL AND jsonb_typeof(properties) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: properties must be a JSON object, got %s', jsonb_typeof(properties)),
            HINT = 'Pass e.g. ''{"plan": "pro"}''::jsonb, or omit it.';
    END IF;
    IF v_at IS NULL OR NOT isfinite(v_at) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: occurred_at must be a finite time, got %s', coalesce(v_at::text, 'NULL')),
            HINT = 'Omit it to mean now.';
    END IF;
    -- The default is the transaction's now(): then take skene's clock (tests move it).
    IF v_at = pg_catalog.now() AND pg_catalog.current_setting('skene.now', true) <> '' THEN
        v_at := skene.now();
    END IF;
    IF v_at > skene.now() THEN
        v_at := skene.now();
    END IF;
    PERFORM skene.record_activity(customer_id, v_at);
    -- Counts are kept only for events a milestone loop counts (an index lookup).
    IF EXISTS (SELECT 1 FROM skene.loops l
                WHERE l.type = 'milestone' AND l.config ->> 'event' = event AND l.enabled) THEN
        INSERT INTO skene.event_counts AS e (customer_id, event, count, first_at, last_at)
        VALUES (customer_id, event, 1, v_at, v_at)
        ON CONFLICT ON CONSTRAINT event_counts_pkey
        DO UPDATE SET count = e.count + 1, last_at = greatest(e.last_at, excluded.last_at)
        RETURNING e.count INTO v_count;  -- the row lock serialises concurrent calls
        PERFORM skene.reach_milestones(customer_id, NULL, event, v_count - 1, v_count);
    END IF;
END
$$;
COMMENT ON FUNCTION skene.track(text, text, jsonb, timestamptz) IS 'Record a customer''s activity (retention) and count events milestones watch; registers new customers; a future occurred_at counts as now';

-- Replaces 0004's. The row belongs to the app's table, so its INSERT must not fail
-- because of skene: a customer id track() would refuse is skipped, and a time that is
-- missing, infinite or in the future counts as now.
CREATE OR REPLACE FUNCTION skene.watched_activity() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row jsonb := pg_catalog.to_jsonb(NEW);
    v_customer text := v_row ->> TG_ARGV[0];
    v_at timestamptz;
BEGIN
    IF skene.text_problem(v_customer, 255, 'id') IS NULL THEN
        v_at := (v_row ->> TG_ARGV[1])::timestamptz;
        IF v_at IS NULL OR NOT isfinite(v_at) OR v_at > skene.now() THEN
            v_at := skene.now();
        END IF;
        PERFORM skene.record_activity(v_customer, v_at);
    END IF;
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------
-- Billing and suppressions
-- ---------------------------------------------------------------------------------

-- Replaces 0002's: at most 254 characters (the index holds ~2.7 kB), and owner's
-- rights, so skene_worker (the webhook server records bounces) needs no table grant.
CREATE OR REPLACE FUNCTION skene.suppress(email text, reason text DEFAULT 'manual', source text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    IF email IS NULL OR pg_catalog.btrim(email) = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'skene: email must be a non-empty address',
            HINT = 'Pass the address to suppress, e.g. ''ada@example.com''.';
    END IF;
    PERFORM skene.require_text('email', pg_catalog.btrim(email), 254,
        'Pass the address to suppress, e.g. ''ada@example.com''.', 'opaque');
    IF reason IS NULL OR reason NOT IN ('bounce', 'complaint', 'manual') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: unknown suppression reason %s', skene.show(reason)),
            HINT = 'Reasons are bounce, complaint and manual.';
    END IF;
    IF source IS NOT NULL THEN
        PERFORM skene.require_text('source', source, 255,
            'Name where the suppression came from, e.g. ''resend''.', 'label');
    END IF;
    INSERT INTO skene.suppressions AS s (email, reason, source, created_at)
    VALUES (pg_catalog.lower(pg_catalog.btrim(email)), reason, source, skene.now())
    ON CONFLICT ON CONSTRAINT suppressions_pkey DO NOTHING;  -- the first reason stays
END
$$;

-- Replaces 0003's: provider and biller customer ids follow the rules of ids.
CREATE OR REPLACE FUNCTION skene.link_billing_customer(customer_id text, provider text,
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
                             skene.show(provider), skene.show(external_customer_id)),
            HINT = 'E.g. SELECT skene.link_billing_customer(''cus_42'', ''stripe'', ''cus_NffrFeUfNV2Hib'').';
    END IF;
    PERFORM skene.require_text('provider', provider, 64, 'Name the biller, e.g. ''stripe''.');
    PERFORM skene.require_text('external customer id', external_customer_id, 255,
        'Pass the biller''s id of the customer, e.g. Stripe''s ''cus_NffrFeUfNV2Hib''.');
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

-- Replaces 0003's: the event id and type follow the rules of ids (at most 255
-- characters: the id is the inbox's key and part of the sync job's dedupe key), and
-- so does the biller customer id; the customer id the app named is checked when it is
-- linked. A bad value raises 22023 and stores nothing.
CREATE OR REPLACE FUNCTION skene.ingest_billing_event(provider text, payload jsonb) RETURNS boolean
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
            MESSAGE = format('skene: unknown billing provider %s', skene.show(provider)),
            HINT = 'Only ''stripe'' events are synced; other billers call skene.set_plan() from their webhook handler.';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' OR v_id IS NULL OR v_id = ''
       OR v_type IS NULL OR jsonb_typeof(v_object) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'skene: not a Stripe event: it needs id, type and data.object',
            HINT = 'Pass the verified webhook body as jsonb, e.g. skene.ingest_billing_event(''stripe'', body::jsonb).';
    END IF;
    PERFORM skene.require_text('event id', v_id, 255, 'Stripe event ids look like ''evt_1NG8Du2eZvKYlo2C''.');
    PERFORM skene.require_text('event type', v_type, 255,
        'Stripe event types look like ''customer.subscription.updated''.');
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
    PERFORM skene.require_text('Stripe customer id', v_external, 255,
        'Stripe customer ids look like ''cus_NffrFeUfNV2Hib''.');
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

-- ---------------------------------------------------------------------------------
-- Retention runs: the segment's search_path
-- ---------------------------------------------------------------------------------

-- Replaces 0004's. A segment runs with the owner's rights and the loop's
-- segment_search_path, which skene-pg apply takes from its session ("$user", public by
-- default). An operator or function another role put in one of those schemas would
-- run with the owner's rights too (an `=` for varchar in public beats pg_catalog's
-- text one). So a loop whose path holds a schema another role controls
-- (skene.search_path_risks) is refused with 42501 before its slot is taken: nothing is
-- recorded, and the slot runs once the path or the schema is fixed. Checked on every
-- run, as a schema can be opened after the loop was written.
CREATE OR REPLACE FUNCTION skene.run_loop(name text, slot timestamptz DEFAULT NULL)
RETURNS skene.loop_runs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_now     timestamptz := skene.now();
    v_slot    timestamptz := coalesce(slot, date_trunc('minute', skene.now()));
    v_loop    record;
    v_run     skene.loop_runs;
    v_counts  record;
    v_known   text;
    v_risks   text;
BEGIN
    IF v_slot > v_now THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: slot %s of loop %s is in the future', v_slot, skene.show(name)),
            HINT = 'Omit the slot to run the loop for this minute.';
    END IF;
    SELECT l.name, l.type, l.config, l.enabled, l.segment_search_path INTO v_loop
      FROM skene.loops l WHERE l.name = name;
    IF NOT FOUND OR v_loop.type <> 'retention' THEN
        SELECT string_agg(l.name, ', ' ORDER BY l.name) INTO v_known
          FROM skene.loops l WHERE l.type = 'retention';
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('skene: no retention loop %s', skene.show(name)),
            HINT = format('Retention loops: %s.', coalesce(v_known, 'none (add one to skene.toml and run skene-pg apply)'));
    END IF;
    IF coalesce(v_loop.config ->> 'segment', '') <> '' THEN
        SELECT string_agg(format('%s (%s)', r.schema_name, r.risk), '; ') INTO v_risks
          FROM skene.search_path_risks(v_loop.segment_search_path) r;
        IF v_risks IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = format('skene: loop %s refused: its segment would run with the owner''s '
                                 'rights in schemas other roles control: %s', v_loop.name, v_risks),
                DETAIL = format('The loop''s search_path is %s.', v_loop.segment_search_path),
                HINT = 'Leave those schemas out of the search_path skene-pg apply runs with (it is '
                       'stored in skene.loops.segment_search_path) and qualify the app''s tables in '
                       'the segment, or REVOKE CREATE ON SCHEMA ... FROM PUBLIC and the roles named.';
        END IF;
    END IF;
    -- The slot's row is the run's lock: a second run of the slot (another scheduler,
    -- another worker) waits here for the first to commit, then does nothing.
    INSERT INTO skene.loop_runs AS r (loop_name, slot, state, started_at)
    VALUES (name, v_slot, 'running', pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT loop_runs_slot DO NOTHING
    RETURNING * INTO v_run;
    IF NOT FOUND THEN
        SELECT * INTO v_run FROM skene.loop_runs r WHERE r.loop_name = name AND r.slot = v_slot;
        RETURN v_run;
    END IF;
    IF NOT v_loop.enabled THEN
        UPDATE skene.loop_runs r SET state = 'succeeded', finished_at = pg_catalog.clock_timestamp(),
                                     error = 'loop disabled'
         WHERE r.id = v_run.id RETURNING * INTO v_run;
        RETURN v_run;
    END IF;
    BEGIN
        SELECT * INTO v_counts FROM skene.queue_retention(v_loop.name, v_loop.config, v_now, v_run.id);
        UPDATE skene.loop_runs r
           SET state = 'succeeded', finished_at = pg_catalog.clock_timestamp(),
               candidates = v_counts.n_candidates, queued = v_counts.n_queued, held_out = v_counts.n_held_out
         WHERE r.id = v_run.id RETURNING * INTO v_run;
    EXCEPTION WHEN query_canceled OR others THEN
        -- everything the run queued is rolled back with the subtransaction
        UPDATE skene.loop_runs r
           SET state = 'failed', finished_at = pg_catalog.clock_timestamp(), error = SQLERRM
         WHERE r.id = v_run.id RETURNING * INTO v_run;
    END;
    RETURN v_run;
END
$$;
COMMENT ON FUNCTION skene.run_loop(text, timestamptz) IS 'Run a retention loop for a time slot (default: this minute) once; returns its run, failed with the error on a bad segment; refused (42501) when the segment''s search_path holds a schema other roles control';

-- ---------------------------------------------------------------------------------
-- Owner's rights and pinned search_path where a role without table rights calls
-- ---------------------------------------------------------------------------------

-- skene_billing (set_billing_period) and skene_worker (prune) hold no table rights:
-- these run as their owner. Both already pin search_path.
ALTER FUNCTION skene.set_billing_period(text, timestamptz, timestamptz) SECURITY DEFINER;
ALTER FUNCTION skene.prune() SECURITY DEFINER;
-- A trigger function runs with the search_path of whoever changes the table; when
-- that is skene-pg apply's session ("$user", public), pin it.
ALTER FUNCTION skene.invalidate_usage_cache() SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION skene.prune() IS 'Delete idempotency keys whose usage has left its period; returns how many. Owner''s rights: skene_worker may schedule it';

-- ---------------------------------------------------------------------------------
-- Privileges: one role per trust level
--   skene_app      the application's request path: gate, contact details, activity
--   skene_billing  whatever changes plans and billing periods: back office, webhooks
--   skene_worker   what skene-pg listen calls
-- ---------------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION
    skene.show(text),
    skene.text_problem(text, integer, text),
    skene.require_text(text, text, integer, text, text, text),
    skene.require_email(text),
    skene.require_room(text, text, bigint, bigint),
    skene.canonical_timezone(text),
    skene.is_trusted_role(oid, oid),
    skene.search_path_risks(text),
    skene.unsafe_schemas(text)
  FROM PUBLIC;

GRANT USAGE ON SCHEMA skene TO skene_billing;
GRANT EXECUTE ON FUNCTION
    skene.set_plan(text, text, text, text),
    skene.set_billing_period(text, timestamptz, timestamptz),
    skene.ingest_billing_event(text, jsonb),
    skene.link_billing_customer(text, text, text)
  TO skene_billing;

-- A role that can change plans can give itself any plan: not the application's.
REVOKE EXECUTE ON FUNCTION
    skene.set_plan(text, text, text, text),
    skene.ingest_billing_event(text, jsonb)
  FROM skene_app;

-- The worker applies Stripe's plans through skene.apply_stripe_subscription (owner's
-- rights, only plans a configured price maps to), so it needs no set_plan, and it
-- makes no gate calls. It keeps ingest_billing_event (the webhook server),
-- link_billing_customer (skene-pg billing link), suppress and prune.
REVOKE EXECUTE ON FUNCTION
    skene.set_plan(text, text, text, text),
    skene.check(text, text, bigint),
    skene.check_and_increment(text, text, bigint, text),
    skene.identify(text, text, text, jsonb, text),
    skene.unsubscribe(text),
    skene.track(text, text, jsonb, timestamptz)
  FROM skene_worker;
