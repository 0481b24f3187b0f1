"""skene.track and watched tables: activity kept, bad input refused like the gate."""

from __future__ import annotations

import psycopg
import pytest

from tests.retention.conftest import T0, days


def _last(conn: psycopg.Connection, customer_id: str):  # type: ignore[no-untyped-def]
    row = conn.execute(
        "SELECT last_activity_at FROM skene.customers WHERE customer_id = %s", (customer_id,)
    ).fetchone()
    return row[0] if row else None


def test_track_registers_and_keeps_the_latest_activity(catalogue: psycopg.Connection) -> None:
    conn = catalogue
    conn.execute("SELECT skene.track('ada', 'login')")
    assert conn.execute(
        "SELECT plan, last_activity_at FROM skene.customers WHERE customer_id = 'ada'"
    ).fetchone() == ("free", T0)
    conn.execute("SELECT skene.track('ada', 'import', '{}', %s)", (T0 - days(3),))  # backfill
    assert _last(conn, "ada") == T0
    conn.execute("SELECT skene.track('ada', 'login', '{\"a\": 1}', %s)", (T0 + days(1),))
    assert _last(conn, "ada") == T0 + days(1)
    # no milestone counts this event: nothing kept per event
    assert conn.execute("SELECT count(*) FROM skene.event_counts").fetchone() == (0,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, "login", "{}"), "customer_id must be a non-empty string, got NULL"),
        (("", "login", "{}"), "customer_id must be a non-empty string, got ''"),
        (("ada", None, "{}"), "event must be a non-empty name, got NULL"),
        (("ada", "login", "[1]"), "properties must be a JSON object, got array"),
    ],
)
def test_track_refuses_bad_input_with_22023(
    catalogue: psycopg.Connection, args: tuple, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        catalogue.execute("SELECT skene.track(%s, %s, %s::jsonb)", args)
    assert message in str(err.value)
    assert err.value.diag.message_hint


def test_a_watched_events_table_is_activity(catalogue: psycopg.Connection) -> None:
    conn = catalogue
    conn.execute(
        "CREATE TABLE public.events (id bigserial, account text, kind text, at timestamptz)"
    )
    conn.execute("SELECT skene.watch_activity('public.events', 'account', 'at')")
    conn.execute(
        "INSERT INTO public.events (account, kind, at) VALUES ('ada', 'x', %s), "
        "('bob', 'y', %s), (NULL, 'z', %s)",
        (T0 - days(2), T0 - days(1), T0),
    )
    assert _last(conn, "ada") == T0 - days(2)
    assert _last(conn, "bob") == T0 - days(1)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="has no column nope"):
        conn.execute("SELECT skene.watch_activity('public.events', 'nope', 'at')")
    conn.execute("SELECT skene.unwatch_activity('public.events')")
    conn.execute("INSERT INTO public.events (account, at) VALUES ('carol', %s)", (T0,))
    assert _last(conn, "carol") is None


def test_skene_app_may_track_but_not_run_loops_or_watch_tables(
    catalogue: psycopg.Connection,
) -> None:
    conn = catalogue
    conn.execute("SET ROLE skene_app")
    try:
        conn.execute("SELECT skene.track('ada', 'login')")
        for query in (
            "SELECT skene.run_loop('x')",
            "SELECT skene.watch_activity('skene.jobs', 'customer_id', 'run_at')",
            "SELECT count(*) FROM skene.loop_sends",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
    finally:
        conn.execute("RESET ROLE")
