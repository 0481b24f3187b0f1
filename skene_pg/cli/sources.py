"""`skene-pg sources list|backfill`: the app tables skene reads through triggers, and
bringing skene up to date with them again."""

from __future__ import annotations

import click
from psycopg.rows import dict_row

from skene_pg import db
from skene_pg.cli.common import CommandError, database_url_option, fails_cleanly
from skene_pg.cli.output import format_table, to_json

_LIST = """
SELECT s.name, s.kind, s.relation::text AS "table", s.feature,
       skene.source_trigger_name(s.name) AS "trigger", s.updated_at
  FROM skene.sources s ORDER BY s.name
"""


@click.group("sources")
def sources_group() -> None:
    """The app's tables that feed skene ([sources.*] and counted features in skene.toml).

    `skene-pg apply` installs and backfills them; `backfill` runs a backfill again.

    \b
    Examples:
      skene-pg sources list
      skene-pg sources backfill subscriptions
    """


@sources_group.command("list")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for machines.")
@fails_cleanly
def sources_list(database_url: str | None, as_json: bool) -> None:
    """List the sources: kind, table and the trigger installed on it.

    \b
    Example:
      skene-pg sources list --json    # [{"name": "customers", "kind": "customers", ...}]
    """
    with db.connect(db.require_url(database_url)) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_LIST).fetchall()
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no sources: add [sources.*] or a feature's count to skene.toml and apply it")
        return
    columns = ["name", "kind", "table", "feature", "trigger"]
    click.echo(format_table(columns, [[row[c] for c in columns] for row in rows]))


@sources_group.command("backfill")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@fails_cleanly
def sources_backfill(names: tuple[str, ...], database_url: str | None, as_json: bool) -> None:
    """Bring skene up to date with the sources' tables (all, or those NAMEd), in one
    transaction: customers identified again, plans recomputed from subscriptions,
    activity taken, counted features recounted. Writes to those tables wait until it
    commits. Run it as the schema's owner (as `apply`).

    \b
    Examples:
      skene-pg sources backfill
      skene-pg sources backfill count:projects --json   # {"count:projects": 42}
    """
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        known = [row[0] for row in conn.execute("SELECT name FROM skene.sources ORDER BY name")]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CommandError(
                f"no source {', '.join(unknown)}; sources: {', '.join(known) or 'none'}"
            )
        counts = {}
        with conn.transaction():
            for name in names or known:
                row = conn.execute("SELECT skene.backfill_source(%s)", (name,)).fetchone()
                counts[name] = row[0] if row else 0
    if as_json:
        click.echo(to_json(counts))
        return
    for name, count in counts.items():
        click.echo(f"{name}: {count} backfilled")
