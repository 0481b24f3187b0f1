"""Queued prompts reach the (fake) Resend API exactly once, through retries, rate
limits and permanent errors."""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest

from tests.worker.conftest import (
    APP_URL,
    add_customers,
    all_in,
    attempts,
    block,
    cli_env,
    drain,
    enqueue_prompts,
    jobs,
    resend_provider,
    running_worker,
    skene_pg,
    wait_for,
)
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


def test_every_prompt_arrives_once_and_draining_again_sends_nothing(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 5)
    for customer in customers:
        block(conn, customer)
    queued = jobs(conn)
    assert len(queued) == 5

    result = skene_pg("listen", "--drain", "--database-url", db_url, env=cli_env(fake_resend))
    assert result.returncode == 0, result.stderr
    assert "5 succeeded" in result.stderr

    assert all_in(conn, "succeeded", 5)
    assert sorted(fake_resend.delivered_keys()) == sorted(j["idempotency_key"] for j in queued)
    assert sorted(d.to[0] for d in fake_resend.deliveries) == sorted(
        f"Name {c} <{c}@example.test>" for c in customers
    )
    assert fake_resend.api_keys == {"re_test_key"}
    first = fake_resend.deliveries[0]
    assert first.subject == "You've reached your api_calls limit"
    assert "You've used 3 of 3 api_calls on the free plan." in first.text
    assert f"{APP_URL}/upgrade" in first.html
    unsubscribe = first.headers["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{APP_URL}/unsubscribe?customer=") and "token=" in unsubscribe
    assert first.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe.strip("<>") in first.text
    # nothing in the worker's log but ids and outcomes: no addresses, keys or bodies
    assert "@example.test" not in result.stderr and "re_test_key" not in result.stderr
    assert queued[0]["idempotency_key"] not in result.stderr

    again = skene_pg("listen", "--drain", "--database-url", db_url, env=cli_env(fake_resend))
    assert again.returncode == 0, again.stderr
    assert len(fake_resend.received) == 5


def test_500s_and_timeouts_are_retried_until_delivered(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=5)
    fake_resend.then("500").then("timeout", 1.5).then("500")
    with running_worker(db_url, resend_provider(fake_resend, timeout=0.5), poll_interval=30):
        wait_for(lambda: all_in(conn, "succeeded", 1), what="delivery after failures")
    (job,) = jobs(conn)
    outcomes = [(a["outcome"], a["error"]) for a in attempts(conn, job["id"])]
    assert [o for o, _ in outcomes] == ["failed", "failed", "failed", "succeeded"]
    assert "500" in outcomes[0][1] and "timed out" in outcomes[1][1].lower()
    assert fake_resend.delivered_keys() == [job["idempotency_key"]]
    assert {r.key for r in fake_resend.received} == {job["idempotency_key"]}


def test_429_waits_for_retry_after_without_using_up_attempts(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=1)  # no retries for failures
    fake_resend.then("429", 1.0)
    with running_worker(db_url, resend_provider(fake_resend), poll_interval=30):
        wait_for(lambda: all_in(conn, "succeeded", 1), what="delivery after a 429")
    first, second = fake_resend.received
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0
    (job,) = jobs(conn)
    assert [a["outcome"] for a in attempts(conn, job["id"])] == ["deferred", "succeeded"]


def test_422_ends_dead_with_the_reason(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=5)
    fake_resend.then("422")
    drain(db_url, resend_provider(fake_resend))
    (job,) = jobs(conn)
    assert job["state"] == "dead"
    assert "resend 422 validation_error" in job["last_error"]
    assert "Invalid `to` field" in job["last_error"]
    assert len(fake_resend.received) == 1 and not fake_resend.deliveries


def test_exhausted_retries_end_dead_with_every_error_kept(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=2)
    fake_resend.then("500").then("500")
    with running_worker(db_url, resend_provider(fake_resend), poll_interval=30):
        wait_for(lambda: all_in(conn, "dead", 1), what="the job to give up")
    (job,) = jobs(conn)
    assert job["last_error"].startswith("gave up after 2 failed attempt(s): resend 500")
    assert [a["outcome"] for a in attempts(conn, job["id"])] == ["failed", "failed"]
    assert all("500" in a["error"] for a in attempts(conn, job["id"]))


def test_a_notification_wakes_the_worker_long_before_the_poll(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 3)
    with running_worker(db_url, resend_provider(fake_resend), poll_interval=60) as worker:
        wait_for(worker.listening.is_set, what="LISTEN")
        for customer in customers:
            block(conn, customer)
        wait_for(lambda: all_in(conn, "succeeded", 3), timeout=10, what="NOTIFY-driven sends")
    assert Counter(fake_resend.delivered_keys()).most_common(1)[0][1] == 1
