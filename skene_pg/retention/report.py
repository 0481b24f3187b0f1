"""What retention and milestone loops achieved, as rows: reactivation per arm, lift,
runs, milestones reached. skene_pg/report.py presents them with the freemium funnel."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg


def retention_rows(conn: psycopg.Connection, window_days: int = 7) -> list[tuple[Any, ...]]:
    """Per retention loop and arm (emailed, holdout): episodes measured (their window
    has closed), those reactivated within `window_days` of one of their messages, the
    rate, and episodes still inside their window (not counted yet)."""
    return conn.execute(
        "SELECT loop_name, arm, measured, reactivated, rate, open FROM skene.retention_report(%s)",
        (window_days,),
    ).fetchall()


def lift(rows: list[tuple[Any, ...]]) -> dict[str, Decimal | None]:
    """Reactivation rate emailed minus holdout, per loop (None without both arms)."""
    rates: dict[str, dict[str, Decimal]] = {}
    for loop, arm, _, _, rate, _ in rows:
        rates.setdefault(loop, {})[arm] = rate
    return {
        loop: (arms["emailed"] - arms["holdout"])
        if "emailed" in arms and "holdout" in arms
        else None
        for loop, arms in rates.items()
    }


def run_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Per loop: runs, failed, queued, held out (the runs housekeeping deleted
    included, from skene.loop_run_totals), the newest slot and its error."""
    return conn.execute(
        "WITH counted AS ("
        "  SELECT r.loop_name, count(*) AS runs, count(*) FILTER (WHERE r.state = 'failed') "
        "         AS failed, sum(r.queued) AS queued, sum(r.held_out) AS held_out, "
        "         max(r.slot) AS last_slot "
        "    FROM skene.loop_runs r GROUP BY r.loop_name "
        "  UNION ALL "
        "  SELECT t.loop_name, t.runs, t.failed, t.queued, t.held_out, NULL "
        "    FROM skene.loop_run_totals t) "
        "SELECT c.loop_name, sum(c.runs)::bigint, sum(c.failed)::bigint, "
        "       sum(c.queued)::bigint, sum(c.held_out)::bigint, max(c.last_slot), "
        "       (SELECT x.error FROM skene.loop_runs x WHERE x.loop_name = c.loop_name "
        "         ORDER BY x.slot DESC LIMIT 1) "
        "  FROM counted c GROUP BY c.loop_name ORDER BY c.loop_name"
    ).fetchall()


def milestone_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT loop_name, threshold, count(*), count(job_id) FROM skene.milestones_reached "
        "GROUP BY loop_name, threshold ORDER BY loop_name, threshold"
    ).fetchall()
