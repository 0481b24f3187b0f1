"""skene.track and watched tables: activity kept, bad input refused like the gate."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.retention.conftest import T0, days, set_now


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
    set_now(conn, T0 + days(1))  # a time ahead of the clock would count as now
    conn.execute("SELECT skene.track('ada', 'login', '{\"a\": 1}', %s)", (T0 + days(1),))
    assert _last(conn, "ada") == T0 + days(1)
    # no milestone counts this event: nothing kept per event
    assert conn.execute("SELECT count(*) FROM skene.event_counts").fetchone() == (0,)


def test_activity_within_the_resolution_only_reads_the_row(
    catalogue: psycopg.Connection,
) -> None:
    """Events of one session cost a lookup each; the stored time lags by < 1 minute."""
    conn = catalogue

    def row_versions() -> int:
        # xmin changes with every write of the row, and only then
        return int(
            conn.execute(
                "SELECT xmin::text::bigint FROM skene.customers WHERE customer_id = 'ada'"
            ).fetchone()[0]
        )

    set_now(conn, T0 + timedelta(seconds=61))  # the times below are not ahead of the clock
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (T0,))
    written = row_versions()
    conn.execute("SELECT skene.track('ada', 'click', '{}', %s)", (T0 + timedelta(seconds=59),))
    assert (_last(conn, "ada"), row_versions()) == (T0, written)
    conn.execute("SELECT skene.track('ada', 'click', '{}', %s)", (T0 + timedelta(seconds=61),))
    assert _last(conn, "ada") == T0 + timedelta(seconds=61)
    assert row_versions() != written
    assert conn.execute("SELECT skene.activity_resolution()").fetchone() == (timedelta(minutes=1),)


def test_a_comeback_within_the_resolution_is_still_noted(catalogue: psycopg.Connection) -> None:
    """A customer a retention loop waits for is written on every activity."""
    conn = catalogue
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (T0 - days(8),))
    conn.execute(
        "UPDATE skene.customers SET last_activity_at = %s, awaiting_reactivation = true "
        "WHERE customer_id = 'ada'",
        (T0 - timedelta(seconds=30),),
    )
    conn.execute("SELECT skene.track('ada', 'login')")
    assert conn.execute(
        "SELECT last_activity_at, awaiting_reactivation FROM skene.customers "
        "WHERE customer_id = 'ada'"
    ).fetchone() == (T0, False)


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
