"""`skene-pg dev-db ...` (a throwaway local PostgreSQL) and `skene-pg demo` (the
loops end to end on it)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skene_pg import devdb
from skene_pg.cli.common import NO, OK, fails_cleanly


@click.group("dev-db")
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
    envvar="SKENE_DEVDB_DIR",
    show_envvar=True,
    help="Cluster folder [default: .skene/dev-db, as root /tmp/skene-pg-dev-<hash>].",
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
        sys.exit(NO)
    state = "running" if cluster.is_running() else "stopped"
    click.echo(f"{state}: {cluster.url()} ({cluster.directory})")
    sys.exit(OK if state == "running" else NO)


@dev_db.command("destroy")
@dir_option
@fails_cleanly
def dev_db_destroy(directory: Path | None) -> None:
    """Stop the local cluster and delete its folder and data."""
    cluster = _cluster(directory)
    cluster.destroy()
    click.echo(f"destroyed {cluster.directory}", err=True)


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(), help="Local cluster folder.")
@click.option(
    "--outbox",
    default="outbox",
    show_default=True,
    type=click.Path(),
    help="Folder the demo's emails are written to.",
)
@fails_cleanly
def demo_command(directory: str | None, outbox: str) -> None:
    """Run the loops end to end on a throwaway local PostgreSQL.

    It starts the local cluster, creates a fresh `skene_demo` database, migrates it,
    applies the example skene.toml, plays a free customer calling the API until
    blocked, and runs the worker once with the outbox provider, so the upgrade prompt
    lands as an .eml file; then retention and billing.

    \b
    Example:
      skene-pg demo      # or: make demo
    """
    from skene_pg.demo import run_demo

    run_demo(directory, outbox)
