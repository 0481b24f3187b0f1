"""An app's own tests move skene's clock as the README documents: `SET skene.now` in
a session whose login role an operator granted skene_test_clock (a role that exists in
test clusters only). An application role without it, or a clock role given to every
application role through skene_app, moves nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import errors, sql

from tests.sql.helpers import check_and_increment, scalar, utc

pytestmark = pytest.mark.usefixtures("catalogue")

FUTURE = "2031-01-01 00:00:00+00"


@pytest.fixture
def clock_role(conn: psycopg.Connection) -> Iterator[str]:
    """What an operator does in a test cluster: CREATE ROLE skene_test_clock NOLOGIN."""
    exists = scalar(conn, "SELECT count(*) FROM pg_roles WHERE rolname = 'skene_test_clock'")
    if not exists:
        conn.execute("CREATE ROLE skene_test_clock NOLOGIN")
    yield "skene_test_clock"
    if not exists:  # roles are cluster-wide: leave the cluster as it was
        conn.execute("DROP ROLE skene_test_clock")


@pytest.fixture
def login_role(conn: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """LOGIN roles granted the given roles, dropped afterwards."""
    made: list[str] = []

    def _make(*granted: str) -> str:
        name = f"app_{uuid.uuid4().hex[:12]}"
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        for role in granted:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name))
            )
        made.append(name)
        return name

    yield _make
    for name in made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def real_month_end(conn: psycopg.Connection) -> object:
    return scalar(
        conn,
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') "
        "+ interval '1 month') AT TIME ZONE 'UTC'",
    )


def test_a_test_role_granted_skene_test_clock_moves_the_clock(
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    clock_role: str,
    login_role: Callable[..., str],
) -> None:
    app_test = connect(user=login_role("skene_app", clock_role))
    app_test.execute(f"SET skene.now = '{FUTURE}'")
    assert check_and_increment(app_test, "acme", "api_calls")["resets_at"] == utc(
        "2031-02-01 00:00:00"
    )
    # per transaction too (PgBouncer in transaction mode), then back to real time
    app_test.execute("RESET skene.now")
    with app_test.transaction():
        app_test.execute("SET LOCAL skene.now = '2031-06-15 12:00:00+00'")
        assert check_and_increment(app_test, "beta", "api_calls")["resets_at"] == utc(
            "2031-07-01 00:00:00"
        )
    assert check_and_increment(app_test, "gamma", "api_calls")["resets_at"] == real_month_end(conn)
    # and the activity it tracks without a time is at the test's time
    app_test.execute("SET skene.now = '2031-03-03 03:03:03+00'")
    app_test.execute("SELECT skene.track('acme', 'login')")
    assert scalar(
        conn, "SELECT last_activity_at FROM skene.customers WHERE customer_id = 'acme'"
    ) == utc("2031-03-03 03:03:03")


def test_an_app_role_without_it_cannot_move_the_clock_or_grant_itself_the_role(
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    clock_role: str,
    login_role: Callable[..., str],
) -> None:
    name = login_role("skene_app")
    app = connect(user=name)
    app.execute(f"SET skene.now = '{FUTURE}'")  # any role may set it: it is ignored
    assert check_and_increment(app, "acme", "api_calls")["resets_at"] == real_month_end(conn)
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(sql.SQL("GRANT skene_test_clock TO {}").format(sql.Identifier(name)))
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("SET ROLE skene_test_clock")


def test_a_clock_role_granted_to_skene_app_is_ignored(
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    clock_role: str,
    login_role: Callable[..., str],
) -> None:
    """skene_app is shared by every application role of the cluster, production's
    too: a clock reaching it would reach them all, so it moves nothing."""
    app_test = connect(user=login_role("skene_app", clock_role))
    conn.execute("GRANT skene_test_clock TO skene_app")
    try:
        app_test.execute(f"SET skene.now = '{FUTURE}'")
        resets_at = check_and_increment(app_test, "acme", "api_calls")["resets_at"]
        assert resets_at == real_month_end(conn)
    finally:
        conn.execute("REVOKE skene_test_clock FROM skene_app")
    assert check_and_increment(app_test, "acme", "api_calls")["resets_at"] == utc(
        "2031-02-01 00:00:00"
    )


def test_without_the_role_in_the_cluster_only_superusers_move_the_clock(
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    login_role: Callable[..., str],
) -> None:
    if scalar(conn, "SELECT count(*) FROM pg_roles WHERE rolname = 'skene_test_clock'"):
        pytest.skip("this cluster has a skene_test_clock role")
    app = connect(user=login_role("skene_app"))
    app.execute(f"SET skene.now = '{FUTURE}'")
    assert check_and_increment(app, "acme", "api_calls")["resets_at"] == real_month_end(conn)
    conn.execute(f"SET skene.now = '{FUTURE}'")
    assert check_and_increment(conn, "acme", "api_calls")["resets_at"] == utc("2031-02-01 00:00:00")
