"""`skene-pg loops list|run`: the loops in the database, and one retention slot run
by hand."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

import click
from psycopg.rows import dict_row

from skene_pg import db
from skene_pg.cli.common import CommandError, database_url_option, fails_cleanly
from skene_pg.cli.output import format_table, to_json

_LIST = """
SELECT l.name, l.type, l.feature, l.enabled, l.config ->> 'schedule' AS schedule,
       CASE WHEN l.type <> 'retention' THEN NULL
            WHEN l.cron_job IS NOT NULL THEN 'pg_cron' ELSE 'worker' END AS scheduled_by,
       r.slot AS last_slot, r.state AS last_state, r.queued AS last_queued
  FROM skene.loops l
  LEFT JOIN LATERAL (SELECT x.slot, x.state, x.queued FROM skene.loop_runs x
                      WHERE x.loop_name = l.name ORDER BY x.slot DESC LIMIT 1) r ON true
 ORDER BY l.name
"""


@click.group("loops")
def loops_group() -> None:
    """The growth loops skene.toml defined, and running a retention loop by hand.

    \b
    Examples:
      skene-pg loops list
      skene-pg loops run dormant_users
    """


@loops_group.command("list")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for machines.")
@fails_cleanly
def loops_list(database_url: str | None, as_json: bool) -> None:
    """List the loops with their schedule, who runs it (pg_cron or the worker) and
    their last run.

    \b
    --json prints an array of {name, type, feature, enabled, schedule, scheduled_by,
    last_slot, last_state, last_queued}.

    \b
    Example:
      skene-pg loops list
    """
    with db.connect(db.require_url(database_url)) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_LIST).fetchall()
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no loops (define them in skene.toml and run skene-pg apply)")
        return
    keys = list(rows[0])
    click.echo(format_table(keys, [[r[k] for k in keys] for r in rows]))


@loops_group.command("run")
@database_url_option
@click.argument("name")
@click.option(
    "--slot",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M"]),
    help="The schedule's minute to run for, e.g. 2026-12-01T09:00+00:00 [default: now].",
)
@click.option("--json", "as_json", is_flag=True, help="The run as one JSON object.")
@fails_cleanly
def loops_run(database_url: str | None, name: str, slot: datetime | None, as_json: bool) -> None:
    """Run retention loop NAME for one slot now, and show its run.

    A slot runs once, whoever runs it: running a slot that pg_cron or the worker
    already ran shows that first run and queues nothing. Exits 1 when the run failed.

    \b
    --json prints {loop_name, slot, state, queued, held_out, error}.

    \b
    Examples:
      skene-pg loops run dormant_users
      skene-pg loops run dormant_users --slot 2026-12-01T09:00+00:00
    """
    from skene_pg.retention.schedules import run_slot

    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT type, coalesce(config ->> 'segment_timeout', config ->> 'timeout') "
            "FROM skene.loops WHERE name = %s",
            (name,),
        ).fetchone()
        if row is None:
            raise CommandError(f"no loop {name!r} (list them with `skene-pg loops list`)")
        if row[0] != "retention":
            raise CommandError(
                f"loop {name!r} is a {row[0]} loop: only retention loops run on a schedule"
            )
        if slot is not None and slot.tzinfo is None:
            raise CommandError("--slot needs a UTC offset, e.g. 2026-12-01T09:00+00:00")
        run = run_slot(conn, name, slot, row[1])
    if as_json:
        click.echo(to_json(asdict(run)))
    else:
        click.echo(format_table(list(asdict(run)), [list(asdict(run).values())]))
    if run.state == "failed":
        raise CommandError(f"loop {name} failed for slot {run.slot.isoformat()}: {run.error}")
