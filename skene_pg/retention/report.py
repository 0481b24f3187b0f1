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
    return conn.execute(
        "SELECT r.loop_name, count(*), count(*) FILTER (WHERE r.state = 'failed'), "
        "       sum(r.queued), sum(r.held_out), max(r.slot), "
        "       (SELECT x.error FROM skene.loop_runs x WHERE x.loop_name = r.loop_name "
        "         ORDER BY x.slot DESC LIMIT 1) "
        "  FROM skene.loop_runs r GROUP BY r.loop_name ORDER BY r.loop_name"
    ).fetchall()


def milestone_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT loop_name, threshold, count(*), count(job_id) FROM skene.milestones_reached "
        "GROUP BY loop_name, threshold ORDER BY loop_name, threshold"
    ).fetchall()
