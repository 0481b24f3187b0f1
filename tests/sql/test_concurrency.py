"""Many real connections at once: a hard limit is never overshot, counters are created
and rolled forward once, exactly one upgrade prompt is queued, nothing deadlocks."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest

from tests.sql.helpers import (
    check,
    check_and_increment,
    decision,
    run_together,
    scalar,
    set_now,
    used,
    utc,
)

pytestmark = pytest.mark.usefixtures("catalogue")

CALLERS = 16
Connections = Callable[..., list[psycopg.Connection]]


def hammer(
    callers: list[psycopg.Connection],
    at: str,
    customer: str,
    feature: str,
    calls_each: int,
    amount: int = 1,
) -> list[dict]:
    """Every caller, lined up on a barrier, makes calls_each calls at time `at`."""

    def work(i: int, c: psycopg.Connection) -> list[dict]:
        set_now(c, at)
        return [check_and_increment(c, customer, feature, amount) for _ in range(calls_each)]

    return [d for per_caller in run_together(callers, work) for d in per_caller]


@pytest.mark.parametrize(
    ("feature", "moments"),
    [
        # each round starts exactly at a period boundary: the counter of the previous round
        # is rolled forward by whichever caller gets there first
        ("api_calls", [f"2026-{m:02d}-01 00:00:00" for m in range(1, 6)]),
        (
            "rolling",
            [
                str(utc("2026-01-01 00:00:00").replace(tzinfo=None) + timedelta(days=31 * r))
                for r in range(5)
            ],
        ),
    ],
)
def test_hammering_one_customer_at_the_limit(
    connections: Connections, conn: psycopg.Connection, feature: str, moments: list[str]
) -> None:
    callers = connections(CALLERS)
    for round_, at in enumerate(moments, start=1):
        decisions = hammer(callers, at, "acme", feature, calls_each=10)  # 160 calls, limit 100
        allowed = [d for d in decisions if d["allowed"]]
        blocked = [d for d in decisions if not d["allowed"]]
        assert len(allowed) == 100, at
        # every allowed call saw its own count: the calls were serialised, none lost
        assert sorted(d["used"] for d in allowed) == list(range(1, 101))
        assert {d["reason"] for d in allowed} == {"ok"}
        assert {(d["reason"], d["used"], d["remaining"]) for d in blocked} == {
            ("limit_reached", 100, 0)
        }
        assert used(conn, "acme", feature) == 100
        assert scalar(conn, "SELECT count(*) FROM skene.jobs") == round_  # one prompt per round
    assert scalar(conn, "SELECT count(*) FROM skene.usage") == 1
    assert scalar(conn, "SELECT count(*) FROM skene.limit_hits") == len(moments)


def test_mixed_amounts_never_overshoot(connections: Connections, conn: psycopg.Connection) -> None:
    callers = connections(CALLERS)
    for round_ in range(4):
        at = f"2026-{round_ + 1:02d}-15 12:00:00"
        set_now(conn, at)
        check_and_increment(conn, "acme", "api_calls", 80)

        def work(i: int, c: psycopg.Connection, at: str = at) -> list[tuple[int, dict]]:
            set_now(c, at)
            rng = random.Random(i)
            out = []
            for _ in range(6):
                amount = rng.choice((1, 2, 3, 5))
                out.append((amount, check_and_increment(c, "acme", "api_calls", amount)))
            return out

        calls = [x for per in run_together(callers, work) for x in per]
        counted = sum(amount for amount, d in calls if d["allowed"])
        final = used(conn, "acme", "api_calls")
        assert final == 80 + counted <= 100
        assert len({d["used"] for _, d in calls if d["allowed"]}) == sum(
            1 for _, d in calls if d["allowed"]
        )
        # a block means that amount did not fit at that moment
        assert all(d["used"] + amount > 100 for amount, d in calls if not d["allowed"])


def test_unlimited_and_soft_count_every_call(
    connections: Connections, conn: psycopg.Connection
) -> None:
    conn.execute("SELECT skene.set_plan('big', 'pro')")
    decisions = hammer(connections(CALLERS), "2026-03-10 12:00:00", "big", "api_calls", 20, 3)
    assert {d["reason"] for d in decisions} == {"ok"}
    assert used(conn, "big", "api_calls") == CALLERS * 20 * 3
    decisions = hammer(connections(CALLERS), "2026-03-10 12:00:00", "acme", "emails", 5)
    assert Counter(d["reason"] for d in decisions) == {
        "ok": 10,
        "over_soft_limit": CALLERS * 5 - 10,
    }
    assert used(conn, "acme", "emails") == CALLERS * 5


@pytest.mark.parametrize("feature", ["daily", "rolling"])
def test_racing_to_roll_a_counter_into_a_new_period(
    connections: Connections, conn: psycopg.Connection, feature: str
) -> None:
    limit = 5 if feature == "daily" else 100
    set_now(conn, "2026-03-31 23:59:59")
    check_and_increment(conn, "acme", feature, limit)
    assert check_and_increment(conn, "acme", feature)["reason"] == "limit_reached"
    # the moment the day ends (or, for 30d, when the day-1 usage has left the window)
    at = "2026-04-01 00:00:00" if feature == "daily" else "2026-04-30 00:00:00"
    decisions = hammer(
        connections(CALLERS),
        at,
        "acme",
        feature,
        calls_each=1,
        amount=1 if feature == "daily" else 10,
    )
    expected = limit if feature == "daily" else 10
    assert sum(d["allowed"] for d in decisions) == expected
    assert used(conn, "acme", feature) == limit
    assert scalar(conn, "SELECT count(*) FROM skene.usage") == 1
    assert scalar(conn, "SELECT count(*) FROM skene.limit_hits") == 2  # one per period


@pytest.mark.parametrize("feature", ["daily", "api_calls", "rolling", "seats"])
def test_brand_new_customers_first_calls_race(
    connections: Connections, conn: psycopg.Connection, feature: str
) -> None:
    limit = scalar(
        conn,
        "SELECT usage_limit FROM skene.feature_limits WHERE feature = %s AND plan = 'free'",
        (feature,),
    )
    decisions = hammer(
        connections(CALLERS),
        "2026-03-10 12:00:00",
        "newbie",
        feature,
        calls_each=max(1, (limit + CALLERS) // CALLERS + 1),
    )
    assert sum(d["allowed"] for d in decisions) == limit
    assert scalar(conn, "SELECT count(*) FROM skene.customers") == 1
    assert used(conn, "newbie", feature) == limit
    assert scalar(conn, "SELECT count(*) FROM skene.limit_hits") == 1
    expected_jobs = 1 if feature in ("api_calls", "rolling") else 0
    assert scalar(conn, "SELECT count(*) FROM skene.jobs") == expected_jobs


def test_exactly_one_prompt_however_many_blocked_callers(
    connections: Connections, conn: psycopg.Connection
) -> None:
    callers = connections(CALLERS)
    check_and_increment(conn, "acme", "api_calls", 100)
    decisions = hammer(callers, "2026-03-10 12:00:00", "acme", "api_calls", calls_each=5)
    assert {d["reason"] for d in decisions} == {"limit_reached"}
    # and customers crossing the limit while others are already blocked
    for n in range(3):
        decisions = hammer(callers, "2026-03-10 12:00:00", f"c{n}", "api_calls", calls_each=8)
        assert sum(d["allowed"] for d in decisions) == 100
    assert conn.execute(
        "SELECT customer_id, kind, count(*), count(DISTINCT dedupe_key) FROM skene.jobs "
        "GROUP BY 1, 2 ORDER BY 1"
    ).fetchall() == [(c, "email", 1, 1) for c in ("acme", "c0", "c1", "c2")]


def test_set_plan_during_a_transaction_that_blocks_does_not_deadlock(
    connect: Callable[..., psycopg.Connection], conn: psycopg.Connection
) -> None:
    """A holds acme's counter (it counted in an open transaction); a billing webhook
    (B) changes acme's plan in its own open transaction; A's next call is the first
    block of the period, whose limit hit references the customer row B is updating.
    Neither waits for the other: B never touches a counter, and A's foreign-key check
    does not conflict with B's update of a non-key column."""
    check_and_increment(conn, "acme", "api_calls", 99)
    a = connect(autocommit=False)
    set_now(a, "2026-03-10 12:00:00")
    assert check_and_increment(a, "acme", "api_calls")["used"] == 100  # row lock held

    b = connect(autocommit=False)
    b.execute("SET lock_timeout = '5s'")  # waiting would fail the test, not hang it
    b.execute("SELECT skene.set_plan('acme', 'pro', 'stripe')")  # done: held nothing of A's
    a.execute("SET lock_timeout = '5s'")
    blocked = check_and_increment(a, "acme", "api_calls")  # B has not committed: free
    a.commit()
    b.commit()
    assert blocked == decision(
        False, "limit_reached", "api_calls", "free", 100, 100, 0, utc("2026-04-01 00:00:00")
    )
    assert check_and_increment(conn, "acme", "api_calls")["plan"] == "pro"


def test_calls_plan_changes_and_overrides_together_do_not_deadlock(
    connections: Connections, conn: psycopg.Connection
) -> None:
    """Callers cross limits on new days (first blocks write limit hits) while others
    flip plans and overrides of the same customers; every statement must succeed."""
    customers = ["acme", "beta"]
    features = ["daily", "api_calls", "rolling"]

    def work(i: int, c: psycopg.Connection) -> list[tuple[str, str, int, dict]]:
        rng = random.Random(i)
        counted = []
        for step in range(40):
            day = 1 + step // 8  # a new day (daily: a new period) every few steps
            set_now(c, f"2026-03-{day:02d} 12:00:00")
            customer = rng.choice(customers)
            if i % 4 == 0:
                c.execute("SELECT skene.set_plan(%s, %s)", (customer, rng.choice(["free", "pro"])))
            elif i % 4 == 1 and step % 5 == 0:
                c.execute(
                    "SELECT skene.set_limit_override(%s, %s, %s)",
                    (customer, rng.choice(features), rng.choice([None, 3, 50])),
                )
            else:
                feature, amount = rng.choice(features), rng.choice((1, 2, 4))
                counted.append(
                    (customer, feature, amount, check_and_increment(c, customer, feature, amount))
                )
        return counted

    calls = [call for per_caller in run_together(connections(CALLERS), work) for call in per_caller]
    # Nothing counted was lost or counted twice under the crossing locks. All calls fall
    # in March (api_calls' month) and in rolling's 30-day window, so those counters hold
    # every allowed amount. daily restarts each day; a call whose clock is behind the
    # counter's day counts in the counter's day (and says so in resets_at), so the
    # counter holds the amounts allowed in the day it ended in.
    for customer in customers:
        for feature in features:
            row = conn.execute(
                "SELECT used, resets_at FROM skene.usage WHERE customer_id = %s AND feature = %s",
                (customer, feature),
            ).fetchone()
            assert row is not None, (customer, feature)
            final_used, final_resets_at = row
            allowed = [
                (amount, d["resets_at"])
                for cus, feat, amount, d in calls
                if (cus, feat) == (customer, feature) and d["allowed"]
            ]
            assert allowed, (customer, feature)  # the check below is not vacuous
            if feature == "daily":
                allowed = [(a, r) for a, r in allowed if r == final_resets_at]
            assert final_used == sum(a for a, _ in allowed), (customer, feature)


def test_downgrade_racing_a_new_counter_does_not_leave_a_stale_limit(
    connect: Callable[..., psycopg.Connection], conn: psycopg.Connection
) -> None:
    """A's first call for a feature creates the counter (and caches the limit of the
    plan it read) in an open transaction; meanwhile the customer is moved from pro to
    free. Once both commit, the free limit must hold: no counter may go on trusting
    pro's 'unlimited'."""
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    a = connect(autocommit=False)
    set_now(a, "2026-03-10 12:00:00")
    assert check_and_increment(a, "acme", "api_calls")["plan"] == "pro"

    b = connect()
    done = threading.Event()
    errors: list[BaseException] = []

    def downgrade() -> None:
        try:
            b.execute("SELECT skene.set_plan('acme', 'free', 'stripe')")
        except BaseException as exc:
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=downgrade, daemon=True)
    thread.start()
    # the downgrade either finishes or waits for A; either way, A then commits
    end = time.monotonic() + 10
    while not done.is_set() and not scalar(
        conn,
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
        (b.info.backend_pid,),
    ):
        assert time.monotonic() < end, "the downgrade neither finished nor waited"
        time.sleep(0.01)
    a.commit()
    thread.join(30)
    assert not thread.is_alive() and errors == []

    april = utc("2026-04-01 00:00:00")
    assert check_and_increment(conn, "acme", "api_calls", 150) == decision(
        False, "limit_reached", "api_calls", "free", 1, 100, 99, april
    )
    assert check_and_increment(conn, "acme", "api_calls", 99) == decision(
        True, "ok", "api_calls", "free", 100, 100, 0, april
    )
    assert check_and_increment(conn, "acme", "api_calls")["reason"] == "limit_reached"


@pytest.mark.parametrize(
    ("feature", "before", "lagging", "later", "april_end"),
    [
        (
            "api_calls",
            None,
            "2026-03-31 23:59:59.9",
            "2026-04-01 00:00:00.1",
            "2026-05-01 00:00:00",
        ),
        # 30d: the 100 counted on 31 March leave the window as 30 April begins
        (
            "rolling",
            "2026-03-31 12:00:00",
            "2026-04-29 23:59:59.9",
            "2026-04-30 00:00:00.1",
            "2026-05-30 00:00:00",
        ),
    ],
)
def test_a_transaction_that_began_before_the_rollover_does_not_roll_the_counter_back(
    connect: Callable[..., psycopg.Connection],
    conn: psycopg.Connection,
    feature: str,
    before: str | None,
    lagging: str,
    later: str,
    april_end: str,
) -> None:
    """now() is when a transaction began, so a call can arrive after others have
    rolled the counter into the next period yet carry a clock from the previous one.
    It must count in the counter's (newer) period, not reset it and lose that
    period's usage."""
    if before:
        set_now(conn, before)
        assert check_and_increment(conn, "acme", feature, 100)["allowed"]
    new = connect()
    set_now(new, later)
    old = connect()
    set_now(old, lagging)
    for _ in range(60):
        assert check_and_increment(new, "acme", feature)["allowed"]
    late = check_and_increment(old, "acme", feature)
    assert (late["allowed"], late["used"], late["remaining"]) == (True, 61, 39)
    allowed = sum(check_and_increment(new, "acme", feature)["allowed"] for _ in range(60))
    assert allowed == 39
    assert check(new, "acme", feature) == decision(
        False, "limit_reached", feature, "free", 100, 100, 0, utc(april_end)
    )


def test_a_call_during_an_uncommitted_plan_change_caches_nothing_stale(
    connect: Callable[..., psycopg.Connection], conn: psycopg.Connection
) -> None:
    """The call rolls acme's counter into April while a downgrade (pro to free) is
    uncommitted. The call does not wait for it: it is decided on the plan committed
    then (pro), and what it caches is marked with the customer's old version, so the
    first call after the downgrade commits decides on free."""
    conn.execute("SELECT skene.set_plan('acme', 'pro')")
    check_and_increment(conn, "acme", "api_calls", 150)
    check_and_increment(conn, "acme", "api_calls")  # the counter caches pro's limit
    downgrade = connect(autocommit=False)
    set_now(downgrade, "2026-03-31 23:00:00")
    downgrade.execute("SELECT skene.set_plan('acme', 'free', 'stripe')")

    caller = connect()
    set_now(caller, "2026-04-01 00:00:01")
    caller.execute("SET lock_timeout = '5s'")
    may = utc("2026-05-01 00:00:00")
    assert check_and_increment(caller, "acme", "api_calls", 60) == decision(
        True, "ok", "api_calls", "pro", 60, None, None, may
    )
    downgrade.commit()
    set_now(conn, "2026-04-01 00:00:02")
    assert check_and_increment(conn, "acme", "api_calls", 41) == decision(
        False, "limit_reached", "api_calls", "free", 60, 100, 40, may
    )
