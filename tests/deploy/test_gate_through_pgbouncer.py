"""The gate through PgBouncer in transaction mode, called as docs/deploy.md says an
application must (psycopg: prepare_threshold=None): exact at the limit with many
clients sharing a few server processes. And psycopg's defaults through the same
pooler, to show that the advice is needed: server-side prepared statements end up on
server processes other clients use."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.deploy.pgbouncer import POOL_SIZE

CALLERS = 16
LIMIT = 200

# `lifetime` never resets: the test uses the real clock (a session's skene.now setting
# would not survive the pooler), so no period may end in the middle of it.
CATALOGUE = f"""
INSERT INTO skene.plans (plan, paid, is_default) VALUES ('free', false, true);
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'lifetime'),
                                                    ('exports', 'lifetime');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', {LIMIT}), ('exports', 'free', 1000000);
INSERT INTO skene.loops (name, type, feature, config) VALUES
    ('free_tier_limit', 'freemium', 'api_calls',
     '{{"message": "Upgrade to continue.",
        "upgrade_prompt": {{"channel": "email", "template": "upgrade_prompt"}}}}');
"""

INCREMENT = "SELECT allowed, reason, used FROM skene.check_and_increment(%s, %s)"
CHECK = "SELECT allowed, reason, used FROM skene.check(%s, %s)"


@pytest.fixture(autouse=True)
def catalogue(conn: psycopg.Connection) -> None:
    conn.execute(CATALOGUE)


def run_together(
    callers: list[psycopg.Connection], work: Callable[[int, psycopg.Connection], Any]
) -> list[Any]:
    """Every caller in its own thread, started together; results in caller order."""
    barrier = threading.Barrier(len(callers))
    results: list[Any] = [None] * len(callers)
    failures: list[BaseException] = []

    def run(i: int, c: psycopg.Connection) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i, c)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not failures, failures
    return results


def server_processes(conn: psycopg.Connection) -> set[int]:
    """The server processes serving this database, `conn`'s own excepted."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchall()
    return {row[0] for row in rows}


def used(conn: psycopg.Connection, feature: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(used), 0) FROM skene.usage WHERE feature = %s", (feature,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_sixteen_clients_at_the_limit_count_exactly_with_the_recommended_settings(
    conn: psycopg.Connection, connect_pooled: Callable[..., psycopg.Connection]
) -> None:
    direct = server_processes(conn)  # the fixtures' own connections
    callers = [connect_pooled(prepare_threshold=None) for _ in range(CALLERS)]
    calls_each = 25  # 400 calls against a limit of 200

    def work(i: int, c: psycopg.Connection) -> list[tuple[bool, str, int]]:
        return [c.execute(INCREMENT, ("acme", "api_calls")).fetchone() for _ in range(calls_each)]

    decisions = [d for per_caller in run_together(callers, work) for d in per_caller]

    assert len(decisions) == CALLERS * calls_each  # no call failed
    allowed = [d for d in decisions if d[0]]
    blocked = [d for d in decisions if not d[0]]
    assert len(allowed) == LIMIT
    # every allowed call was told its own count: none lost, none counted twice
    assert sorted(d[2] for d in allowed) == list(range(1, LIMIT + 1))
    assert {(reason, n) for _, reason, n in blocked} == {("limit_reached", LIMIT)}
    assert used(conn, "api_calls") == LIMIT  # blocked calls consumed nothing
    prompts = conn.execute("SELECT count(*) FROM skene.jobs WHERE kind = 'email'").fetchone()
    assert prompts == (1,)  # one upgrade prompt for the first block
    # the sixteen clients really shared PgBouncer's few server processes
    assert 1 <= len(server_processes(conn) - direct) <= POOL_SIZE


def test_psycopg_defaults_through_the_pooler_go_wrong(
    conn: psycopg.Connection, connect_pooled: Callable[..., psycopg.Connection]
) -> None:
    """psycopg prepares a query on the server after 5 runs (prepare_threshold=5) and
    then runs it by name, on whichever server process PgBouncer hands it. Half the
    clients count (check_and_increment), half only ask (check): a statement that runs
    on another client's server process fails, or runs that client's statement."""
    callers = [connect_pooled() for _ in range(CALLERS)]
    assert all(c.prepare_threshold == 5 for c in callers)  # psycopg's default
    calls_each = 40

    def work(i: int, c: psycopg.Connection) -> tuple[int, Counter[str]]:
        query = INCREMENT if i % 2 == 0 else CHECK
        told_counted, errors = 0, Counter[str]()
        for _ in range(calls_each):
            try:
                allowed, reason, _ = c.execute(query, ("acme", "exports")).fetchone()
            except psycopg.Error as exc:
                errors[exc.sqlstate or type(exc).__name__] += 1
                continue
            if query is INCREMENT and allowed and reason == "ok":
                told_counted += 1
        return told_counted, errors

    results = run_together(callers, work)
    told_counted = sum(n for n, _ in results)
    errors = sum((e for _, e in results), Counter[str]())
    counted = used(conn, "exports")
    print(
        f"\npsycopg defaults through PgBouncer: {CALLERS * calls_each} calls, "
        f"errors {dict(errors)}; increments that returned ok: {told_counted}, "
        f"units counted: {counted}"
    )
    assert errors or counted != told_counted, "psycopg's defaults worked through the pooler"
    assert set(errors) <= {"26000", "42P05"}, errors  # only the documented failures
