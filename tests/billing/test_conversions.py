"""Conversions: every free -> paid change is recorded once, attributed to the last
upgrade prompt sent within the loop's window; the funnel and `skene-pg report`."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.billing.conftest import count, drain, email_handler
from tests.worker.conftest import block, cli_env, skene_pg
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


def sent_prompt(conn: psycopg.Connection, db_url: str, fake: FakeResend, customer: str) -> int:
    conn.execute("SELECT skene.identify(%s, email => %s || '@example.test')", (customer, customer))
    block(conn, customer)
    drain(db_url, [email_handler(fake)])
    row = conn.execute(
        "SELECT id FROM skene.jobs "
        "WHERE customer_id = %s AND kind = 'email' AND state = 'succeeded'",
        (customer,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def conversions(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT customer_id, from_plan, to_plan, prompt_job_id, loop_name "
        "FROM skene.conversions ORDER BY converted_at"
    ).fetchall()


def test_free_to_paid_is_recorded_once_and_attributed_to_the_last_prompt(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    sent_prompt(conn, db_url, fake_resend, "acct_1")
    # an older prompt from an earlier period, sent 3 days before
    conn.execute(
        "INSERT INTO skene.jobs "
        "  (kind, state, customer_id, loop_name, payload, finished_at, dedupe_key) "
        "VALUES ('email', 'succeeded', 'acct_1', 'free_tier_limit', '{}', "
        "        now() - interval '3 days', 'old')"
    )
    latest = count(conn, "SELECT max(id) FROM skene.jobs WHERE dedupe_key <> 'old'")
    conn.execute("SELECT skene.set_plan('acct_1', 'pro', 'stripe', 'sub_1')")
    conn.execute("SELECT skene.set_plan('acct_1', 'pro', 'stripe', 'sub_1')")  # repeated sync
    conn.execute("SELECT skene.set_plan('acct_1', 'team', 'stripe', 'sub_1')")  # paid -> paid
    assert conversions(conn) == [("acct_1", "free", "pro", latest, "free_tier_limit")]


def test_outside_the_window_the_conversion_is_unattributed(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    job = sent_prompt(conn, db_url, fake_resend, "acct_1")
    conn.execute(
        "UPDATE skene.jobs SET finished_at = now() - interval '15 days' WHERE id = %s", (job,)
    )
    conn.execute("SELECT skene.set_plan('acct_1', 'pro')")
    assert conversions(conn) == [("acct_1", "free", "pro", None, None)]


def test_the_window_is_set_per_loop(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    conn.execute('UPDATE skene.loops SET config = config || \'{"attribution_window": "30 days"}\'')
    job = sent_prompt(conn, db_url, fake_resend, "acct_1")
    conn.execute(
        "UPDATE skene.jobs SET finished_at = now() - interval '15 days' WHERE id = %s", (job,)
    )
    conn.execute("SELECT skene.set_plan('acct_1', 'pro')")
    assert conversions(conn) == [("acct_1", "free", "pro", job, "free_tier_limit")]


def test_a_prompt_not_sent_does_not_attribute(conn: psycopg.Connection) -> None:
    conn.execute("SELECT skene.identify('acct_1', email => 'a@example.test')")
    block(conn, "acct_1")  # queued, never sent
    conn.execute("SELECT skene.set_plan('acct_1', 'pro')")
    assert conversions(conn) == [("acct_1", "free", "pro", None, None)]


def test_funnel_and_report(conn: psycopg.Connection, db_url: str, fake_resend: FakeResend) -> None:
    for customer in ("acct_1", "acct_2", "acct_3", "acct_4"):
        sent_prompt(conn, db_url, fake_resend, customer)
    conn.execute("SELECT skene.set_plan('acct_1', 'pro')")
    assert conn.execute(
        "SELECT loop_name, limit_hits, prompts_sent, conversions, conversion_rate::float "
        "FROM skene.funnel"
    ).fetchall() == [("free_tier_limit", 4, 4, 1, 0.25)]
    result = skene_pg("report", "--json", "--database-url", db_url, env=cli_env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["funnel"] == [
        {
            "loop_name": "free_tier_limit",
            "feature": "api_calls",
            "limit_hits": 4,
            "prompts_sent": 4,
            "conversions": 1,
            "conversion_rate": 0.25,
        }
    ]
    table = skene_pg("report", "--database-url", db_url, env=cli_env())
    assert "free_tier_limit" in table.stdout and "25.0%" in table.stdout


def test_a_window_that_is_no_interval_falls_back_and_never_blocks_set_plan(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    conn.execute('UPDATE skene.loops SET config = config || \'{"attribution_window": "soon"}\'')
    job = sent_prompt(conn, db_url, fake_resend, "acct_1")
    conn.execute("SELECT skene.set_plan('acct_1', 'pro')")
    assert conversions(conn) == [("acct_1", "free", "pro", job, "free_tier_limit")]
