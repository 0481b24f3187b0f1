"""The queue's defining guarantees, each pinned by a test that fails without it: a lease
token from a lost lease can neither finish nor extend the job another worker holds
now, and a job locked by someone else is skipped, never waited for. Time moves on the
test clock (skene.now), not the wall clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import set_now, utc
from tests.worker.conftest import add_customers, attempts, enqueue_prompts, jobs

pytestmark = pytest.mark.usefixtures("catalogue")

T0 = utc("2026-03-10 12:00:00")
LEASE = timedelta(seconds=30)
OUTCOMES = ("succeeded", "skipped", "dead", "retryable", "deferred")


def clock(conn: psycopg.Connection, at: datetime) -> psycopg.Connection:
    set_now(conn, at.replace(tzinfo=None).isoformat(sep=" "))
    return conn


def claim(conn: psycopg.Connection, worker: str, n: int = 1) -> list[tuple[int, uuid.UUID, int]]:
    return conn.execute(
        "SELECT id, lease_token, attempt FROM skene.claim_jobs(%s, %s, %s)", (worker, n, LEASE)
    ).fetchall()


def finish(conn: psycopg.Connection, job_id: int, token: uuid.UUID, outcome: str) -> bool:
    row = conn.execute(
        "SELECT skene.finish_job(%s, %s, %s, 'from a stale worker', %s)",
        (job_id, token, outcome, T0 + timedelta(hours=1)),
    ).fetchone()
    assert row is not None
    return bool(row[0])


def extend(conn: psycopg.Connection, job_id: int, token: uuid.UUID, lease: timedelta) -> bool:
    row = conn.execute("SELECT skene.extend_lease(%s, %s, %s)", (job_id, token, lease)).fetchone()
    assert row is not None
    return bool(row[0])


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    (row,) = [j for j in jobs(conn) if j["id"] == job_id]
    return row


@dataclass
class Reclaimed:
    job_id: int
    a: psycopg.Connection  # the worker that lost its lease
    token_a: uuid.UUID
    b: psycopg.Connection  # the worker that holds the job now
    token_b: uuid.UUID


@pytest.fixture
def reclaimed(conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]) -> Reclaimed:
    """Worker A claims the one job at T0 and goes silent; at T0 + 31 s its lease has
    expired and is reaped, and worker B claims the job again."""
    clock(conn, T0)
    enqueue_prompts(conn, add_customers(conn, 1))
    a = clock(connect(), T0)
    ((job_id, token_a, attempt),) = claim(a, "A")
    assert attempt == 1

    clock(conn, T0 + LEASE + timedelta(seconds=1))
    assert conn.execute("SELECT skene.reap_expired_leases()").fetchone() == (1,)

    b = clock(connect(), T0 + LEASE + timedelta(seconds=1))
    ((again, token_b, attempt),) = claim(b, "B")
    assert (again, attempt) == (job_id, 2)
    assert token_b != token_a
    held = job(conn, job_id)
    assert (held["state"], held["locked_by"], held["lease_token"]) == ("running", "B", token_b)
    assert held["locked_until"] == T0 + LEASE + timedelta(seconds=1) + LEASE
    return Reclaimed(job_id, a, token_a, b, token_b)


def test_a_token_from_a_lost_lease_cannot_finish_the_job_another_worker_holds(
    conn: psycopg.Connection, reclaimed: Reclaimed
) -> None:
    r = reclaimed
    before = job(conn, r.job_id)
    clock(r.a, T0 + timedelta(seconds=40))  # A wakes up while B's lease runs
    for outcome in OUTCOMES:
        accepted = finish(r.a, r.job_id, r.token_a, outcome)
        assert accepted is False, f"a token from a lost lease finished B's job as {outcome}"
        # refused, and nothing changed: still B's job, B's token, B's attempt
        assert job(conn, r.job_id) == before, outcome
    assert [(x["attempt"], x["worker"], x["outcome"]) for x in attempts(conn, r.job_id)] == [
        (1, "A", "lost"),
        (2, "B", None),
    ]

    clock(r.b, T0 + timedelta(seconds=45))
    assert finish(r.b, r.job_id, r.token_b, "succeeded") is True
    done = job(conn, r.job_id)
    assert (done["state"], done["attempt"], done["lease_token"], done["locked_by"]) == (
        "succeeded",
        2,
        None,
        None,
    )
    assert done["finished_at"] == T0 + timedelta(seconds=45)
    assert [(x["attempt"], x["outcome"]) for x in attempts(conn, r.job_id)] == [
        (1, "lost"),
        (2, "succeeded"),
    ]


def test_a_token_from_a_lost_lease_cannot_extend_the_job_another_worker_holds(
    conn: psycopg.Connection, reclaimed: Reclaimed
) -> None:
    r = reclaimed
    before = job(conn, r.job_id)
    b_lease_ends = T0 + LEASE + timedelta(seconds=1) + LEASE
    assert before["locked_until"] == b_lease_ends

    clock(r.a, T0 + timedelta(seconds=40))
    accepted = extend(r.a, r.job_id, r.token_a, timedelta(minutes=10))
    assert accepted is False, "a token from a lost lease extended B's lease"
    assert job(conn, r.job_id) == before  # B's lease not moved by A

    # B's lease still ends when B last set it: past it, the reaper takes the job from B
    clock(conn, b_lease_ends + timedelta(seconds=1))
    assert conn.execute("SELECT skene.reap_expired_leases()").fetchone() == (1,)
    assert job(conn, r.job_id)["state"] == "retryable"


def test_the_holder_of_the_lease_extends_it(conn: psycopg.Connection, reclaimed: Reclaimed) -> None:
    """The counterpart of the test above: B's own token does move B's lease (so the
    refusal above is about the token, not about extending at all)."""
    r = reclaimed
    clock(r.b, T0 + timedelta(seconds=50))
    assert extend(r.b, r.job_id, r.token_b, timedelta(minutes=10)) is True
    held = job(conn, r.job_id)
    assert held["locked_until"] == T0 + timedelta(seconds=50, minutes=10)
    assert (held["state"], held["locked_by"], held["lease_token"]) == ("running", "B", r.token_b)
    clock(conn, T0 + timedelta(minutes=5))  # past B's first lease, within the extension
    assert conn.execute("SELECT skene.reap_expired_leases()").fetchone() == (0,)


def hold_first_job_by_claiming(holder: psycopg.Connection, first: int) -> None:
    """Another worker's claim, its transaction not yet committed."""
    assert [r[0] for r in claim(holder, "holder")] == [first]


def hold_first_job_by_locking(holder: psycopg.Connection, first: int) -> None:
    """Anyone's row lock on the job, e.g. an operator's open transaction."""
    holder.execute("SELECT id FROM skene.jobs WHERE id = %s FOR UPDATE", (first,))


@pytest.mark.parametrize("hold", [hold_first_job_by_claiming, hold_first_job_by_locking])
def test_a_locked_job_is_skipped_not_waited_for(
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    hold: Callable[[psycopg.Connection, int], None],
) -> None:
    clock(conn, T0)
    enqueue_prompts(conn, add_customers(conn, 3))
    first, second, third = (j["id"] for j in jobs(conn))

    holder = clock(connect(autocommit=False), T0)
    hold(holder, first)
    worker = clock(connect(), T0)
    # Waiting for the holder's lock would end in a lock_timeout error: a worker that
    # claims must take the next due job at once instead.
    worker.execute("SET lock_timeout = '200ms'")
    try:
        got = claim(worker, "w2")
    except psycopg.errors.LockNotAvailable:
        pytest.fail("the claim waited for the locked first job instead of skipping it")
    assert [r[0] for r in got] == [second]
    assert [r[0] for r in claim(worker, "w2", n=10)] == [third]
    assert [j["state"] for j in jobs(conn)] == ["available", "running", "running"]

    holder.rollback()  # the lock is gone: the first job is due again, for anyone
    ((job_id, _, attempt),) = claim(worker, "w2", n=10)
    assert (job_id, attempt) == (first, 1)
