"""`skene-pg housekeep`: run housekeeping now (the worker runs it daily anyway)."""

from __future__ import annotations

import click

from skene_pg import db
from skene_pg.cli.common import database_url_option, fails_cleanly
from skene_pg.cli.output import to_json


@click.command("housekeep")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@fails_cleanly
def housekeep_command(database_url: str | None, as_json: bool) -> None:
    """Delete finished work older than [housekeeping] keep_finished, now.

    `skene-pg listen` does this once a day across all workers; run it by hand after an
    upgrade or to shrink the tables at once. It deletes in short batches, each its own
    transaction, and keeps what reports and dedupes read (docs/worker.md,
    "Housekeeping").

    \b
    Examples:
      skene-pg housekeep
      skene-pg housekeep --json     # {"jobs": 120, "job_attempts": 131, ...}
    """
    from skene_pg.housekeeping import housekeep

    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        result = housekeep(conn)
    if as_json:
        click.echo(to_json(result.deleted))
        return
    for what, deleted in result.deleted.items():
        click.echo(f"{what}: {deleted}")
