"""`skene-pg listen` with its database URL through PgBouncer in transaction mode: with a
direct URL for LISTEN it hears new jobs at once and survives a SIGKILL mid-send
without a second send; without one it says once that it only polls, and delivers."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from skene_pg import db
from tests.worker.conftest import (
    CATALOGUE,
    add_customers,
    all_in,
    attempts,
    cli_env,
    enqueue_prompts,
    jobs,
    listen_process,
    states,
    wait_for,
)
from tests.worker.fake_resend import FakeResend
from tests.worker.test_faults import assert_each_recipient_got_one_send

POOLER_WARNING = "goes through a connection pooler"


@pytest.fixture(autouse=True)
def catalogue(conn: psycopg.Connection) -> None:
    conn.execute(CATALOGUE)


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with FakeResend() as fake:
        yield fake


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, wait for a clean exit, and return what it logged."""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    return stderr


def until_succeeded(
    conn: psycopg.Connection, worker: subprocess.Popen[str], n: int, timeout: float, what: str
) -> None:
    """Wait for n succeeded jobs; a worker that exits meanwhile fails the test at once,
    with what it logged."""

    def done() -> bool:
        if worker.poll() is not None:
            _, stderr = worker.communicate(timeout=10)
            pytest.fail(f"skene-pg listen exited {worker.returncode} before {what}:\n{stderr}")
        return all_in(conn, "succeeded", n)

    wait_for(done, timeout=timeout, what=what)


def listening_directly(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'skene-pg listen' AND query LIKE 'LISTEN%'"
    ).fetchone()
    return row is not None


def test_pooler_detection(db_url: str, pooled_url: str) -> None:
    with db.connect(db_url) as direct, db.connect(pooled_url) as pooled:
        assert not db.through_pooler(direct)
        assert db.through_pooler(pooled)
        # and the project's connections prepare nothing on the server
        assert direct.prepare_threshold is None and pooled.prepare_threshold is None


def test_with_a_direct_listen_url_jobs_arrive_at_once_and_a_sigkill_sends_nothing_twice(
    conn: psycopg.Connection, db_url: str, pooled_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 16)
    env = cli_env(fake_resend)
    direct = ("--listen-database-url", db_url)
    # a poll every 60 s: whatever arrives sooner was heard through LISTEN
    slow_poll = ("--concurrency", "4", "--lease", "2", "--poll-interval", "60")
    with listen_process(pooled_url, env, *direct, *slow_poll) as first:
        wait_for(lambda: listening_directly(conn), what="LISTEN on the direct connection")
        started = time.monotonic()
        enqueue_prompts(conn, customers[:4])
        until_succeeded(conn, first, 4, timeout=15, what="the first emails")
        assert time.monotonic() - started < 15  # not the 60 s poll

        fake_resend.delay = 0.4  # each email takes a while: the kill lands mid-send
        enqueue_prompts(conn, customers[4:], max_attempts=1)  # a lost lease is no failure
        wait_for(lambda: len(fake_resend.received) >= 4 + 6, what="sends in flight")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        _, stderr = first.communicate(timeout=10)
    assert POOLER_WARNING not in stderr
    assert states(conn).get("running", 0) > 0  # the dead worker still holds leases

    fast_poll = ("--concurrency", "4", "--lease", "2", "--poll-interval", "0.2")
    with listen_process(pooled_url, env, *direct, *fast_poll) as second:
        until_succeeded(conn, second, 16, timeout=30, what="every email")
        # then a steady stream: each of its connections runs the same statements
        # many times, which is when a driver would start preparing them
        fake_resend.delay = 0.01
        more = add_customers(conn, 150, prefix="more")
        for i in range(0, len(more), 10):
            enqueue_prompts(conn, more[i : i + 10])
        until_succeeded(conn, second, 166, timeout=60, what="the stream")
        stderr = stop(second)
    customers += more
    assert POOLER_WARNING not in stderr and "died" not in stderr
    assert states(conn) == {"succeeded": 166}  # none dead, none left behind
    assert_each_recipient_got_one_send(fake_resend, customers)
    lost = [a for j in jobs(conn) for a in attempts(conn, j["id"]) if a["outcome"] == "lost"]
    assert lost and all("lease expired" in a["error"] for a in lost)


def test_without_a_direct_url_it_warns_once_and_delivers_by_polling(
    conn: psycopg.Connection, pooled_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 8)
    options = ("--concurrency", "4", "--poll-interval", "0.3")

    with listen_process(pooled_url, cli_env(fake_resend), *options) as worker:
        for total in (4, 8):  # jobs queued while it runs
            enqueue_prompts(conn, customers[total - 4 : total])
            until_succeeded(conn, worker, total, timeout=15, what="polled emails")
        stderr = stop(worker)
    warnings = [line for line in stderr.splitlines() if POOLER_WARNING in line]
    assert len(warnings) == 1, stderr
    assert "WARNING" in warnings[0] and "SKENE_LISTEN_DATABASE_URL" in warnings[0]
    assert "polling every 0.3s" in warnings[0]
    assert_each_recipient_got_one_send(fake_resend, customers)
