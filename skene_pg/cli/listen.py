"""`skene-pg listen`: reads options and the environment, builds the worker with the
job kinds and periodic tasks of email, billing and retention, and runs it."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from skene_pg import db, migrations
from skene_pg.cli.common import CommandError, database_url_option, fails_cleanly
from skene_pg.cli.email_options import (
    email_provider_option,
    email_settings,
    link_options,
    listen_database_url_option,
    outbox_dir_option,
    templates_option,
)
from skene_pg.cli.http_options import http_options
from skene_pg.http_process import BindError, WebhookProcess, bind, parse_address
from skene_pg.http_server import HttpLimits
from skene_pg.jobs.worker import Worker, WorkerCrashed, WorkerSettings
from skene_pg.logs import setup_logging

log = logging.getLogger("skene_pg.worker")


@click.command("listen")
@database_url_option
@listen_database_url_option
@email_provider_option
@link_options
@outbox_dir_option
@templates_option
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    envvar="SKENE_EMAIL_RATE_LIMIT",
    show_envvar=True,
    metavar="PER_SECOND",
    help="Client-side limit on email requests per second; "
    "0 = off [default: 2 for resend, off otherwise].",
)
@click.option(
    "--send-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    envvar="SKENE_EMAIL_TIMEOUT",
    show_envvar=True,
    metavar="SECONDS",
    help="Timeout of one email request.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    envvar="SKENE_WORKER_CONCURRENCY",
    show_envvar=True,
    help="Sends at once.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    envvar="SKENE_POLL_INTERVAL",
    show_envvar=True,
    metavar="SECONDS",
    help="Look for due jobs (and expired leases) this often without NOTIFY.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    envvar="SKENE_LEASE",
    show_envvar=True,
    metavar="SECONDS",
    help="How long a claimed job stays ours without news; extended every "
    "lease/3 while it runs. A crashed worker's jobs run again after it.",
)
@click.option(
    "--retry-base",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    envvar="SKENE_RETRY_BASE",
    show_envvar=True,
    metavar="SECONDS",
    help="First retry after about this long, doubling each time, with jitter.",
)
@click.option(
    "--http",
    "http_address",
    envvar="SKENE_HTTP",
    show_envvar=True,
    metavar="HOST:PORT",
    help="Also serve POST /webhooks/stripe (STRIPE_WEBHOOK_SECRET) and "
    "/webhooks/resend (RESEND_WEBHOOK_SECRET), from a process of its own.",
)
@http_options
@click.option(
    "--drain",
    is_flag=True,
    help="Run every job that is due now, then exit (cron-style runs, tests).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="SKENE_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-json",
    is_flag=True,
    envvar="SKENE_LOG_JSON",
    show_envvar=True,
    help="One JSON object per log line.",
)
@fails_cleanly
def listen_command(
    database_url: str | None,
    listen_database_url: str | None,
    email_provider: str,
    email_from: str | None,
    app_url: str | None,
    upgrade_url: str | None,
    unsubscribe_url: str | None,
    outbox_dir: str,
    templates_dir: Path | None,
    rate_limit: float | None,
    send_timeout: float,
    concurrency: int,
    poll_interval: float,
    lease: float,
    retry_base: float,
    http_address: str | None,
    http_database_url: str | None,
    http_limits: HttpLimits,
    drain: bool,
    log_level: str,
    log_json: bool,
) -> None:
    """Run the worker: send the queued emails, exactly once each.

    It LISTENs for new jobs, also polls every --poll-interval, claims due jobs with a
    lease, sends --concurrency at a time, retries failures with exponential backoff,
    honours a 429's Retry-After, and sends a permanent error (bad address, 4xx) to
    `dead` with its reason. SIGTERM stops claiming and lets running sends finish. Several
    workers may run at once. Through PgBouncer in transaction mode, give it a direct
    --listen-database-url for LISTEN. If one of its threads dies of an unexpected
    error, it stops and exits 1, naming the thread.

    Secrets come from the environment only: RESEND_API_KEY (and RESEND_API_URL),
    SKENE_SMTP_URL (smtp://user:password@host:587, or smtps://), and
    SKENE_UNSUBSCRIBE_SECRET (signs the token in unsubscribe links). With
    STRIPE_API_KEY it also syncs plans from Stripe and reports metered usage;
    --http serves the Stripe and Resend webhooks from a child process with its own
    limits and database pool (--http-*), so a flood of requests can't slow or stop
    the email.

    \b
    Examples:
      skene-pg listen                                   # outbox: .eml files in ./outbox
      skene-pg listen --http 0.0.0.0:8787               # + POST /webhooks/stripe, /resend
      RESEND_API_KEY=re_... skene-pg listen --email-provider resend \\
          --email-from 'Acme <hello@acme.com>' --app-url https://app.acme.com
      skene-pg listen --drain                           # send what is due, then exit
      SKENE_DATABASE_URL=postgresql://app@pgbouncer:6432/app \\
      SKENE_LISTEN_DATABASE_URL=postgresql://app@db:5432/app skene-pg listen
    """
    from skene_pg.email import make_provider
    from skene_pg.email.base import ConfigError

    setup_logging(log_level, log_json)
    url = db.require_url(database_url)
    if listen_database_url:
        try:
            conninfo_to_dict(listen_database_url)
        except psycopg.ProgrammingError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen-database-url") from exc
    try:
        settings = email_settings(email_provider, email_from, app_url, upgrade_url, unsubscribe_url)
        provider = make_provider(
            email_provider,
            resend_api_key=os.environ.get("RESEND_API_KEY"),
            resend_api_url=os.environ.get("RESEND_API_URL"),
            smtp_url=os.environ.get("SKENE_SMTP_URL"),
            outbox_dir=outbox_dir,
            rate_limit=rate_limit,
            timeout=send_timeout,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    require_schema(url)
    server = (
        webhook_server(http_database_url or url, http_address, http_limits, log_level, log_json)
        if http_address
        else None
    )
    where = f" ({Path(outbox_dir).resolve()})" if email_provider == "outbox" else ""
    log.info("email provider: %s%s", email_provider, where)
    worker = build_worker(
        url,
        provider,
        settings,
        templates_dir,
        WorkerSettings(
            concurrency=concurrency,
            poll_interval=poll_interval,
            lease=lease,
            drain=drain,
            retry_base=retry_base,
        ),
        listen_url=listen_database_url or None,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        if worker.stopping:  # a second signal: leave now, leases cover the rest
            os._exit(128 + signum)
        log.info("%s: no new jobs; finishing the running ones", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if server is not None:
        server.start()
    try:
        stats = worker.run()
    except WorkerCrashed as exc:  # logged with its traceback by the worker
        raise CommandError(f"{exc}; stopped") from exc
    finally:
        if server is not None:
            server.stop()
    if drain:
        counts = stats.as_dict()
        click.echo(
            "drained: "
            + ", ".join(
                f"{counts[k]} {k}"
                for k in ("succeeded", "skipped", "dead", "retryable", "deferred")
            ),
            err=True,
        )


def build_worker(
    url: str,
    provider: Any,
    settings: Any,
    templates_dir: Path | None,
    worker_settings: WorkerSettings,
    listen_url: str | None = None,
) -> Worker:
    """The worker with every feature registered: email (its handler), billing (the
    Stripe handlers and the daily reconcile, when STRIPE_API_KEY is set), retention
    (its schedules) and the daily housekeeping. `listen_url`: a direct connection for
    LISTEN, when `url` goes through a pooler."""
    from skene_pg import housekeeping
    from skene_pg.billing import registry as billing
    from skene_pg.email.handler import EmailHandler
    from skene_pg.email.templates import TemplateRenderer
    from skene_pg.retention import schedules

    stripe_api_key = os.environ.get("STRIPE_API_KEY")
    handlers = [
        EmailHandler(provider, TemplateRenderer(templates_dir), settings),
        *billing.handlers(stripe_api_key, os.environ.get("STRIPE_API_URL")),
    ]
    periodic = [
        schedules.periodic_task(),
        *billing.periodic_tasks(stripe_api_key),
        housekeeping.periodic_task(),
    ]
    return Worker(url, handlers, worker_settings, periodic=periodic, listen_url=listen_url)


def webhook_server(
    url: str, address: str, limits: HttpLimits, log_level: str, log_json: bool
) -> WebhookProcess:
    """The webhook server's process, not started yet, on a socket bound now: a port in
    use is a one-line error before the worker starts."""
    from skene_pg.webhooks import WebhookSettings, child_settings

    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--http") from exc
    settings = WebhookSettings(
        stripe_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") or None,
        resend_secret=os.environ.get("RESEND_WEBHOOK_SECRET") or None,
    )
    if not settings.paths():
        raise click.ClickException(
            "--http needs STRIPE_WEBHOOK_SECRET and/or RESEND_WEBHOOK_SECRET: without a "
            "secret no webhook can be verified"
        )
    try:
        sock = bind(host, port)
    except BindError as exc:
        raise click.ClickException(f"--http {address}: {exc}") from exc
    server = WebhookProcess(
        "skene_pg.webhooks", child_settings(url, settings, limits, log_level, log_json), sock
    )
    log.info(
        "webhooks on http://%s:%d: %s (max body %d bytes, %d database sessions)",
        host,
        server.port,
        ", ".join(settings.paths()),
        limits.max_body,
        limits.pool_size,
    )
    return server


def require_schema(url: str) -> None:
    """Refuse to start on a schema older than this code needs (run `skene-pg migrate`);
    a newer one (a deploy rolling out) only warns."""
    found = migrations.require_current(url, allow_newer=True)
    if found.newer_than_code:
        log.warning(
            "the skene schema is at %s, newer than this skene-pg (%s): upgrade skene-pg",
            found.current,
            found.head,
        )
