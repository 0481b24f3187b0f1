"""The first block of a customer, feature and period: one limit hit and, when a
freemium loop covers the feature, exactly one upgrade prompt in skene.jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.sql.helpers import check_and_increment, scalar, set_now, utc

pytestmark = pytest.mark.usefixtures("catalogue")


def epoch(text: str) -> int:
    return int(utc(text).timestamp())


def jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT kind, state, customer_id, loop_name, dedupe_key, payload, "
            "attempt, max_attempts, run_at FROM skene.jobs ORDER BY id"
        ).fetchall()


def block(conn: psycopg.Connection, customer: str, feature: str, times: int = 3) -> None:
    while check_and_increment(conn, customer, feature)["allowed"]:
        pass
    for _ in range(times - 1):
        assert not check_and_increment(conn, customer, feature)["allowed"]


def test_first_block_queues_one_upgrade_prompt(conn: psycopg.Connection) -> None:
    block(conn, "acme", "api_calls", times=5)
    assert jobs(conn) == [
        {
            "kind": "email",
            "state": "available",
            "customer_id": "acme",
            "loop_name": "free_tier_limit",
            "dedupe_key": "upgrade_prompt:free_tier_limit:acme:api_calls:"
            + str(epoch("2026-03-01 00:00:00")),
            "payload": {
                "template": "upgrade_prompt",
                "message": "You've reached your free tier limit. Upgrade to continue.",
                "feature": "api_calls",
                "reason": "limit_reached",
                "plan": "free",
                "used": 100,
                "usage_limit": 100,
                "requested": 1,
                "resets_at": "2026-04-01T00:00:00Z",
                "period_start": "2026-03-01T00:00:00Z",
            },
            "attempt": 0,
            "max_attempts": 1,  # recovery.retries = 0
            "run_at": utc("2026-03-10 12:00:00"),
        }
    ]
    assert conn.execute(
        "SELECT customer_id, feature, period_start, reason, plan, used, usage_limit, "
        "requested, hit_at FROM skene.limit_hits"
    ).fetchall() == [
        (
            "acme",
            "api_calls",
            utc("2026-03-01 00:00:00"),
            "limit_reached",
            "free",
            100,
            100,
            1,
            utc("2026-03-10 12:00:00"),
        )
    ]


def test_one_prompt_per_period(conn: psycopg.Connection) -> None:
    block(conn, "acme", "api_calls")
    set_now(conn, "2026-03-31 23:59:59")
    block(conn, "acme", "api_calls")
    assert scalar(conn, "SELECT count(*) FROM skene.jobs") == 1
    set_now(conn, "2026-04-01 00:00:00")
    block(conn, "acme", "api_calls")
    set_now(conn, "2026-04-20 00:00:00")
    block(conn, "acme", "api_calls")
    assert [j["dedupe_key"] for j in jobs(conn)] == [
        f"upgrade_prompt:free_tier_limit:acme:api_calls:{epoch('2026-03-01 00:00:00')}",
        f"upgrade_prompt:free_tier_limit:acme:api_calls:{epoch('2026-04-01 00:00:00')}",
    ]
    assert scalar(conn, "SELECT count(*) FROM skene.limit_hits") == 2
    # another customer has its own prompt
    block(conn, "other", "api_calls")
    assert scalar(conn, "SELECT count(*) FROM skene.jobs WHERE customer_id = 'other'") == 1


def test_rolling_window_prompts_once_per_n_day_block(conn: psycopg.Connection) -> None:
    # day 20522 (10 March) is in the 30-day block that starts on day 20520 (8 March)
    block(conn, "acme", "rolling")
    set_now(conn, "2026-04-06 23:59:59")  # still day 20520 + 29
    block(conn, "acme", "rolling")
    set_now(conn, "2026-04-07 00:00:00")  # the next block; the window is still full
    block(conn, "acme", "rolling")
    got = jobs(conn)
    assert [j["dedupe_key"] for j in got] == [
        f"upgrade_prompt:rolling_prompt:acme:rolling:{epoch('2026-03-08 00:00:00')}",
        f"upgrade_prompt:rolling_prompt:acme:rolling:{epoch('2026-04-07 00:00:00')}",
    ]
    assert got[0]["payload"]["template"] == "rolling_upgrade"
    assert got[0]["max_attempts"] == 3  # recovery.retries = 2


def test_lifetime_block_prompts_once_ever(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO skene.loops (name, type, feature) VALUES ('seats_prompt', 'freemium', 'seats')"
    )
    block(conn, "acme", "seats")
    set_now(conn, "2030-01-01 00:00:00")
    block(conn, "acme", "seats")
    assert [
        (j["dedupe_key"], j["payload"]["period_start"], j["payload"]["resets_at"])
        for j in jobs(conn)
    ] == [("upgrade_prompt:seats_prompt:acme:seats:lifetime", None, None)]


def test_not_in_plan_prompts_once_too(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.set_limit_override('acme', 'api_calls', 0)")
    for _ in range(3):
        assert check_and_increment(conn, "acme", "api_calls")["reason"] == "not_in_plan"
    assert [(j["payload"]["reason"], j["payload"]["usage_limit"]) for j in jobs(conn)] == [
        ("not_in_plan", 0)
    ]


def test_no_prompt_without_an_enabled_freemium_loop(conn: psycopg.Connection) -> None:
    block(conn, "acme", "daily")  # no loop
    block(conn, "acme", "weekly")  # a disabled loop
    assert scalar(conn, "SELECT count(*) FROM skene.jobs") == 0
    assert conn.execute("SELECT feature FROM skene.limit_hits ORDER BY 1").fetchall() == [
        ("daily",),
        ("weekly",),
    ]


def test_prompt_wakes_the_worker_on_commit(
    conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    listener = connect()
    listener.execute("LISTEN skene_jobs")
    tx = connect(autocommit=False)
    set_now(tx, "2026-03-10 12:00:00")
    check_and_increment(tx, "acme", "api_calls", 100)
    check_and_increment(tx, "acme", "api_calls")
    assert list(listener.notifies(timeout=0.2)) == []  # not before commit
    tx.commit()
    got = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [("skene_jobs", "email")]
