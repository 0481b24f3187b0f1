"""Hostile input, rule by rule: lengths, whitespace, control characters, amounts that
would overflow, future times, time zones, email syntax. Every refusal is SQLSTATE
22023 with a hint, registers no one and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.sql.conftest import START
from tests.sql.helpers import check, check_and_increment, scalar, used, utc

pytestmark = pytest.mark.usefixtures("catalogue")

MAX_BIGINT = 2**63 - 1


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> psycopg.errors.Diagnostic:
    with pytest.raises(psycopg.Error) as info:
        call(*args, **kwargs)
    err = info.value
    assert err.sqlstate == "22023", f"{err.sqlstate}: {err}"
    assert err.diag.message_hint, "no HINT"
    assert len(err.diag.message_primary or "") < 400, "the message repeats a huge value"
    return err.diag


def state(conn: psycopg.Connection) -> tuple[int, ...]:
    return tuple(
        scalar(conn, f"SELECT count(*) FROM skene.{table}")
        for table in (
            "customers",
            "usage",
            "idempotency_keys",
            "limit_hits",
            "jobs",
            "billing_customers",
            "billing_events",
            "suppressions",
        )
    )


BAD_CUSTOMER_IDS = [
    ("acme ", "has leading or trailing whitespace"),
    (" acme", "has leading or trailing whitespace"),
    ("acme\u00a0", "has leading or trailing whitespace"),  # no-break space
    ("\u3000acme", "has leading or trailing whitespace"),  # ideographic space
    ("\ufeffacme", "has leading or trailing whitespace"),  # a byte order mark
    ("   ", "must not be blank"),
    ("\u2003", "must not be blank"),
    ("ac\nme", "contains the control character U+000A at position 3"),
    ("acme\t", "contains the control character U+0009 at position 5"),
    ("ac\x07me", "contains the control character U+0007"),
    ("a\u2028b", "contains the control character U+2028"),
    ("a" * 256, "is too long: 256 characters, at most 255"),
    ("x" * 3000, "is too long: 3000 characters, at most 255"),  # past the index's ~2.7 kB
]

# Every public function that takes a customer id, called with one.
CUSTOMER_CALLS = [
    "SELECT skene.check_and_increment(%s, 'api_calls')",
    "SELECT skene.check_and_increment(%s, 'api_calls', 1, 'key-1')",
    "SELECT skene.check_and_increment(%s, 'rolling', 5)",
    "SELECT skene.check(%s, 'api_calls')",
    "SELECT skene.identify(%s, 'a@example.com')",
    "SELECT skene.unsubscribe(%s)",
    "SELECT skene.track(%s, 'login')",
    "SELECT skene.set_plan(%s, 'pro')",
    "SELECT skene.set_billing_period(%s, now(), now() + interval '1 month')",
    "SELECT skene.link_billing_customer(%s, 'stripe', 'cus_1')",
    "SELECT skene.set_limit_override(%s, 'api_calls', 5)",
]


@pytest.mark.parametrize(("customer", "problem"), BAD_CUSTOMER_IDS)
def test_customer_ids_are_checked_everywhere(
    conn: psycopg.Connection, customer: str, problem: str
) -> None:
    check_and_increment(conn, "acme", "api_calls")  # the customer a lax check would find again
    before = state(conn)
    for call in CUSTOMER_CALLS:
        diag = refused(conn.execute, call, (customer,))
        assert (diag.message_primary or "").startswith("skene: customer_id "), call
        assert problem in (diag.message_primary or ""), call
    assert state(conn) == before


def test_the_message_shows_a_long_value_cut_short(conn: psycopg.Connection) -> None:
    diag = refused(check_and_increment, conn, "x" * 3000, "api_calls")
    assert diag.message_primary == (
        f"skene: customer_id '{'x' * 32}'... (3000 characters) is too long: "
        "3000 characters, at most 255"
    )
    assert diag.message_hint == (
        "Pass at most 255 characters. "
        "Pass your application's id of the customer (user, team or account)."
    )
    diag = refused(check_and_increment, conn, "acme ", "api_calls")
    assert diag.message_hint == "Trim it: 'acme ' would be another customer_id than 'acme'."
    diag = refused(check_and_increment, conn, "acme", "f" * 5000)
    assert diag.message_primary == f"skene: unknown feature '{'f' * 32}'... (5000 characters)"


def test_ids_at_the_limit_and_with_inner_spaces_are_fine(conn: psycopg.Connection) -> None:
    for customer in ("a" * 255, "Acme Inc", "ünïcødé-😀", "user@example.com", "42"):
        assert check_and_increment(conn, customer, "api_calls")["allowed"]
        assert check_and_increment(conn, customer, "api_calls", key=customer)["allowed"]
        conn.execute("SELECT skene.track(%s, %s)", (customer, customer))
    assert scalar(conn, "SELECT count(*) FROM skene.customers") == 5


def test_known_customers_keep_their_fast_path(conn: psycopg.Connection) -> None:
    """The gate's fast path does not re-check ids: a counter only exists for an id that
    was checked when it was registered."""
    check_and_increment(conn, "acme", "api_calls")
    assert check_and_increment(conn, "acme", "api_calls")["used"] == 2


def test_idempotency_keys(conn: psycopg.Connection) -> None:
    before = state(conn)
    for key, problem in (
        ("", "idempotency_key must be a non-empty key, got ''"),
        ("k" * 256, "is too long: 256 characters, at most 255"),
        ("k" * 3000, "is too long: 3000 characters, at most 255"),  # was 54000
    ):
        for customer in ("acme", "new_customer"):
            diag = refused(check_and_increment, conn, customer, "api_calls", key=key)
            assert problem in (diag.message_primary or "")
    assert state(conn) == before
    # keys are opaque: spaces, control characters and 255 characters are all fine
    for key in ("k" * 255, " spaced key ", "line\nbreak", "ünï"):
        assert check_and_increment(conn, "acme", "api_calls", key=key)["reason"] == "ok"
        assert check_and_increment(conn, "acme", "api_calls", key=key)["reason"] == "duplicate"


def test_event_names(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.track('ada', 'login')")
    before = state(conn)
    for event, problem in (
        ("", "event must be a non-empty name, got ''"),
        (" login", "has leading or trailing whitespace"),
        ("log\nin", "contains the control character U+000A"),
        ("e" * 256, "is too long: 256 characters, at most 255"),
    ):
        for customer in ("ada", "new_customer"):
            diag = refused(conn.execute, "SELECT skene.track(%s, %s)", (customer, event))
            assert problem in (diag.message_primary or "")
    assert state(conn) == before


@pytest.mark.parametrize("feature", ["api_calls", "rolling", "seats"])
def test_an_amount_past_the_limit_is_blocked_never_an_overflow(
    conn: psycopg.Connection, feature: str
) -> None:
    """Limited features (month, 30d, lifetime): a huge amount is limit_reached, on the
    slow path (new counter) and on the fast path (warm counter) alike."""
    for amount in (MAX_BIGINT, MAX_BIGINT - 1, 2**62):
        assert check_and_increment(conn, "acme", feature, amount)["reason"] == "limit_reached"
        assert check(conn, "acme", feature, amount)["reason"] == "limit_reached"
    check_and_increment(conn, "acme", feature, 2)
    for amount in (MAX_BIGINT, MAX_BIGINT - 1):
        assert check_and_increment(conn, "acme", feature, amount)["reason"] == "limit_reached"
        assert check_and_increment(conn, "acme", feature, amount, key="k")["reason"] == (
            "limit_reached"
        )
        assert check(conn, "acme", feature, amount)["reason"] == "limit_reached"
    assert used(conn, "acme", feature) == 2


@pytest.mark.parametrize(
    ("plan", "feature"),
    [("pro", "api_calls"), ("pro", "rolling"), ("pro", "seats"), ("free", "emails")],
)
def test_a_counter_that_would_overflow_refuses_with_22023(
    conn: psycopg.Connection, plan: str, feature: str
) -> None:
    """Unlimited (pro) and soft (emails) features count past any limit: the counter is a
    bigint, and the call that would overflow it is refused, naming what is left."""
    conn.execute("SELECT skene.set_plan('big', %s)", (plan,))
    assert check_and_increment(conn, "big", feature, MAX_BIGINT - 10)["allowed"]
    assert check(conn, "big", feature, 10)["allowed"]
    diag = refused(check, conn, "big", feature, 11)
    assert diag.message_primary == (
        f"skene: amount 11 would overflow the usage of {feature} by 'big' "
        f"({MAX_BIGINT - 10} counted)"
    )
    assert diag.message_hint is not None and diag.message_hint.startswith(
        "At most 10 more units can be counted in this period"
    )
    for amount, key in ((11, None), (MAX_BIGINT, None), (11, "k")):
        refused(check_and_increment, conn, "big", feature, amount, key)
    assert scalar(conn, "SELECT count(*) FROM skene.idempotency_keys") == 0
    assert check_and_increment(conn, "big", feature, 10)["used"] == MAX_BIGINT
    refused(check_and_increment, conn, "big", feature, 1)
    assert used(conn, "big", feature) == MAX_BIGINT


def test_track_clamps_a_future_time_to_now(conn: psycopg.Connection) -> None:
    """A time ahead of the clock (a device's clock, a bug) is activity happening now:
    stored as now, so the customer is not hidden from dormancy loops until then."""
    now = utc(START)
    for ahead in (timedelta(seconds=1), timedelta(days=1), timedelta(days=365 * 100)):
        conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (now + ahead,))
        assert scalar(conn, "SELECT last_activity_at FROM skene.customers") == now
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (now - timedelta(days=3),))
    assert scalar(conn, "SELECT last_activity_at FROM skene.customers") == now
    refused(conn.execute, "SELECT skene.track('ada', 'login', '{}', 'infinity')")


def test_a_watched_table_never_fails_the_apps_insert(conn: psycopg.Connection) -> None:
    """Rows with ids track() would refuse are skipped; future or missing times are now."""
    conn.execute("CREATE TABLE public.events (account text, at timestamptz)")
    conn.execute("SELECT skene.watch_activity('public.events', 'account', 'at')")
    now = utc(START)
    conn.execute(
        "INSERT INTO public.events VALUES ('ada', %s), ('bob', NULL), ('carol', 'infinity'), "
        "(' dave', %s), (%s, %s), ('', %s)",
        (now + timedelta(days=30), now, "x" * 3000, now, now),
    )
    assert conn.execute(
        "SELECT customer_id, last_activity_at FROM skene.customers ORDER BY 1"
    ).fetchall() == [("ada", now), ("bob", now), ("carol", now)]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("europe/berlin", "Europe/Berlin"),
        ("AMERICA/NEW_YORK", "America/New_York"),
        ("utc", "UTC"),
        ("UTC+5", "UTC+5"),  # POSIX: five hours west of Greenwich
        ("EST5EDT", "EST5EDT"),
        ("CEST", "CEST"),  # an abbreviation: a fixed offset, as AT TIME ZONE reads it
    ],
)
def test_time_zones_postgresql_knows_are_stored_canonically(
    conn: psycopg.Connection, given: str, stored: str
) -> None:
    conn.execute("SET TIME ZONE 'Asia/Tokyo'")
    conn.execute("SELECT skene.identify('ada', timezone => %s)", (given,))
    assert scalar(conn, "SELECT timezone FROM skene.customers") == stored
    assert scalar(conn, "SHOW timezone") == "Asia/Tokyo"  # the session's is left alone
    # and the retention loops can use it
    scalar(conn, "SELECT skene.quiet_until(now(), %s, '21:00', '08:00')", (stored,))


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "", "Europe/Berlin ", "interval 'x'", "z" * 100, "../etc/passwd"]
)
def test_unknown_time_zones(conn: psycopg.Connection, zone: str) -> None:
    diag = refused(conn.execute, "SELECT skene.identify('ada', timezone => %s)", (zone,))
    assert (diag.message_primary or "").startswith("skene: unknown time zone ")
    assert "Europe/Berlin" in (diag.message_hint or "")
    assert state(conn)[0] == 0


VALID_EMAILS = [
    "ada@example.com",
    "a.b+tag@sub.example.co.uk",
    "ünïcødé@exämple.de",
    "x@y.z",
    f"{'a' * 64}@{'b' * 185}.com",  # 254 characters
]
INVALID_EMAILS = [
    "ada",
    "ada@",
    "@example.com",
    "ada@example",
    "ada@@example.com",
    "ada@ex@ample.com",
    "a da@example.com",
    "ada@example.com ",
    " ada@example.com",
    "ada@exa\nmple.com",
    "ada@example.com\r\nBcc: all@example.com",
    "ada\u00a0@example.com",
    "ada@.example.com",
    "ada@example.com.",
    "",
    f"{'a' * 64}@{'b' * 186}.com",  # 255 characters
    "x" * 3000 + "@example.com",
]


def test_email_syntax(conn: psycopg.Connection) -> None:
    for email in VALID_EMAILS:
        conn.execute("SELECT skene.identify('ada', %s)", (email,))
        assert scalar(conn, "SELECT email FROM skene.customers") == email
    before = state(conn)
    for email in INVALID_EMAILS:
        for customer in ("ada", "new_customer"):
            diag = refused(conn.execute, "SELECT skene.identify(%s, %s)", (customer, email))
            assert (diag.message_primary or "").startswith("skene: email "), email
    assert state(conn) == before
    assert scalar(conn, "SELECT email FROM skene.customers") == VALID_EMAILS[-1]


def test_names(conn: psycopg.Connection) -> None:
    for name in ("Ada Lovelace", "", " Ada ", "n" * 255, "Ådä 😀"):
        conn.execute("SELECT skene.identify('ada', name => %s)", (name,))
        assert scalar(conn, "SELECT name FROM skene.customers") == name
    for name, problem in (
        ("Ada\r\nBcc: all@example.com", "contains the control character U+000D"),
        ("n" * 256, "is too long"),
    ):
        diag = refused(conn.execute, "SELECT skene.identify('ada', name => %s)", (name,))
        assert problem in (diag.message_primary or "")


def test_billing_inputs(conn: psycopg.Connection) -> None:
    def event(**object_fields: str) -> Jsonb:
        return Jsonb(
            {
                "id": object_fields.pop("id", "evt_1"),
                "type": "checkout.session.completed",
                "data": {"object": {"customer": "cus_1", **object_fields}},
            }
        )

    before = state(conn)
    for payload, problem in (
        (event(id="e" * 3000), "event id "),  # the inbox's key: was 54000
        (event(id=" evt_1"), "event id "),
        (event(customer="c" * 300), "Stripe customer id "),
        (event(client_reference_id="acme "), "customer_id "),
        (event(client_reference_id="a" * 3000), "customer_id "),
    ):
        diag = refused(conn.execute, "SELECT skene.ingest_billing_event('stripe', %s)", (payload,))
        assert problem in (diag.message_primary or "")
    for call in (
        "SELECT skene.link_billing_customer('acme', 'stripe', %s)",
        "SELECT skene.link_billing_customer('acme', %s, 'cus_1')",
    ):
        refused(conn.execute, call, ("z" * 3000,))
    refused(conn.execute, "SELECT skene.suppress(%s)", ("x" * 3000 + "@example.com",))
    refused(conn.execute, "SELECT skene.suppress('a@example.com', 'bounce', %s)", ("src\n",))
    assert state(conn) == before
    assert conn.execute(
        "SELECT skene.ingest_billing_event('stripe', %s)", (event(client_reference_id="acme"),)
    ).fetchone() == (True,)


def test_nul_never_reaches_the_database(conn: psycopg.Connection) -> None:
    """PostgreSQL text cannot hold NUL: the driver refuses it before any call is made."""
    with pytest.raises(psycopg.DataError, match="NUL"):
        check_and_increment(conn, "ac\x00me", "api_calls")
    with pytest.raises(psycopg.DataError, match="NUL"):
        conn.execute("SELECT skene.track('ada', %s)", ("log\x00in",))
    assert state(conn)[0] == 0
    with pytest.raises(errors.CharacterNotInRepertoire):  # 22021, before any function runs
        conn.execute("SELECT skene.check_and_increment(E'ac\\000me', 'api_calls')")
