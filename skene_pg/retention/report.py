"""Retention and milestone sections of `skene-pg report` (the command lives with
billing, skene_pg/billing/cli.py, and calls print_sections / report_json)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click
import psycopg

from skene_pg.tables import format_table

RETENTION_HEADERS = ["loop", "arm", "measured", "reactivated", "rate", "open"]
MILESTONE_HEADERS = ["loop", "threshold", "customers", "emails queued"]
RUN_HEADERS = ["loop", "runs", "failed", "queued", "held out", "last run", "last error"]


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


def print_sections(conn: psycopg.Connection, window_days: int = 7) -> None:
    rows = retention_rows(conn, window_days)
    click.secho(f"Retention: reactivated within {window_days} days", bold=True)
    if rows:
        click.echo(format_table(RETENTION_HEADERS, rows))
        click.echo(
            f"measured: episodes whose {window_days}-day window has closed; "
            "open: not yet, so not counted"
        )
    else:
        click.echo("no retention messages yet")
    for loop, value in lift(rows).items():
        if value is not None:
            click.echo(f"lift {loop}: {value * 100:+.1f} points (emailed vs holdout)")
    runs = run_rows(conn)
    if runs:
        click.echo(format_table(RUN_HEADERS, runs))
    click.secho("Milestones", bold=True)
    milestones = milestone_rows(conn)
    click.echo(format_table(MILESTONE_HEADERS, milestones) if milestones else "none reached yet")


def report_json(conn: psycopg.Connection, window_days: int = 7) -> dict[str, Any]:
    """The same sections for `skene-pg report --json`."""
    rows = retention_rows(conn, window_days)
    return {
        "retention": [dict(zip(RETENTION_HEADERS, map(_plain, r), strict=True)) for r in rows],
        "lift": {k: _plain(v) for k, v in lift(rows).items()},
        "milestones": [dict(zip(MILESTONE_HEADERS, r, strict=True)) for r in milestone_rows(conn)],
    }


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value
