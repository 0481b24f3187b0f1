"""`skene-pg jobs ...`: list, show, retry and cancel jobs."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from skene_pg import db
from skene_pg.cli.common import database_url_option, fails_cleanly
from skene_pg.cli.output import format_table, to_json
from skene_pg.jobs import admin, protocol

STATES = ("available", "running", "retryable", "succeeded", "skipped", "dead", "cancelled")


@click.group("jobs")
def jobs_group() -> None:
    """Look at the job queue, retry dead jobs and cancel waiting ones.

    \b
    Examples:
      skene-pg jobs list --state dead
      skene-pg jobs show 42
      skene-pg jobs retry 42
    """


@jobs_group.command("list")
@database_url_option
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--kind", help="Only jobs of this kind (email, ...).")
@click.option("--customer", "customer_id", help="Only this customer's jobs.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for machines.")
@fails_cleanly
def jobs_list(
    database_url: str | None,
    state: str | None,
    kind: str | None,
    customer_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first.

    ATTEMPT is attempts of max_attempts; DEFERRED counts the runs put off by quiet
    hours or a provider's rate limit, which use up no attempt.

    \b
    Examples:
      skene-pg jobs list
      skene-pg jobs list --state dead --kind email --json
    """
    with db.connect(db.require_url(database_url)) as conn:
        rows = admin.list_jobs(conn, state=state, kind=kind, customer_id=customer_id, limit=limit)
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no jobs")
        return
    # attempts of max_attempts; deferrals (quiet hours, rate limits) are not attempts
    click.echo(
        format_table(
            [
                "id",
                "kind",
                "state",
                "customer",
                "loop",
                "attempt",
                "deferred",
                "run_at",
                "last_error",
            ],
            [
                (
                    r["id"],
                    r["kind"],
                    r["state"],
                    r["customer_id"],
                    r["loop_name"],
                    f"{r['attempt']}/{r['max_attempts']}",
                    r["deferrals"],
                    r["run_at"],
                    _short(r["last_error"]),
                )
                for r in rows
            ],
        )
    )


def _short(text: str | None, width: int = 60) -> str | None:
    if text is None or len(text) <= width:
        return text
    return text[: width - 1] + "…"


@jobs_group.command("show")
@database_url_option
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for machines.")
@fails_cleanly
def jobs_show(database_url: str | None, job_id: int, as_json: bool) -> None:
    """Show one job with its payload and every run's outcome and error.

    A run deferred by quiet hours or a provider's rate limit is listed (outcome
    deferred) but counted in `deferrals`, not in `attempt`.

    \b
    Example:
      skene-pg jobs show 42
    """
    with db.connect(db.require_url(database_url)) as conn:
        job = admin.get_job(conn, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id} (list them with `skene-pg jobs list`)")
    if as_json:
        click.echo(to_json(job))
        return
    attempts = job.pop("attempts")
    for key in (
        "id",
        "kind",
        "state",
        "customer_id",
        "loop_name",
        "dedupe_key",
        "idempotency_key",
        "attempt",
        "max_attempts",
        "deferrals",
        "run_at",
        "locked_until",
        "locked_by",
        "created_at",
        "finished_at",
        "last_error",
    ):
        value = job.get(key)
        click.echo(f"{key:>15}  {'-' if value is None else value}")
    click.echo(f"{'payload':>15}  {json.dumps(job.get('payload'), default=str)}")
    click.echo("")
    if not attempts:
        click.echo("no attempts yet")
        return
    # every run of the job, numbered together: attempts and deferrals
    click.echo(
        format_table(
            ["run", "worker", "started_at", "took", "outcome", "error"],
            [
                (
                    a["attempt"],
                    a["worker"],
                    a["started_at"],
                    _took(a),
                    a["outcome"] or "running",
                    a["error"],
                )
                for a in attempts
            ],
        )
    )


def _took(attempt: dict[str, Any]) -> str | None:
    if attempt["finished_at"] is None:
        return None
    took: timedelta = attempt["finished_at"] - attempt["started_at"]
    return f"{took.total_seconds():.2f}s"


@jobs_group.command("retry")
@database_url_option
@click.argument("job_id", type=int)
@fails_cleanly
def jobs_retry(database_url: str | None, job_id: int) -> None:
    """Run a dead, cancelled or skipped job again now (with one more attempt).

    \b
    Example:
      skene-pg jobs retry 42
    """
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        protocol.retry(conn, job_id)
    click.echo(f"job {job_id} queued again")


@jobs_group.command("cancel")
@database_url_option
@click.argument("job_id", type=int)
@fails_cleanly
def jobs_cancel(database_url: str | None, job_id: int) -> None:
    """Cancel a job that has not finished (a send already in flight may still land).

    \b
    Example:
      skene-pg jobs cancel 42
    """
    with db.connect(db.require_url(database_url), autocommit=True) as conn:
        changed = protocol.cancel(conn, job_id)
    click.echo(f"job {job_id} cancelled" if changed else f"job {job_id} was cancelled already")
