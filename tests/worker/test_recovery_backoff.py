"""A loop's `recovery.backoff` (exponential, linear, fixed, from `base`) sets when a
failed send runs again; without one the worker's own exponential backoff applies."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from skene_pg.jobs.retry import RetryPolicy
from tests.worker.conftest import add_customers, drain, enqueue_prompts, jobs, resend_provider
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


@pytest.mark.parametrize(
    ("backoff", "waits"),
    [
        ("exponential", [60, 120, 240, 480]),
        ("linear", [60, 120, 180, 240]),
        ("fixed", [60, 60, 60, 60]),
    ],
)
def test_each_policy_spaces_attempts_as_named(backoff: str, waits: list[int]) -> None:
    policy = RetryPolicy(backoff, base=60, cap=3600)
    assert [policy.nominal(n) for n in range(1, 5)] == waits
    for attempt, wait in enumerate(waits, start=1):
        delay = policy.delay(attempt)
        low = wait / 2 if backoff == "exponential" else wait * 0.9
        assert low <= delay <= wait


def test_an_unknown_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="fibonacci"):
        RetryPolicy("fibonacci")


def _retry_wait(conn: psycopg.Connection, job_id: int) -> timedelta:
    row = conn.execute(
        "SELECT j.run_at - a.finished_at FROM skene.jobs j "
        "JOIN skene.job_attempts a ON a.job_id = j.id WHERE j.id = %s "
        "ORDER BY a.attempt DESC LIMIT 1",
        (job_id,),
    ).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    ("recovery", "low", "high"),
    [
        ('{"retries": 2, "backoff": "fixed", "base": "10 minutes"}', 540, 600),
        ('{"retries": 2, "backoff": "linear", "base": "20m"}', 1080, 1200),
        ('{"retries": 2}', 0.025, 0.05),  # the worker's default: exponential from retry_base
    ],
)
def test_the_loops_recovery_sets_the_wait_after_a_failed_send(
    conn: psycopg.Connection,
    db_url: str,
    fake_resend: FakeResend,
    recovery: str,
    low: float,
    high: float,
) -> None:
    conn.execute(
        "UPDATE skene.loops SET config = jsonb_set(config, '{recovery}', %s::jsonb) "
        "WHERE name = 'free_tier_limit'",
        (recovery,),
    )
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=3)
    fake_resend.then("500")
    drain(db_url, resend_provider(fake_resend), retry_base=0.05)
    (job,) = jobs(conn)
    assert job["state"] == "retryable"
    wait = _retry_wait(conn, job["id"]).total_seconds()
    assert low - 1 <= wait <= high + 1, wait
