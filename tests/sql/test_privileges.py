"""Least privilege: an application role granted skene_app calls the public functions
and can do nothing else; owner-rights functions pin search_path."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import errors, sql

from tests.sql.helpers import check_and_increment, decision, scalar, utc

pytestmark = pytest.mark.usefixtures("catalogue")

# What skene_app may execute, and nothing else: the request path. Changing plans
# (set_plan, ingest_billing_event, ...) belongs to skene_billing (test_roles.py).
PUBLIC_API = {
    "check",
    "check_and_increment",
    "identify",
    "track",
    "unsubscribe",
    # the request path of the framework middleware (0009): give back a failed
    # request's count, and read the gates (display names, patterns, messages)
    "refund",
    "gates",
}


@pytest.fixture
def app_role(conn: psycopg.Connection) -> Iterator[str]:
    """A LOGIN role as an application would have it: `GRANT skene_app TO app_user`."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    conn.execute(sql.SQL("GRANT skene_app TO {}").format(sql.Identifier(name)))
    yield name
    # roles are cluster-wide, so drop it (its sessions are closed by now)
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def app(app_role: str, connect: Callable[..., psycopg.Connection]) -> Iterator[psycopg.Connection]:
    c = connect(user=app_role)
    assert scalar(c, "SELECT current_user") == app_role
    yield c
    c.close()  # before the role is dropped


def test_app_can_call_the_public_functions(
    app: psycopg.Connection, conn: psycopg.Connection
) -> None:
    # The app's clock is the real one (see test_app_cannot_move_the_clock).
    april = scalar(
        conn,
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') "
        "+ interval '1 month') AT TIME ZONE 'UTC'",
    )
    assert check_and_increment(app, "acme", "api_calls", 99) == decision(
        True, "ok", "api_calls", "free", 99, 100, 1, april
    )
    assert check_and_increment(app, "acme", "api_calls", key="k") == decision(
        True, "ok", "api_calls", "free", 100, 100, 0, april
    )
    assert check_and_increment(app, "acme", "api_calls", key="k")["reason"] == "duplicate"
    assert (
        check_and_increment(app, "acme", "api_calls")["reason"] == "limit_reached"
    )  # queues a job
    assert scalar(app, "SELECT reason FROM skene.check('acme', 'api_calls')") == "limit_reached"
    assert check_and_increment(app, "acme", "rolling")["allowed"]
    conn.execute("SELECT skene.set_plan('acme', 'pro', 'stripe', 'sub_1')")  # the biller's
    app.execute(
        "SELECT skene.identify('acme', 'a@example.com', 'Acme', '{\"tier\": 1}', 'Europe/Berlin')"
    )
    app.execute("SELECT skene.unsubscribe('acme')")
    assert check_and_increment(app, "acme", "api_calls")["plan"] == "pro"
    assert conn.execute(
        "SELECT plan, email, name, attributes, timezone, unsubscribed_at IS NOT NULL "
        "FROM skene.customers"
    ).fetchall() == [("pro", "a@example.com", "Acme", {"tier": 1}, "Europe/Berlin", True)]
    assert scalar(conn, "SELECT count(*) FROM skene.jobs") == 1


def test_app_cannot_move_the_clock(app: psycopg.Connection, conn: psycopg.Connection) -> None:
    """skene.now is a test hook for superusers: an app role setting it changes nothing,
    so it can't step into next month's quota."""
    real_period_end = scalar(
        conn,
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') "
        "+ interval '1 month') AT TIME ZONE 'UTC'",
    )
    app.execute("SET skene.now = '2031-01-01 00:00:00+00'")
    assert check_and_increment(app, "acme", "api_calls")["resets_at"] == real_period_end
    conn.execute("SET skene.now = '2031-01-01 00:00:00+00'")  # a superuser's session
    assert check_and_increment(conn, "acme", "api_calls")["resets_at"] == utc("2031-02-01 00:00:00")


def test_app_cannot_touch_any_skene_table(
    app: psycopg.Connection, app_role: str, conn: psycopg.Connection
) -> None:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'skene' ORDER BY 1"
        )
    ]
    assert {"usage", "customers", "jobs", "idempotency_keys", "alembic_version"} <= set(tables)
    for table in tables:
        target = sql.Identifier("skene", table)
        column = sql.Identifier(
            scalar(
                conn,
                """
            SELECT attname FROM pg_attribute
             WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
               AND attidentity = '' AND attgenerated = ''
             ORDER BY attnum LIMIT 1""",
                (f"skene.{table}",),
            )
        )
        for statement in (
            sql.SQL("SELECT * FROM {}").format(target),
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
            sql.SQL("UPDATE {} SET {} = {}").format(target, column, column),
            sql.SQL("DELETE FROM {}").format(target),
            sql.SQL("TRUNCATE {}").format(target),
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(statement)
        for privilege in (
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
        ):
            assert not scalar(
                conn,
                "SELECT has_table_privilege(%s, %s, %s)",
                (app_role, f"skene.{table}", privilege),
            ), (table, privilege)
    sequences = [
        r[0]
        for r in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'skene'")
    ]
    for sequence in sequences:
        assert not scalar(
            conn,
            "SELECT has_sequence_privilege(%s, %s, 'USAGE, SELECT, UPDATE')",
            (app_role, f"skene.{sequence}"),
        )
    assert not scalar(conn, "SELECT has_schema_privilege(%s, 'skene', 'CREATE')", (app_role,))


INTERNAL_CALLS = [
    "skene.set_plan('acme', 'pro')",
    "skene.ingest_billing_event('stripe', '{}')",
    "skene.link_billing_customer('acme', 'stripe', 'cus_1')",
    "skene.unsafe_schemas('public')",
    "skene.register_customer('acme')",
    "skene.enqueue('email', '{}')",
    "skene.set_limit_override('acme', 'api_calls', NULL)",
    "skene.clear_limit_override('acme', 'api_calls')",
    "skene.set_billing_period('acme', now(), now() + interval '1 month')",
    "skene.prune()",
    "skene.now()",
    "skene.limit_context('acme', 'api_calls')",
    "skene.require_valid('acme', 'api_calls', 1)",
    "skene.period_bounds('month', now())",
]


def test_app_cannot_call_internal_functions(app: psycopg.Connection) -> None:
    for call in INTERNAL_CALLS:
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(f"SELECT {call}")


def test_app_executes_exactly_the_public_functions(app_role: str, conn: psycopg.Connection) -> None:
    rows = conn.execute(
        """
        SELECT p.proname, has_function_privilege(%s, p.oid, 'EXECUTE')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'skene'""",
        (app_role,),
    ).fetchall()
    executable = {name for name, allowed in rows if allowed}
    defined = {name for name, _ in rows}
    assert executable == PUBLIC_API & defined
    assert {"check", "check_and_increment", "identify", "unsubscribe"} <= executable


def test_a_role_without_skene_app_cannot_call_the_gate(
    conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    name = f"other_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        stranger = connect(user=name)
        with pytest.raises(errors.InsufficientPrivilege):
            stranger.execute("SELECT skene.check_and_increment('acme', 'api_calls')")
        stranger.close()
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_security_definer_functions_pin_search_path(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        SELECT p.proname, p.proconfig
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'skene' AND p.prosecdef ORDER BY 1""").fetchall()
    assert {"check", "check_and_increment", "set_plan", "identify", "unsubscribe"} <= {
        r[0] for r in rows
    }
    for name, config in rows:
        paths = [c.split("=", 1)[1] for c in (config or []) if c.startswith("search_path=")]
        assert len(paths) == 1, (
            f"skene.{name} runs with the owner's rights and no pinned search_path"
        )
        schemas = [s.strip() for s in paths[0].split(",")]
        # pg_temp last (it is searched first when left out); nothing a caller can create in
        assert schemas[-1] == "pg_temp" and schemas[0] == "pg_catalog", (name, schemas)
        assert not {"public", "$user", '"$user"'} & set(schemas), (name, schemas)


def test_app_cannot_shadow_skene_objects_through_search_path(
    app: psycopg.Connection, conn: psycopg.Connection
) -> None:
    """A temporary table named like a skene table must not be what the gate reads."""
    app.execute("CREATE TEMP TABLE usage (customer_id text, feature text, used bigint)")
    app.execute("CREATE TEMP TABLE customers (customer_id text, plan text)")
    app.execute("SET search_path = pg_temp, public")
    assert check_and_increment(app, "acme", "api_calls")["used"] == 1
    assert scalar(conn, "SELECT used FROM skene.usage WHERE customer_id = 'acme'") == 1


def test_the_clock_stays_inlinable(conn: psycopg.Connection) -> None:
    """skene.now() is read on every gate call: it must inline to a CASE, not run as a
    function call re-planned each time (a sub-select in its body would prevent that)."""
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE) SELECT skene.now()"))
    assert "CASE WHEN" in plan and "skene.now()" not in plan
