"""Code that runs with the owner's rights must not search schemas other roles control:
a retention segment is run by skene.run_loop (SECURITY DEFINER) with the loop's
segment_search_path, so an operator the application role planted there would run as
the owner. skene.search_path_risks / skene.unsafe_schemas name such schemas, and
run_loop refuses a segment whose path holds one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg import errors, sql

from tests.sql.conftest import START
from tests.sql.helpers import scalar, utc

pytestmark = pytest.mark.usefixtures("catalogue")

SEGMENT = "SELECT id AS customer_id FROM accounts WHERE tier = 'trial'"

# Planted by skene_app in public: an `=` for varchar, which beats pg_catalog's text `=`
# for `tier = 'trial'` (an exact match), and which, when run as a role that can, grants
# skene_app every skene table and lifts a customer's limit. It logs who ran it and
# otherwise compares honestly, so a segment using it still "works".
TRAP = """
CREATE TABLE public.trap_log (who text);
GRANT INSERT ON public.trap_log TO PUBLIC;
CREATE FUNCTION public.trap_eq(a varchar, b varchar) RETURNS boolean
LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.trap_log VALUES (current_user::text);
    BEGIN
        EXECUTE 'GRANT ALL ON ALL TABLES IN SCHEMA skene TO skene_app';
        INSERT INTO skene.limit_overrides VALUES ('ada', 'api_calls', NULL);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;  -- not the owner (yet): stay unnoticed
    END;
    RETURN a::text = b::text;
END
$f$;
CREATE OPERATOR public.= (leftarg = varchar, rightarg = varchar, function = public.trap_eq);
"""


def add_segment_loop(conn: psycopg.Connection, name: str, segment: str) -> None:
    """A retention loop written the way skene-pg apply writes it: segment_search_path
    is the writing session's search_path."""
    config = {"dormant_after": "7 days", "template": "re_engagement", "segment": segment}
    conn.execute(
        "INSERT INTO skene.loops (name, type, config) VALUES (%s, 'retention', %s)",
        (name, json.dumps(config)),
    )


@pytest.fixture
def trial_accounts(conn: psycopg.Connection) -> psycopg.Connection:
    """An app table with a varchar column, a dormant customer with an email, and a loop
    whose segment compares that column, written with the default search_path."""
    conn.execute("CREATE TABLE public.accounts (id varchar(64), tier varchar(16))")
    conn.execute("INSERT INTO public.accounts VALUES ('ada', 'trial'), ('bob', 'paid')")
    conn.execute("GRANT SELECT ON public.accounts TO skene_app")  # the app reads its table
    for customer in ("ada", "bob"):
        conn.execute("SELECT skene.identify(%s, %s || '@example.com')", (customer, customer))
    conn.execute("UPDATE skene.customers SET last_activity_at = %s", (utc(START) - timedelta(8),))
    add_segment_loop(conn, "trial_users", SEGMENT)
    assert scalar(conn, "SELECT segment_search_path FROM skene.loops") == '"$user", public'
    return conn


def owner_was_fooled(conn: psycopg.Connection) -> list[str]:
    """Everything the trap would have done with the owner's rights."""
    found = [
        f"the trap ran as {who}"
        for (who,) in conn.execute("SELECT who FROM public.trap_log WHERE who <> 'skene_app'")
    ]
    found += [
        f"skene_app was granted {privilege} on skene.{table}"
        for (table, privilege) in conn.execute(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'skene_app' AND table_schema = 'skene'"
        )
    ]
    if scalar(conn, "SELECT count(*) FROM skene.limit_overrides"):
        found.append("a limit override was written")
    return found


def test_an_operator_the_app_planted_never_runs_with_the_owners_rights(
    trial_accounts: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    conn = trial_accounts
    # public as on PostgreSQL 14 and on clusters upgraded from it
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    attacker = connect()
    attacker.execute("SET ROLE skene_app")
    attacker.execute(TRAP)
    # the trap is armed: the segment's comparison resolves to it
    assert attacker.execute(
        "SELECT count(*) FROM public.accounts WHERE tier = 'trial'"
    ).fetchone() == (1,)
    assert conn.execute("SELECT DISTINCT who FROM public.trap_log").fetchall() == [("skene_app",)]

    worker = connect()
    worker.execute("SET ROLE skene_worker")  # the schedules skene-pg listen runs
    with pytest.raises(errors.InsufficientPrivilege) as refused:
        worker.execute("SELECT * FROM skene.run_loop('trial_users')")
    message = refused.value.diag.message_primary or ""
    assert "loop trial_users refused" in message
    assert "public (PUBLIC can create objects in it)" in message
    assert refused.value.diag.message_detail == 'The loop\'s search_path is "$user", public.'
    assert "qualify the app's tables" in (refused.value.diag.message_hint or "")
    assert owner_was_fooled(conn) == []
    # refused before the slot was taken: nothing recorded, nothing queued
    assert scalar(conn, "SELECT count(*) FROM skene.loop_runs") == 0
    assert scalar(conn, "SELECT count(*) FROM skene.jobs") == 0

    # Closing the schema is not enough: the planted operator is still there.
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with pytest.raises(errors.InsufficientPrivilege, match="owned by skene_app"):
        worker.execute("SELECT * FROM skene.run_loop('trial_users')")
    assert owner_was_fooled(conn) == []

    # The fix the hint names: a path without public, the app's table qualified.
    conn.execute(
        "UPDATE skene.loops SET segment_search_path = 'pg_catalog', config = config || %s",
        (json.dumps({"segment": SEGMENT.replace("FROM accounts", "FROM public.accounts")}),),
    )
    run = worker.execute("SELECT state, error, queued FROM skene.run_loop('trial_users')")
    assert run.fetchone() == ("succeeded", None, 1)
    assert conn.execute("SELECT customer_id FROM skene.jobs").fetchall() == [("ada",)]
    assert owner_was_fooled(conn) == []
    assert conn.execute("SELECT DISTINCT who FROM public.trap_log").fetchall() == [("skene_app",)]


def test_a_loop_without_a_segment_runs_whatever_the_path(
    conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    """No segment, no dynamic SQL: nothing of the path is searched."""
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    conn.execute(
        "INSERT INTO skene.loops (name, type, config) VALUES ('dormant', 'retention', "
        '\'{"dormant_after": "7 days", "template": "re_engagement"}\')'
    )
    assert conn.execute("SELECT state FROM skene.run_loop('dormant')").fetchone() == ("succeeded",)


@pytest.fixture
def stranger(conn: psycopg.Connection) -> Iterator[str]:
    """A role with no relation to skene's owner."""
    name = f"stranger_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    yield name
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def risks(conn: psycopg.Connection, path: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT * FROM skene.search_path_risks(%s)", (path,)).fetchall()


def unsafe(conn: psycopg.Connection, path: str) -> list[str]:
    return scalar(conn, "SELECT skene.unsafe_schemas(%s)", (path,))


def test_which_schemas_are_unsafe(conn: psycopg.Connection, stranger: str) -> None:
    # PostgreSQL 15's public belongs to the database owner (here a superuser)
    assert unsafe(conn, '"$user", public') == []
    assert unsafe(conn, "pg_catalog, public, information_schema") == []
    conn.execute("CREATE SCHEMA app")
    assert unsafe(conn, "app, public") == []
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA app TO {}").format(sql.Identifier(stranger)))
    assert risks(conn, "public, APP") == [("app", f"{stranger} can create objects in it")]
    conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA app FROM {}").format(sql.Identifier(stranger)))
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA app TO skene_app, skene_worker"))
    assert risks(conn, "app") == [("app", "skene_app, skene_worker can create objects in it")]
    conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA app FROM skene_app, skene_worker"))
    # owning a schema is creating in it
    conn.execute(
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(*[sql.Identifier(stranger)] * 2)
    )
    assert risks(conn, f'"{stranger}", app') == [(stranger, f"{stranger} can create objects in it")]
    # the caller's temporary schema, wherever it is written
    assert unsafe(conn, "pg_temp, app") == ["pg_temp"]
    assert unsafe(conn, "app, pg_temp_3") == ["pg_temp_3"]
    # quoted names are taken as written
    conn.execute('CREATE SCHEMA "Odd, Name"')
    conn.execute('GRANT CREATE ON SCHEMA "Odd, Name" TO PUBLIC')
    assert unsafe(conn, 'app, "Odd, Name", public') == ["Odd, Name"]
    with pytest.raises(errors.InvalidParameterValue, match="is not a schema name"):
        unsafe(conn, "app.tables, public")


def test_schemas_that_do_not_exist_yet_are_unsafe_when_others_may_create_them(
    conn: psycopg.Connection,
) -> None:
    """ "$user" is the owner's name (here postgres), a schema nobody made yet."""
    dbname = scalar(conn, "SELECT current_database()")
    assert unsafe(conn, '"$user", nowhere') == []
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO skene_app").format(sql.Identifier(dbname)))
    try:
        assert risks(conn, '"$user", public, nowhere') == [
            ("postgres", "does not exist, and skene_app can create it"),
            ("nowhere", "does not exist, and skene_app can create it"),
        ]
    finally:
        conn.execute(
            sql.SQL("REVOKE CREATE ON DATABASE {} FROM skene_app").format(sql.Identifier(dbname))
        )


def test_roles_that_can_become_the_owner_are_trusted(
    conn: psycopg.Connection, stranger: str
) -> None:
    """A member of the owner's role gains nothing by planting code: it is the owner."""
    conn.execute("CREATE SCHEMA app")
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA app TO {}").format(sql.Identifier(stranger)))
    assert unsafe(conn, "app") == ["app"]
    owner = scalar(
        conn,
        "SELECT proowner::regrole::text FROM pg_proc "
        "WHERE oid = 'skene.run_loop(text, timestamptz)'::regprocedure",
    )
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(stranger)))
    try:
        assert unsafe(conn, "app") == []
    finally:
        conn.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(owner), sql.Identifier(stranger))
        )
