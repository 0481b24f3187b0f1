"""`skene-pg demo`: the growth loops end to end on a throwaway local database.

Starts the local cluster, creates a fresh `skene_demo` database, migrates it, applies
examples/skene.toml, plays a free customer calling the API until blocked, and runs the
worker once with the outbox provider, so the upgrade prompt lands as an .eml file.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import click
import psycopg
from psycopg import sql

from skene_pg import db, devdb, migrations
from skene_pg.cli.output import format_table
from skene_pg.resources import resource_dir

DEMO_DB = "skene_demo"
CUSTOMER = "cus_demo_free"
CALLS = 103  # the example's free plan allows 100 api_calls per 30 days


def fresh_database(cluster: devdb.DevCluster) -> str:
    with db.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DB))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
    return cluster.url(DEMO_DB)


def play_free_customer(conn: psycopg.Connection) -> list[tuple]:
    conn.execute(
        "SELECT skene.identify(%s, email => %s, name => %s)", (CUSTOMER, "ada@example.com", "Ada")
    )
    rows = []
    for call in range(1, CALLS + 1):
        decision = conn.execute(
            "SELECT allowed, reason, used, usage_limit, remaining, resets_at "
            "FROM skene.check_and_increment(%s, 'api_calls')",
            (CUSTOMER,),
        ).fetchone()
        assert decision is not None
        rows.append((call, *decision))
    return rows


def boundary(rows: list[tuple], around: int = 100, keep: int = 3) -> list[tuple]:
    """The first calls, the calls around the limit, and an ellipsis row between."""
    head = rows[:keep]
    tail = [r for r in rows if around - keep < r[0]]
    return [*head, ("...", "", "", "", "", "", ""), *tail]


def show_email(path: Path) -> None:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    for header in ("From", "To", "Subject", "List-Unsubscribe"):
        click.echo(f"   {header}: {message[header]}")
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    click.echo("   " + "\n   ".join(text.strip().splitlines()))


def run_demo(directory: str | None, outbox: str) -> None:
    """Every step of `skene-pg demo`, printed as it goes."""
    from skene_pg.config import apply_config, load_config
    from skene_pg.email.handler import drain_to_outbox

    cluster = devdb.DevCluster(Path(directory) if directory else devdb.default_directory())
    click.secho("1. local PostgreSQL", bold=True)
    cluster.start()
    url = fresh_database(cluster)
    click.echo(f"   {url}  (pg_cron {'preloaded' if cluster.has_pg_cron else 'not installed'})")

    click.secho("2. skene-pg migrate", bold=True)
    migrations.upgrade(url)
    click.echo(f"   skene schema at revision {migrations.current_revision(url)}")

    example = resource_dir("examples") / "skene.toml"
    click.secho(f"3. skene-pg apply {example.name}", bold=True)
    with db.connect(url) as conn:
        for change in apply_config(conn, load_config(example)):
            click.echo(f"   {change}")

    click.secho(f"4. a free customer ({CUSTOMER}) calls the API {CALLS} times", bold=True)
    with db.connect(url, autocommit=True) as conn:
        rows = play_free_customer(conn)
        headers = ["call", "allowed", "reason", "used", "limit", "remaining", "resets_at"]
        click.echo(format_table(headers, boundary(rows)))
        blocked = sum(1 for r in rows if not r[1])
        click.echo(f"   {CALLS - blocked} allowed, {blocked} blocked (blocked calls count nothing)")

        click.secho(
            "5. the jobs queued: milestones at 10 and 50 calls, the prompt at the first block",
            bold=True,
        )
        jobs = conn.execute(
            "SELECT id, kind, state, customer_id, loop_name, payload->>'template', dedupe_key "
            "FROM skene.jobs ORDER BY id"
        ).fetchall()
        click.echo(
            format_table(
                ["id", "kind", "state", "customer", "loop", "template", "dedupe_key"], jobs
            )
        )

    folder = Path(outbox).resolve()
    click.secho(f"6. skene-pg listen --drain --email-provider outbox ({folder})", bold=True)
    before = set(folder.glob("*.eml")) if folder.exists() else set()
    counts = drain_to_outbox(url, str(folder))
    click.echo("   " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    for path in sorted(set(folder.glob("*.eml")) - before):
        click.echo(f"   {path.name}")
        show_email(path)
    with db.connect(url) as conn:
        state = conn.execute("SELECT state FROM skene.jobs ORDER BY id").fetchall()
    click.echo(f"   job states now: {', '.join(s for (s,) in state)}")
    from skene_pg.billing.demo import show_billing
    from skene_pg.retention.demo import show_retention

    show_retention(url)
    show_billing(url)
    click.echo(f"\nExplore it: psql {url}")
