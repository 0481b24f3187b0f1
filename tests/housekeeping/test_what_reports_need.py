"""Housekeeping never deletes what a report or a dedupe still reads: the funnel and
`skene-pg report` read the same before and after, a customer blocked again in the same
period gets no second prompt, conversions still find their prompt, the frequency cap
still sees recent email, and a retention slot still runs once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from skene_pg.billing.queries import funnel
from skene_pg.email.handler import EmailHandler
from skene_pg.email.outbox import OutboxProvider
from skene_pg.email.templates import TemplateRenderer
from skene_pg.jobs.worker import Worker, WorkerSettings
from skene_pg.report import report_json
from skene_pg.retention.schedules import run_due
from tests.housekeeping.conftest import (
    D0,
    DORMANT,
    add_loop,
    block,
    days,
    finish_due,
    job_ids,
    keep_finished,
    run_housekeeping,
    set_now,
    url_at,
)
from tests.worker.conftest import email_settings

pytestmark = pytest.mark.usefixtures("catalogue")


def prompts(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(customer, state) of every upgrade prompt job."""
    return conn.execute(
        "SELECT customer_id, state FROM skene.jobs "
        "WHERE loop_name = 'free_tier_limit' ORDER BY customer_id, id"
    ).fetchall()


def test_the_report_reads_the_same_before_and_after(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    customers = [f"c{i}" for i in range(6)]
    for c in customers:
        conn.execute("SELECT skene.identify(%s, %s)", (c, f"{c}@example.com"))
        block(conn, c)
    conn.execute("SELECT skene.set_plan('c1', 'pro')")  # paid before the prompt goes out
    conn.execute("SELECT skene.unsubscribe('c2')")
    Worker(
        url_at(db_url, D0 + days(1 / 1440)),
        [EmailHandler(OutboxProvider(tmp_path), TemplateRenderer(None), email_settings())],
        WorkerSettings(drain=True, poll_interval=0.05),
    ).run()
    assert [state for _, state in prompts(conn)] == [
        "succeeded",
        "skipped",
        "skipped",
        "succeeded",
        "succeeded",
        "succeeded",
    ]
    set_now(conn, D0 + days(2))
    conn.execute("SELECT skene.set_plan('c0', 'pro')")  # converts after its prompt
    # a retention loop ran daily for 40 days: the report counts its runs
    add_loop(conn, "dormant", "retention", DORMANT)
    conn.execute("SELECT skene.track('c3', 'login', '{}', %s)", (D0 - days(8),))
    for n in range(40):
        set_now(conn, D0 + days(n))
        conn.execute("SELECT skene.run_loop('dormant', %s)", (D0 + days(n),))

    set_now(conn, D0 + days(60))
    before, funnel_before = report_json(conn), funnel(conn)
    assert before["funnel"] == [
        {
            "loop_name": "free_tier_limit",
            "feature": "api_calls",
            "limit_hits": 6,
            "prompts_sent": 4,
            "conversions": 1,
            "conversion_rate": 0.25,
        }
    ]
    assert [(r["loop_name"], r["runs"], r["queued"]) for r in before["runs"]] == [
        ("dormant", 40, 1)
    ]
    deleted = run_housekeeping(conn)
    assert deleted["jobs"] == 2  # the skipped prompts went
    assert deleted["loop_runs"] == 31  # slots 30 days old or more
    assert report_json(conn) == before
    assert funnel(conn) == funnel_before
    assert [state for _, state in prompts(conn)] == ["succeeded"] * 4


def test_blocked_again_in_the_same_period_after_housekeeping_no_second_prompt(
    conn: psycopg.Connection,
) -> None:
    keep_finished(conn, "1 day")
    block(conn, "ada")
    finish_due(conn, "skipped")  # e.g. unsubscribed at send time
    block(conn, "bob")
    finish_due(conn, "succeeded")
    set_now(conn, D0 + days(3))
    assert run_housekeeping(conn)["jobs"] == 1
    assert prompts(conn) == [("bob", "succeeded")]  # kept: the funnel counts it

    block(conn, "ada")  # still March: blocked again, the prompt's job is gone
    block(conn, "bob")
    assert prompts(conn) == [("bob", "succeeded")]

    set_now(conn, D0 + days(30))  # April: a new period, a new prompt
    block(conn, "ada")
    assert prompts(conn) == [("ada", "available"), ("bob", "succeeded")]


def test_a_conversion_finds_a_prompt_older_than_keep_finished(conn: psycopg.Connection) -> None:
    keep_finished(conn, "1 day")
    block(conn, "ada")
    (prompt,) = finish_due(conn, "succeeded")
    set_now(conn, D0 + days(20))
    run_housekeeping(conn)
    assert job_ids(conn) == {prompt}
    conn.execute("SELECT skene.set_plan('ada', 'pro', 'stripe')")  # inside the 60-day window
    assert conn.execute("SELECT prompt_job_id, loop_name FROM skene.conversions").fetchall() == [
        (prompt, "free_tier_limit")
    ]


def test_the_frequency_cap_still_sees_email_sent_within_it(conn: psycopg.Connection) -> None:
    keep_finished(conn, "1 day")
    add_loop(conn, "dormant", "retention", DORMANT)
    # a run applies its own loop's cap, across every loop's email
    add_loop(conn, "other", "retention", {**DORMANT, "frequency_cap": "7 days"})
    conn.execute("SELECT skene.identify('ada', 'ada@example.com')")
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (D0 - days(8),))
    conn.execute("SELECT skene.run_loop('dormant', %s)", (D0,))
    (sent,) = finish_due(conn, "succeeded")

    set_now(conn, D0 + days(3))
    assert run_housekeeping(conn)["jobs"] == 0  # within the longest cap: kept
    (queued,) = conn.execute("SELECT queued FROM skene.run_loop('other')").fetchone()
    assert queued == 0, "the cap no longer saw the email sent 3 days ago"
    assert job_ids(conn) == {sent}

    set_now(conn, D0 + days(7) + days(1 / 1440))  # past the cap: nothing needs it now
    assert run_housekeeping(conn)["jobs"] == 1
    (queued,) = conn.execute("SELECT queued FROM skene.run_loop('other')").fetchone()
    assert queued == 1


def test_a_slot_still_runs_once_after_its_run_was_deleted(
    conn: psycopg.Connection, at: Callable[[datetime], psycopg.Connection]
) -> None:
    # monthly on the 2nd at 09:00 (D0 is 2 March, 09:00), run by the worker
    add_loop(conn, "monthly", "retention", {**DORMANT, "schedule": "0 9 2 * *"})
    conn.execute("SELECT skene.identify('ada', 'ada@example.com')")
    conn.execute("SELECT skene.track('ada', 'login', '{}', %s)", (D0 - days(8),))
    (run,) = run_due(at(D0 + days(1 / 2880)))
    assert (run.slot, run.queued) == (D0, 1)
    set_now(conn, D0 + days(1))
    conn.execute("SELECT skene.run_loop('monthly')")  # someone runs it by hand, later

    april_1 = D0 + days(30) + days(1 / 24)
    set_now(conn, april_1)
    before = report_json(conn)["runs"]
    assert run_housekeeping(conn)["loop_runs"] == 1  # the 2 March run: old, not the newest
    assert conn.execute("SELECT slot FROM skene.loop_runs").fetchall() == [(D0 + days(1),)]
    jobs_before = job_ids(conn)

    # the schedule's latest due slot is still 2 March, 09:00: it must not run again
    assert run_due(at(april_1)) == []
    assert run_due(at(april_1 + days(1 / 24))) == []
    assert job_ids(conn) == jobs_before
    assert conn.execute("SELECT count(*) FROM skene.loop_runs").fetchone() == (1,)
    assert report_json(conn)["runs"] == before

    # 2 April, 09:00: the next slot runs, once
    (run,) = run_due(at(D0 + days(31) + days(1 / 2880)))
    assert run.slot == D0 + days(31)
    assert run_due(at(D0 + days(31) + days(1 / 1440))) == []
