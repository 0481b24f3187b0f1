"""Operators never deadlock the app: `apply` changing limits and `set_plan` moving
customers run while the app does two-feature transactions in both orders. The app
sees no 40P01, every apply and plan change succeeds, and the counts stay exact.

Each customer's transactions take its two counters in one order (half the customers
one way, half the other), as the README asks of apps: two app transactions taking the
same two rows in opposite orders would deadlock each other whatever skene did."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from skene_pg.config import apply_config, load_config

CONFIG = """\
default_plan = "free"

[plans.free]
[plans.team]
paid = true

[features.reports]
period = "month"
limits = {{ free = {free}, team = "unlimited" }}

[features.exports]
period = "day"
limits = {{ free = {free}, team = {team} }}
"""
CUSTOMERS = [f"acme_{i}" for i in range(4)]
FEATURE_ORDER = (["reports", "exports"], ["exports", "reports"])
APP_THREADS = 6
ROUNDS = 20


def test_apply_and_set_plan_never_deadlock_two_feature_transactions(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    configs = []
    for i, (free, team) in enumerate([(5000, 9000), (4000, 8000)]):
        path = tmp_path / f"skene{i}.toml"
        path.write_text(CONFIG.format(free=free, team=team))
        configs.append(load_config(path))
    apply_config(conn, configs[0])

    stop = threading.Event()
    allowed: Counter[tuple[str, str]] = Counter()
    app_errors: list[str] = []
    operator_errors: list[str] = []
    lock = threading.Lock()

    def app(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(db_url, prepare_threshold=None) as c:
            while not stop.is_set():
                customer = rng.choice(CUSTOMERS)
                order = FEATURE_ORDER[CUSTOMERS.index(customer) % 2]
                try:
                    with c.transaction():
                        counted = []
                        for feature in order:
                            row = c.execute(
                                "SELECT allowed FROM skene.check_and_increment(%s, %s)",
                                (customer, feature),
                            ).fetchone()
                            if row and row[0]:
                                counted.append((customer, feature))
                    with lock:
                        allowed.update(counted)
                except psycopg.Error as exc:
                    with lock:
                        app_errors.append(f"{exc.sqlstate}: {exc}")

    def operator(work: Callable[[psycopg.Connection, int], None]) -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            for n in range(ROUNDS):
                try:
                    work(c, n)
                except psycopg.Error as exc:
                    operator_errors.append(f"{exc.sqlstate}: {exc}")
                time.sleep(0.01)  # pacing between operator actions, not a wait for state

    def applies(c: psycopg.Connection, n: int) -> None:
        apply_config(c, configs[(n + 1) % 2])

    def plan_changes(c: psycopg.Connection, n: int) -> None:
        for customer in CUSTOMERS:
            c.execute("SELECT skene.set_plan(%s, %s)", (customer, "team" if n % 2 == 0 else "free"))

    apps = [threading.Thread(target=app, args=(i,)) for i in range(APP_THREADS)]
    operators = [
        threading.Thread(target=operator, args=(applies,)),
        threading.Thread(target=operator, args=(plan_changes,)),
    ]
    for thread in apps + operators:
        thread.start()
    for thread in operators:
        thread.join(timeout=240)
    stop.set()
    for thread in apps:
        thread.join(timeout=60)

    assert not any(t.is_alive() for t in apps + operators), "a thread hung"
    assert operator_errors == [], operator_errors[:3]
    assert app_errors == [], f"{len(app_errors)} app transactions failed: {app_errors[:3]}"
    assert sum(allowed.values()) > 100, "the app barely ran: the test proves nothing"
    counters = dict(
        ((customer, feature), used)
        for customer, feature, used in conn.execute(
            "SELECT customer_id, feature, used FROM skene.usage"
        )
    )
    assert counters == dict(allowed)


@pytest.mark.parametrize("first", ["reports", "exports"])
def test_set_plan_against_a_two_feature_transaction_in_the_opposite_order(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, first: str
) -> None:
    """The deterministic form: the app holds one counter and is about to take the other
    while set_plan invalidates both. Neither side may get 40P01."""
    path = tmp_path / "skene.toml"
    path.write_text(CONFIG.format(free=10, team=20))
    apply_config(conn, load_config(path))
    second = "exports" if first == "reports" else "reports"
    # Both counters exist with their limits cached, `second` written first: the plan
    # change's invalidation reaches it before `first`, which the app holds.
    for feature in (second, second, first, first):
        conn.execute("SELECT skene.check_and_increment('acme', %s)", (feature,))

    app = psycopg.connect(db_url)
    operator = psycopg.connect(db_url, autocommit=True)
    try:
        app.execute("SELECT skene.check_and_increment('acme', %s)", (first,))  # holds first
        errors: list[str] = []

        def change_plan() -> None:
            try:
                operator.execute("SELECT skene.set_plan('acme', 'team')")
            except psycopg.Error as exc:
                errors.append(f"{exc.sqlstate}: {exc}")

        thread = threading.Thread(target=change_plan)
        thread.start()
        time.sleep(0.3)  # let set_plan reach the counters (it must not hold one and wait)
        app.execute("SELECT skene.check_and_increment('acme', %s)", (second,))
        app.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert errors == []
    finally:
        app.close()
        operator.close()
    assert conn.execute(
        "SELECT plan FROM skene.customers WHERE customer_id = 'acme'"
    ).fetchone() == ("team",)
    assert dict(conn.execute("SELECT feature, used FROM skene.usage").fetchall()) == {
        "reports": 3,
        "exports": 3,
    }
