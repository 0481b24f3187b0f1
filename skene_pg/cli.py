"""The `skene-pg` command: thin, it parses, calls and prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from skene_pg import __version__, db, devdb, migrations
from skene_pg.cli_support import database_url_option, fails_cleanly


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skene-pg")
def main() -> None:
    """skene-pg: usage limits, upgrade prompts, plan sync and retention loops inside
    your own PostgreSQL.

    \b
    Typical use:
      skene-pg migrate                 # create or upgrade the skene schema
      skene-pg apply skene.toml        # plans, features, limits and loops
      psql -c "SELECT * FROM skene.check_and_increment('cus_1', 'api_calls')"
    """


# --------------------------------------------------------------------------------
# migrate
# --------------------------------------------------------------------------------


@main.command()
@database_url_option
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print the SQL instead of running it (for Django, Rails, Flyway, ...).",
)
@click.option(
    "--downgrade",
    "downgrade_to",
    metavar="REVISION",
    help="Downgrade to REVISION ('base' removes everything but the empty schema).",
)
@click.option(
    "--from",
    "from_revision",
    metavar="REVISION",
    help="With --sql: the revision the database is at now (default: none).",
)
@fails_cleanly
def migrate(
    database_url: str | None, as_sql: bool, downgrade_to: str | None, from_revision: str | None
) -> None:
    """Create or upgrade the `skene` schema to the newest revision.

    Idempotent: running it on an up-to-date database changes nothing. alembic's
    version table is kept in the skene schema, so your app's own alembic_version is
    never touched.

    \b
    Examples:
      skene-pg migrate --database-url postgresql://app@localhost/app
      skene-pg migrate --sql > skene.sql            # review or hand to your tool
      skene-pg migrate --sql --from 0001            # only what comes after 0001
      skene-pg migrate --downgrade base
    """
    if as_sql:
        if downgrade_to:
            start = from_revision or migrations.head_revision()
            click.echo(migrations.downgrade_sql(start, downgrade_to), nl=False)
        else:
            click.echo(migrations.upgrade_sql(from_revision), nl=False)
        return
    url = db.require_url(database_url)
    before = migrations.current_revision(url)
    if downgrade_to:
        migrations.downgrade(url, downgrade_to)
    else:
        migrations.upgrade(url)
    after = migrations.current_revision(url)
    if before == after:
        click.echo(f"skene schema already at {after or 'base'}: nothing to do")
    else:
        click.echo(f"skene schema migrated: {before or 'base'} -> {after or 'base'}")


# --------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------


@main.command()
@database_url_option
@click.argument("customer")
@click.argument("feature")
@click.option("--amount", type=int, default=1, show_default=True, help="Units to count.")
@click.option(
    "--increment",
    is_flag=True,
    help="Count the usage (check_and_increment) instead of only asking (check).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@fails_cleanly
def check(
    database_url: str | None,
    customer: str,
    feature: str,
    amount: int,
    increment: bool,
    as_json: bool,
) -> None:
    """Ask whether CUSTOMER may use FEATURE (and with --increment, count it).

    \b
    Example:
      skene-pg check cus_42 api_calls --increment
    """
    function = "check_and_increment" if increment else "check"
    with db.connect(db.require_url(database_url)) as conn:
        cursor = conn.execute(
            f"SELECT * FROM skene.{function}(%s, %s, %s)", (customer, feature, amount)
        )
        row = cursor.fetchone()
        names = [column.name for column in cursor.description or []]
    decision = dict(zip(names, row or (), strict=True))
    if as_json:
        click.echo(json.dumps(decision, default=str))
        return
    for key, value in decision.items():
        click.echo(f"{key:>12}  {'' if value is None else value}")
    sys.exit(0 if decision.get("allowed") else 2)


# --------------------------------------------------------------------------------
# dev-db
# --------------------------------------------------------------------------------


@main.group("dev-db")
def dev_db() -> None:
    """A throwaway local PostgreSQL for trying skene-pg (never for production).

    It uses the machine's PostgreSQL binaries, listens on 127.0.0.1 only, trusts
    local connections and preloads pg_cron when installed. As root it runs the
    server as an unprivileged user (initdb refuses root). Its folder is
    .skene/dev-db (as root: /tmp/skene-pg-dev-<hash>), or SKENE_DEVDB_DIR.
    """


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Cluster folder [env: SKENE_DEVDB_DIR].",
)


def _cluster(directory: Path | None) -> devdb.DevCluster:
    return devdb.DevCluster(directory or devdb.default_directory())


@dev_db.command("start")
@dir_option
@fails_cleanly
def dev_db_start(directory: Path | None) -> None:
    """Create (first time) and start the local cluster; prints its URL.

    \b
    Example:
      export SKENE_DATABASE_URL=$(skene-pg dev-db start)
    """
    cluster = _cluster(directory)
    url = cluster.start()
    cron = "on" if cluster.has_pg_cron else "not installed"
    click.echo(f"started: {cluster.directory} (pg_cron {cron})", err=True)
    click.echo(url)


@dev_db.command("stop")
@dir_option
@fails_cleanly
def dev_db_stop(directory: Path | None) -> None:
    """Stop the local cluster (its data stays for the next start)."""
    _cluster(directory).stop()
    click.echo("stopped", err=True)


@dev_db.command("url")
@dir_option
@fails_cleanly
def dev_db_url(directory: Path | None) -> None:
    """Print the local cluster's database URL.

    \b
    Example:
      psql "$(skene-pg dev-db url)"
    """
    cluster = _cluster(directory)
    if not cluster.is_initialized():
        raise click.ClickException("no local cluster yet: run `skene-pg dev-db start`")
    click.echo(cluster.url())


@dev_db.command("status")
@dir_option
@fails_cleanly
def dev_db_status(directory: Path | None) -> None:
    """Say whether the local cluster exists and runs."""
    cluster = _cluster(directory)
    if not cluster.is_initialized():
        click.echo(f"no cluster in {cluster.directory}")
        sys.exit(3)
    state = "running" if cluster.is_running() else "stopped"
    click.echo(f"{state}: {cluster.url()} ({cluster.directory})")
    sys.exit(0 if state == "running" else 3)


@dev_db.command("destroy")
@dir_option
@fails_cleanly
def dev_db_destroy(directory: Path | None) -> None:
    """Stop the local cluster and delete its folder and data."""
    cluster = _cluster(directory)
    cluster.destroy()
    click.echo(f"destroyed {cluster.directory}", err=True)


# --------------------------------------------------------------------------------
# Commands that live beside the code they drive (one line each).
# --------------------------------------------------------------------------------
from skene_pg.apply import apply_command  # noqa: E402
from skene_pg.billing.cli import billing_group, report_command  # noqa: E402
from skene_pg.demo import demo_command  # noqa: E402
from skene_pg.worker_cli import jobs_group, listen_command, templates_group  # noqa: E402

main.add_command(demo_command)
main.add_command(listen_command)
main.add_command(jobs_group)
main.add_command(templates_group)
main.add_command(apply_command)
main.add_command(billing_group)
main.add_command(report_command)

if __name__ == "__main__":  # pragma: no cover
    main()
