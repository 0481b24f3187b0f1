"""A thread of the worker that dies of an error it does not handle takes the process
down, with exit code 1 and a line naming the thread and the error: never a worker
that keeps running without its bookkeeper (sends, records nothing, sends again) or
without its listener (hears nothing). Each death here is real: a function the thread
calls is dropped, a notification it cannot decode arrives, a retry policy raises."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from skene_pg.jobs import protocol as q
from skene_pg.jobs.kinds import Outcome
from skene_pg.jobs.retry import RetryPolicy
from skene_pg.jobs.worker import Worker, WorkerCrashed, WorkerSettings
from tests.worker.conftest import (
    add_customers,
    cli_env,
    enqueue_prompts,
    listen_process,
    wait_for,
)
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


def queue_a_prompt(conn: psycopg.Connection) -> None:
    enqueue_prompts(conn, add_customers(conn, 1))


def listening(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'skene-pg listen' AND query LIKE 'LISTEN%'"
    ).fetchone()
    return row is not None


def kill_the_bookkeeper(conn: psycopg.Connection) -> None:
    """The email is sent; recording it fails with UndefinedFunction, which is not a
    lost connection, so the bookkeeper does not retry it."""
    conn.execute("DROP FUNCTION skene.finish_job")
    queue_a_prompt(conn)


def kill_the_main_loop(conn: psycopg.Connection) -> None:
    conn.execute("DROP FUNCTION skene.reap_expired_leases")  # called on every poll


def kill_the_listener(conn: psycopg.Connection) -> None:
    """The listener's connection is SQL_ASCII (see the URL below): psycopg cannot
    decode a notification that is not ASCII."""
    wait_for(lambda: listening(conn), what="LISTEN")
    conn.execute("NOTIFY skene_jobs, 'été'")


@pytest.mark.parametrize(
    ("kill", "thread", "error"),
    [
        (kill_the_bookkeeper, "skene-bookkeeper", "UndefinedFunction"),
        (kill_the_main_loop, "main", "UndefinedFunction"),
        (kill_the_listener, "skene-listener", "UnicodeDecodeError"),
    ],
    ids=["bookkeeper", "main", "listener"],
)
def test_a_dying_thread_stops_skene_pg_listen_with_exit_1(
    conn: psycopg.Connection,
    db_url: str,
    fake_resend: FakeResend,
    kill: Callable[[psycopg.Connection], None],
    thread: str,
    error: str,
) -> None:
    listen_url = make_conninfo(db_url, client_encoding="SQL_ASCII")
    options = ("--poll-interval", "0.2", "--listen-database-url", listen_url)
    with listen_process(db_url, cli_env(fake_resend), *options) as worker:
        kill(conn)
        wait_for(lambda: worker.poll() is not None, timeout=30, what="the worker to exit")
        _, stderr = worker.communicate(timeout=10)
    assert worker.returncode == 1, stderr
    assert f"CRITICAL skene_pg.jobs.worker: thread {thread} died ({error}" in stderr
    assert f"Error: the worker's {thread} thread died: {error}" in stderr.splitlines()[-1]


class _RetryThatRaises(RetryPolicy):
    def delay(self, attempt: int) -> float:
        raise RuntimeError("no delay for you")


class _FailsWithABrokenRetry:
    """A handler whose outcome makes the sender crash after the handler returned,
    outside the try that guards the handler's own code."""

    kind = "email"

    def prepare(self, conn: psycopg.Connection, batch: Sequence[q.Job]) -> dict[int, Any]:
        return {}

    def run(self, job: q.Job, context: Any) -> Outcome:
        return Outcome("retryable", "try again", retry=_RetryThatRaises())

    def close(self) -> None:
        pass


def test_a_sender_crash_outside_the_handler_stops_the_worker(
    conn: psycopg.Connection, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue_a_prompt(conn)
    worker = Worker(db_url, [_FailsWithABrokenRetry()], WorkerSettings(poll_interval=0.2))
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            crashed.append(exc)

    with caplog.at_level(logging.CRITICAL, logger="skene_pg.jobs.worker"):
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the worker kept running without its sender"
    (exc,) = crashed
    assert isinstance(exc, WorkerCrashed)
    assert exc.thread.startswith("skene-send")
    assert str(exc).endswith("RuntimeError: no delay for you")
    assert any(
        r.getMessage().startswith(f"thread {exc.thread} died (RuntimeError: no delay for you)")
        for r in caplog.records
    )
    # its job was neither finished nor lost: the lease expires and it runs again
    assert conn.execute("SELECT state FROM skene.jobs").fetchall() == [("running",)]
