"""The queue protocol in SQL: claim with SKIP LOCKED, lease tokens, stale finishes, the
reaper, operators' retry and cancel, and the worker role's privileges."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import psycopg
import pytest

from tests.sql.helpers import set_now
from tests.worker.conftest import add_customers, attempts, enqueue_prompts, jobs

pytestmark = pytest.mark.usefixtures("catalogue")


def claim(
    conn: psycopg.Connection, n: int = 10, lease: str = "30 seconds", worker: str = "w1"
) -> list[tuple]:
    return conn.execute(
        "SELECT id, lease_token, attempt FROM skene.claim_jobs(%s, %s, %s)", (worker, n, lease)
    ).fetchall()


def finish(
    conn: psycopg.Connection, job_id: int, token: uuid.UUID, outcome: str, error: str | None = None
) -> bool:
    row = conn.execute(
        "SELECT skene.finish_job(%s, %s, %s, %s, NULL)", (job_id, token, outcome, error)
    ).fetchone()
    assert row is not None
    return bool(row[0])


def test_concurrent_claims_never_take_the_same_job(
    conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    enqueue_prompts(conn, add_customers(conn, 200))
    workers = [connect() for _ in range(8)]
    claimed: list[list[int]] = [[] for _ in workers]
    barrier = threading.Barrier(len(workers))

    def run(i: int) -> None:
        barrier.wait()
        while rows := claim(workers[i], 7, worker=f"w{i}"):
            claimed[i] += [r[0] for r in rows]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [job_id for ids in claimed for job_id in ids]
    assert len(everything) == len(set(everything)) == 200


def test_a_stale_worker_cannot_finish_a_job(conn: psycopg.Connection) -> None:
    set_now(conn, "2026-03-10 12:00:00")
    enqueue_prompts(conn, add_customers(conn, 1))
    ((job_id, token, attempt),) = claim(conn, lease="30 seconds")
    assert attempt == 1
    set_now(conn, "2026-03-10 12:00:29")  # the lease still runs: nothing to reap
    assert conn.execute("SELECT skene.reap_expired_leases()").fetchone() == (0,)
    set_now(conn, "2026-03-10 12:00:31")
    assert conn.execute("SELECT skene.reap_expired_leases()").fetchone() == (1,)
    assert not finish(conn, job_id, token, "succeeded")  # the old lease is gone
    assert not conn.execute("SELECT skene.extend_lease(%s, %s)", (job_id, token)).fetchone()[0]
    ((_, new_token, attempt),) = claim(conn)
    assert attempt == 2 and new_token != token
    assert finish(conn, job_id, new_token, "succeeded")
    assert [a["outcome"] for a in attempts(conn, job_id)] == ["lost", "succeeded"]
    assert jobs(conn)[0]["state"] == "succeeded"


def test_a_job_that_keeps_losing_its_lease_ends_dead(conn: psycopg.Connection) -> None:
    set_now(conn, "2026-03-10 12:00:00")
    enqueue_prompts(conn, add_customers(conn, 1))
    for minute in range(3):
        set_now(conn, f"2026-03-10 12:{minute:02d}:00")
        assert len(claim(conn, lease="30 seconds")) == 1
        set_now(conn, f"2026-03-10 12:{minute:02d}:31")  # the lease has expired
        assert conn.execute("SELECT skene.reap_expired_leases(3)").fetchone() == (1,)
    (job,) = jobs(conn)
    assert job["state"] == "dead"
    assert job["last_error"].startswith("lost its lease 3 times")
    assert [a["outcome"] for a in attempts(conn, job["id"])] == ["lost"] * 3


def test_finish_rejects_unknown_outcomes_with_a_hint(conn: psycopg.Connection) -> None:
    enqueue_prompts(conn, add_customers(conn, 1))
    ((job_id, token, _),) = claim(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        finish(conn, job_id, token, "done")
    assert "unknown job outcome 'done'" in str(info.value)
    assert info.value.diag.message_hint is not None


def test_retry_and_cancel(conn: psycopg.Connection) -> None:
    enqueue_prompts(conn, add_customers(conn, 2), max_attempts=1)
    (first, token, _), (second, _, _) = claim(conn)
    assert finish(conn, first, token, "retryable", "boom")  # 1 of 1 attempts: dead
    assert jobs(conn)[0]["state"] == "dead"
    conn.execute("SELECT skene.retry_job(%s)", (first,))
    job = jobs(conn)[0]
    assert (job["state"], job["max_attempts"]) == ("available", 2)

    assert conn.execute("SELECT skene.cancel_job(%s)", (second,)).fetchone() == (True,)
    assert conn.execute("SELECT skene.cancel_job(%s)", (second,)).fetchone() == (False,)
    assert [a["outcome"] for a in attempts(conn, second)] == ["cancelled"]

    ((again, token, attempt),) = claim(conn)
    assert (again, attempt) == (first, 2)
    assert finish(conn, again, token, "succeeded")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is succeeded"):
        conn.execute("SELECT skene.retry_job(%s)", (first,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no job 999"):
        conn.execute("SELECT skene.cancel_job(999)")


def test_the_worker_role_uses_the_protocol_and_cannot_touch_jobs_directly(
    conn: psycopg.Connection, db_url: str
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1))
    role = f"worker_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE skene_worker")
    try:
        with psycopg.connect(db_url, user=role, autocommit=True) as worker:
            ((job_id, token, _),) = claim(worker)
            assert worker.execute("SELECT count(*) FROM skene.job_attempts").fetchone() == (1,)
            worker.execute("SELECT count(*) FROM skene.suppressions")
            assert finish(worker, job_id, token, "succeeded")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                worker.execute("UPDATE skene.jobs SET state = 'available'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                worker.execute("SELECT skene.retry_job(%s)", (job_id,))
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_protocol_functions_pin_search_path_and_are_commented(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.prosecdef, p.proconfig, obj_description(p.oid, 'pg_proc') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'skene' AND p.proname = ANY(%s)",
        (
            [
                "claim_jobs",
                "extend_lease",
                "finish_job",
                "reap_expired_leases",
                "retry_job",
                "cancel_job",
                "suppress",
                "unsuppress",
            ],
        ),
    ).fetchall()
    assert len(rows) == 8
    for name, _definer, config, comment in rows:
        assert config and any(c.startswith("search_path=") for c in config), name
        assert comment, name
    for table in ("job_attempts", "suppressions"):
        assert conn.execute("SELECT obj_description(%s::regclass)", (f"skene.{table}",)).fetchone()[
            0
        ]
