"""A deferral (a provider's 429, quiet hours) is not an attempt: skene.jobs counts it
in `deferrals`, and only real attempts count against max_attempts."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.worker.conftest import (
    add_customers,
    all_in,
    attempts,
    cli_env,
    enqueue_prompts,
    jobs,
    resend_provider,
    running_worker,
    skene_pg,
    wait_for,
)
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


def claim(conn: psycopg.Connection) -> tuple[int, uuid.UUID, int, int]:
    """(id, lease_token, attempt, deferrals) of the one due job."""
    ((row),) = conn.execute(
        "SELECT id, lease_token, attempt, deferrals FROM skene.claim_jobs('w1', 10, '30 seconds')"
    ).fetchall()
    return row  # type: ignore[no-any-return]


def finish(conn: psycopg.Connection, job_id: int, token: uuid.UUID, outcome: str) -> None:
    row = conn.execute(
        "SELECT skene.finish_job(%s, %s, %s, %s, NULL)", (job_id, token, outcome, outcome)
    ).fetchone()
    assert row == (True,)


def counts(conn: psycopg.Connection) -> tuple[str, int, int]:
    (job,) = jobs(conn)
    return job["state"], job["attempt"], job["deferrals"]


def test_deferrals_use_up_no_attempt_and_failures_count_exactly(conn: psycopg.Connection) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=2)
    for n in (1, 2, 3):
        job_id, token, attempt, deferrals = claim(conn)
        assert (attempt, deferrals) == (1, n - 1)  # a claim is an attempt until deferred
        finish(conn, job_id, token, "deferred")
        assert counts(conn) == ("available", 0, n)
    job_id, token, attempt, _ = claim(conn)
    assert attempt == 1  # the first real attempt, after three deferrals
    finish(conn, job_id, token, "retryable")
    assert counts(conn) == ("retryable", 1, 3)  # one failure of two allowed: not dead
    job_id, token, _, _ = claim(conn)
    finish(conn, job_id, token, "deferred")
    assert counts(conn) == ("available", 1, 4)
    job_id, token, attempt, _ = claim(conn)
    assert attempt == 2
    finish(conn, job_id, token, "retryable")
    (job,) = jobs(conn)
    assert (job["state"], job["attempt"], job["deferrals"]) == ("dead", 2, 4)
    assert job["last_error"] == "gave up after 2 failed attempt(s): retryable"
    # every run is kept, numbered in order: attempts and deferrals together
    assert [(a["attempt"], a["outcome"]) for a in attempts(conn, job_id)] == [
        (1, "deferred"),
        (2, "deferred"),
        (3, "deferred"),
        (4, "failed"),
        (5, "deferred"),
        (6, "failed"),
    ]


def test_a_lost_lease_and_a_cancel_after_deferrals_end_the_right_run(
    conn: psycopg.Connection,
) -> None:
    enqueue_prompts(conn, add_customers(conn, 2), max_attempts=5)
    first, second = (j["id"] for j in jobs(conn))
    for _ in range(2):
        for job_id, token, _, _ in conn.execute(
            "SELECT id, lease_token, attempt, deferrals FROM skene.claim_jobs('w1', 10, '1 hour')"
        ).fetchall():
            finish(conn, job_id, token, "deferred")
    conn.execute("SELECT skene.claim_jobs('w1', 10, '1 hour')")
    conn.execute(
        "UPDATE skene.jobs SET locked_until = now() - interval '1 second' WHERE id = %s", (first,)
    )
    assert conn.execute("SELECT skene.reap_expired_leases()").fetchone() == (1,)
    assert conn.execute("SELECT skene.cancel_job(%s)", (second,)).fetchone() == (True,)
    for job_id, last in ((first, "lost"), (second, "cancelled")):
        assert [(a["attempt"], a["outcome"]) for a in attempts(conn, job_id)] == [
            (1, "deferred"),
            (2, "deferred"),
            (3, last),
        ]
    # a lost lease stays an attempt (the send may have gone out), but no failure
    assert [(j["state"], j["attempt"], j["deferrals"]) for j in jobs(conn)] == [
        ("retryable", 1, 2),
        ("cancelled", 1, 2),
    ]


def test_429s_then_failures_die_after_exactly_max_attempts_and_the_cli_shows_both(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=2)
    fake_resend.then("429", 0).then("429", 0).then("429", 0).then("500").then("500")
    with running_worker(db_url, resend_provider(fake_resend), poll_interval=30):
        wait_for(lambda: all_in(conn, "dead", 1), what="the job to give up")
    assert len(fake_resend.received) == 5 and not fake_resend.deliveries
    (job,) = jobs(conn)
    assert (job["attempt"], job["deferrals"]) == (2, 3)
    assert job["last_error"].startswith("gave up after 2 failed attempt(s): resend 500")
    assert [a["outcome"] for a in attempts(conn, job["id"])] == [
        "deferred",
        "deferred",
        "deferred",
        "failed",
        "failed",
    ]

    env = cli_env(SKENE_DATABASE_URL=db_url)
    listed = skene_pg("jobs", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    ((row),) = json.loads(listed.stdout)
    assert (row["attempt"], row["max_attempts"], row["deferrals"]) == (2, 2, 3)
    table = skene_pg("jobs", "list", env=env)
    header, _, line = table.stdout.splitlines()[:3]
    assert header.split()[5:7] == ["attempt", "deferred"]
    assert line.split()[5:7] == ["2/2", "3"]
    shown = skene_pg("jobs", "show", str(job["id"]), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "      deferrals  3" in shown.stdout and "        attempt  2" in shown.stdout
    data = json.loads(skene_pg("jobs", "show", str(job["id"]), "--json", env=env).stdout)
    assert (data["attempt"], data["deferrals"]) == (2, 3)
