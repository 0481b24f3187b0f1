"""Property: whatever strings, sizes and amounts reach check_and_increment, check,
track and identify, the only database error is 22023 (with a hint, and no customer
registered by the failing call), and usage never exceeds a hard limit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.sql.helpers import scalar

pytestmark = pytest.mark.usefixtures("catalogue")

# Any text PostgreSQL can hold: no NUL (test_input_limits.py shows the driver refuses
# it) and no lone surrogates (not encodable as UTF-8, so never sent).
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
SPACES = st.sampled_from([" ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\ufeff", "\u2028"])
TEXT = st.one_of(
    st.text(CHARS, max_size=20),
    st.text(CHARS, min_size=200, max_size=300),  # around the 255 limit
    st.builds(lambda c, n: c * n, CHARS, st.integers(250, 4000)),  # past the index limit
    st.builds(
        lambda s, w, side: w + s if side else s + w,
        st.text(CHARS, max_size=10),
        SPACES,
        st.booleans(),
    ),
)
CUSTOMERS = st.one_of(st.sampled_from(["acme", "beta", "big"]), TEXT)
FEATURES = st.one_of(
    st.sampled_from(["api_calls", "daily", "rolling", "seats", "billed", "emails", "sso"]), TEXT
)
AMOUNTS = st.one_of(
    st.integers(1, 40),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63 - 1, 2**63 - 2, 2**62, 0, -1, -(2**63)]),
)
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2"]), TEXT)
EMAILS = st.one_of(
    st.none(), st.just("ada@example.com"), TEXT, st.builds("{}@{}".format, TEXT, TEXT)
)
ZONES = st.one_of(st.none(), st.sampled_from(["Europe/Berlin", "utc", "UTC+5", "CEST"]), TEXT)
TIMES = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
)

CALLS = st.one_of(
    st.tuples(st.just("check_and_increment"), CUSTOMERS, FEATURES, AMOUNTS, KEYS),
    st.tuples(st.just("check"), CUSTOMERS, FEATURES, AMOUNTS),
    st.tuples(st.just("track"), CUSTOMERS, TEXT, TIMES),
    st.tuples(st.just("identify"), CUSTOMERS, EMAILS, st.one_of(st.none(), TEXT), ZONES),
)


def call(conn: psycopg.Connection, what: tuple[Any, ...]) -> None:
    name, *args = what
    if name == "check_and_increment":
        conn.execute("SELECT * FROM skene.check_and_increment(%s, %s, %s::bigint, %s)", args)
    elif name == "check":
        conn.execute("SELECT * FROM skene.check(%s, %s, %s::bigint)", args)
    elif name == "track":
        customer, event, at = args
        if at is None:
            conn.execute("SELECT skene.track(%s, %s)", (customer, event))
        else:
            conn.execute("SELECT skene.track(%s, %s, %s, %s)", (customer, event, Jsonb({}), at))
    else:
        customer, email, name_, zone = args
        conn.execute(
            "SELECT skene.identify(%s, %s, %s, %s, %s)", (customer, email, name_, Jsonb({}), zone)
        )


OVER_LIMIT = """
SELECT u.customer_id, u.feature, u.used, x.usage_limit
  FROM skene.usage u CROSS JOIN LATERAL skene.limit_context(u.customer_id, u.feature) x
 WHERE NOT x.soft AND x.usage_limit IS NOT NULL AND u.used > x.usage_limit
"""


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(CALLS, min_size=1, max_size=12))
def test_only_22023_and_never_past_the_limit(
    conn: psycopg.Connection, calls: list[tuple[Any, ...]]
) -> None:
    # every example starts from the catalogue alone: its work is rolled back
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT skene.set_plan('big', 'pro')")  # unlimited: overflow territory
        for what in calls:
            customers = scalar(conn, "SELECT count(*) FROM skene.customers")
            try:
                with conn.transaction():
                    call(conn, what)
            except psycopg.Error as exc:
                assert exc.sqlstate == "22023", (what, exc.sqlstate, str(exc))
                assert exc.diag.message_hint, (what, str(exc))
                assert scalar(conn, "SELECT count(*) FROM skene.customers") == customers
            assert conn.execute(OVER_LIMIT).fetchall() == [], what


# Amounts with a heavy tail, on known customers and features: counters near 2^63.
BIG_AMOUNTS = st.one_of(
    st.integers(1, 100),
    st.integers(2**61, 2**63 - 1),
    st.sampled_from([2**63 - 1, 2**62, 2**62 + 1]),
)
GATE_CALLS = st.tuples(
    st.sampled_from(["check_and_increment", "check"]),
    st.sampled_from(["acme", "big"]),
    st.sampled_from(["api_calls", "rolling", "seats", "emails"]),
    BIG_AMOUNTS,
    st.sampled_from([None, None, "k1"]),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(GATE_CALLS, min_size=2, max_size=12))
def test_huge_amounts_are_blocked_or_refused_never_an_overflow(
    conn: psycopg.Connection, calls: list[tuple[Any, ...]]
) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT skene.set_plan('big', 'pro')")
        for name, *args in calls:
            if name == "check":
                args = args[:3]
            try:
                with conn.transaction():
                    call(conn, (name, *args))
            except psycopg.Error as exc:
                assert exc.sqlstate == "22023", (name, args, exc.sqlstate, str(exc))
                assert "would overflow" in str(exc), (name, args, str(exc))
            assert conn.execute(OVER_LIMIT).fetchall() == [], (name, args)
