"""`skene-pg report`: how every loop does, in one place. Freemium: the funnel (limit
hits, prompts sent, conversions attributed). Retention: reactivation per arm, lift
over the holdout, runs. Milestones: customers who reached each threshold.

The same sections as text (`print_report`) and as one JSON object (`report_json`),
whose keys are snake_case and whose shape is documented in the command's help."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click
import psycopg

from skene_pg.billing.queries import funnel
from skene_pg.cli.output import format_table
from skene_pg.retention.report import lift, milestone_rows, retention_rows, run_rows

FUNNEL_KEYS = ("loop_name", "feature", "limit_hits", "prompts_sent", "conversions")
RETENTION_KEYS = ("loop_name", "arm", "measured", "reactivated", "rate", "open")
RUN_KEYS = ("loop_name", "runs", "failed", "queued", "held_out", "last_slot", "last_error")
MILESTONE_KEYS = ("loop_name", "threshold", "customers", "emails_queued")


def report_json(conn: psycopg.Connection, window_days: int = 7) -> dict[str, Any]:
    retention = retention_rows(conn, window_days)
    return {
        "funnel": [
            {**{k: r[k] for k in FUNNEL_KEYS}, "conversion_rate": _number(r["conversion_rate"])}
            for r in funnel(conn)
        ],
        "retention": _records(RETENTION_KEYS, retention),
        "lift": [
            {"loop_name": loop, "lift": _number(value)} for loop, value in lift(retention).items()
        ],
        "runs": _records(RUN_KEYS, run_rows(conn)),
        "milestones": _records(MILESTONE_KEYS, milestone_rows(conn)),
    }


def print_report(conn: psycopg.Connection, window_days: int = 7) -> None:
    click.secho("Freemium: upgrade prompts and conversions", bold=True)
    print_funnel(funnel(conn))
    print_retention(conn, window_days)


def print_funnel(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no freemium loops (add one to skene.toml and run skene-pg apply)")
        return
    click.echo(
        format_table(
            ["loop", "feature", "limit hits", "prompts sent", "conversions", "rate"],
            [
                (
                    *(r[k] for k in FUNNEL_KEYS),
                    "-" if r["conversion_rate"] is None else f"{float(r['conversion_rate']):.1%}",
                )
                for r in rows
            ],
        )
    )


def print_retention(conn: psycopg.Connection, window_days: int = 7) -> None:
    rows = retention_rows(conn, window_days)
    click.secho(f"Retention: reactivated within {window_days} days", bold=True)
    if rows:
        click.echo(format_table(["loop", "arm", "measured", "reactivated", "rate", "open"], rows))
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
        headers = ["loop", "runs", "failed", "queued", "held out", "last run", "last error"]
        click.echo(format_table(headers, runs))
    click.secho("Milestones", bold=True)
    milestones = milestone_rows(conn)
    click.echo(
        format_table(["loop", "threshold", "customers", "emails queued"], milestones)
        if milestones
        else "none reached yet"
    )


def _records(keys: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(keys, map(_number, row), strict=True)) for row in rows]


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value
