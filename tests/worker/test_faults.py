"""Faults: a worker SIGKILLed mid-send, SIGTERM, the database restarted under a running
worker, its LISTEN connection terminated, and several workers on one queue."""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict

import psycopg
import pytest

from skene_pg.devdb import DevCluster
from tests.worker.conftest import (
    add_customers,
    all_in,
    attempts,
    cli_env,
    enqueue_prompts,
    jobs,
    listen_process,
    resend_provider,
    running_worker,
    states,
    wait_for,
)
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


def assert_each_recipient_got_one_send(fake: FakeResend, customers: list[str]) -> None:
    sends: dict[str, set[str | None]] = defaultdict(set)
    for delivery in fake.deliveries:
        sends[delivery.to[0]].add(delivery.key)
    assert len(sends) == len(customers), "some emails never arrived"
    assert all(len(keys) == 1 for keys in sends.values()), "a recipient got two sends"
    assert Counter(fake.delivered_keys()).most_common(1)[0][1] == 1


def test_sigkill_mid_send_then_another_worker_sends_everything_once(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 12)
    enqueue_prompts(conn, customers, max_attempts=1)  # a lost lease is not a failure
    fake_resend.delay = 0.4  # each email takes a while: the kill lands mid-send
    options = ("--concurrency", "4", "--lease", "2", "--poll-interval", "0.2")
    with listen_process(db_url, cli_env(fake_resend), *options) as first:
        wait_for(lambda: len(fake_resend.received) >= 6, what="sends in flight")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    killed_at = time.monotonic()
    assert states(conn).get("running", 0) > 0  # the dead worker still holds leases

    with listen_process(db_url, cli_env(fake_resend), *options) as second:
        wait_for(lambda: all_in(conn, "succeeded", 12), timeout=30, what="every email")
        assert second.poll() is None
    assert time.monotonic() - killed_at < 60
    assert_each_recipient_got_one_send(fake_resend, customers)
    lost = [a for j in jobs(conn) for a in attempts(conn, j["id"]) if a["outcome"] == "lost"]
    assert lost and all("lease expired" in a["error"] for a in lost)


def test_sigterm_stops_claiming_and_lets_running_sends_finish(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 6)
    enqueue_prompts(conn, customers)
    fake_resend.delay = 1.0
    with listen_process(db_url, cli_env(fake_resend), "--concurrency", "2") as worker:
        wait_for(lambda: len(fake_resend.received) >= 2, what="two sends in flight")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    counts = states(conn)
    assert counts.get("running", 0) == 0
    assert counts["succeeded"] == len(fake_resend.deliveries) == 2
    assert counts["available"] == 4


def test_the_database_restarted_under_a_running_worker(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend, pg_cluster: DevCluster
) -> None:
    customers = add_customers(conn, 10)
    enqueue_prompts(conn, customers[:6])
    fake_resend.delay = 0.3
    with running_worker(
        db_url, resend_provider(fake_resend), concurrency=2, poll_interval=30
    ) as worker:
        wait_for(lambda: len(fake_resend.received) >= 2, what="sends in flight")
        pg_cluster.restart()  # every connection dies, sends are in flight
        with psycopg.connect(db_url, autocommit=True) as again:
            wait_for(lambda: worker.listening.is_set(), what="LISTEN again")
            enqueue_prompts(again, customers[6:])  # NOTIFY reaches the new connection
            wait_for(lambda: all_in(again, "succeeded", 10), timeout=30, what="every email")
    assert_each_recipient_got_one_send(fake_resend, customers)


def test_terminating_the_listen_connection_reconnects(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 2)
    listener_pid = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'skene-pg listen' "
        "AND datname = current_database()"
    )
    with running_worker(db_url, resend_provider(fake_resend), poll_interval=60) as worker:
        wait_for(worker.listening.is_set, what="LISTEN")
        (old,) = wait_for(lambda: conn.execute(listener_pid).fetchone(), what="listener")
        conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        wait_for(
            lambda: (
                (row := conn.execute(listener_pid).fetchone())
                and row[0] != old
                and worker.listening.is_set()
            ),
            what="a new LISTEN connection",
        )
        started = time.monotonic()
        enqueue_prompts(conn, customers)
        wait_for(lambda: all_in(conn, "succeeded", 2), timeout=10, what="NOTIFY after reconnect")
        assert time.monotonic() - started < 10  # the 60 s poll did not do it
    assert_each_recipient_got_one_send(fake_resend, customers)


def test_four_workers_on_a_thousand_jobs_send_each_exactly_once(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 1000)
    enqueue_prompts(conn, customers)
    env = cli_env(fake_resend)
    options = ("--concurrency", "8", "--poll-interval", "0.5")
    with (
        listen_process(db_url, env, *options) as a,
        listen_process(db_url, env, *options) as b,
        listen_process(db_url, env, *options) as c,
        listen_process(db_url, env, *options) as d,
    ):
        wait_for(lambda: all_in(conn, "succeeded", 1000), timeout=90, what="1,000 emails")
        workers = {row[0] for row in conn.execute("SELECT DISTINCT worker FROM skene.job_attempts")}
        for proc in (a, b, c, d):
            proc.send_signal(signal.SIGTERM)
        assert all(proc.wait(timeout=20) == 0 for proc in (a, b, c, d))
    assert len(workers) == 4
    assert len(fake_resend.received) == 1000  # not one request twice
    assert_each_recipient_got_one_send(fake_resend, customers)
