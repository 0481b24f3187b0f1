"""`skene-pg listen`, `skene-pg jobs ...` and `skene-pg templates ...`: thin, they read
options and the environment, build the worker and its email provider, and print."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from skene_pg import db
from skene_pg import queue as q
from skene_pg.cli_support import database_url_option, fails_cleanly
from skene_pg.tables import format_table

log = logging.getLogger("skene_pg.worker")

OUTBOX_DEFAULT_SENDER = "skene-pg <noreply@localhost>"
OUTBOX_DEFAULT_APP_URL = "http://localhost:8000"
STATES = ("available", "running", "retryable", "succeeded", "skipped", "dead", "cancelled")
_LOG_FIELDS = ("job_id", "kind", "attempt", "outcome", "duration_ms")


# --------------------------------------------------------------------------------
# logging: one line per event, with the job's fields; never payloads or keys
# --------------------------------------------------------------------------------


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(
            f"{k}={getattr(record, k)}" for k in _LOG_FIELDS if getattr(record, k, None) is not None
        )
        return f"{line} {extra}" if extra else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(
            {k: getattr(record, k) for k in _LOG_FIELDS if getattr(record, k, None) is not None}
        )
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if as_json
        else _KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("skene_pg")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


# --------------------------------------------------------------------------------
# Shared email options (listen and templates preview)
# --------------------------------------------------------------------------------


def _templates_option(fn: Any) -> Any:
    return click.option(
        "--templates",
        "templates_dir",
        envvar="SKENE_TEMPLATES_DIR",
        metavar="DIR",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Project templates that override the defaults [env: SKENE_TEMPLATES_DIR].",
    )(fn)


def _link_options(fn: Any) -> Any:
    fn = click.option(
        "--unsubscribe-url",
        envvar="SKENE_UNSUBSCRIBE_URL",
        metavar="URL",
        help="Unsubscribe link; may hold {customer_id} and {token} "
        "[default: APP_URL/unsubscribe?customer=..&token=..] "
        "[env: SKENE_UNSUBSCRIBE_URL].",
    )(fn)
    fn = click.option(
        "--upgrade-url",
        envvar="SKENE_UPGRADE_URL",
        metavar="URL",
        help="Upgrade link; may hold {customer_id}, {feature}, {plan} "
        "[default: APP_URL/upgrade] [env: SKENE_UPGRADE_URL].",
    )(fn)
    fn = click.option(
        "--app-url",
        envvar="SKENE_APP_URL",
        metavar="URL",
        help="Your app's base URL, for links in emails "
        "[env: SKENE_APP_URL; required for resend and smtp].",
    )(fn)
    fn = click.option(
        "--email-from",
        envvar="SKENE_EMAIL_FROM",
        metavar="ADDRESS",
        help="Sender, e.g. 'Acme <hello@acme.com>' "
        "[env: SKENE_EMAIL_FROM; required for resend and smtp].",
    )(fn)
    return fn


def _email_settings(
    provider: str,
    email_from: str | None,
    app_url: str | None,
    upgrade_url: str | None,
    unsubscribe_url: str | None,
) -> Any:
    from skene_pg.email.base import ConfigError
    from skene_pg.email.handler import EmailSettings

    real = provider in ("resend", "smtp")
    if not email_from and real:
        raise ConfigError(
            f"SKENE_EMAIL_FROM is not set: the {provider} provider needs a "
            "sender (--email-from or SKENE_EMAIL_FROM), e.g. "
            "'Acme <hello@acme.com>'"
        )
    if not app_url and real:
        raise ConfigError(
            f"SKENE_APP_URL is not set: the {provider} provider needs your "
            "app's base URL for upgrade and unsubscribe links "
            "(--app-url or SKENE_APP_URL)"
        )
    secret = os.environ.get("SKENE_UNSUBSCRIBE_SECRET") or None
    if real and not secret:
        log.warning(
            "SKENE_UNSUBSCRIBE_SECRET is not set: unsubscribe links carry no token, "
            "so your endpoint cannot check who sent them"
        )
    return EmailSettings(
        sender=email_from or OUTBOX_DEFAULT_SENDER,
        app_url=app_url or OUTBOX_DEFAULT_APP_URL,
        upgrade_url=upgrade_url,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_secret=secret,
    )


def _require_protocol(url: str) -> None:
    with db.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_catalog.to_regprocedure('skene.claim_jobs(text,integer,interval,text[])')"
        ).fetchone()
    if not row or row[0] is None:
        raise click.ClickException(
            "the skene schema has no job queue yet: run `skene-pg migrate` (revision 0002 or later)"
        )


# --------------------------------------------------------------------------------
# listen
# --------------------------------------------------------------------------------


@click.command("listen")
@database_url_option
@click.option(
    "--email-provider",
    type=click.Choice(["resend", "smtp", "outbox"]),
    envvar="SKENE_EMAIL_PROVIDER",
    default="outbox",
    show_default=True,
    help="Where email goes [env: SKENE_EMAIL_PROVIDER]. resend needs "
    "RESEND_API_KEY; smtp needs SKENE_SMTP_URL; outbox writes .eml files.",
)
@_link_options
@click.option(
    "--outbox-dir",
    envvar="SKENE_OUTBOX_DIR",
    default="outbox",
    show_default=True,
    metavar="DIR",
    help="Folder of the outbox provider [env: SKENE_OUTBOX_DIR].",
)
@_templates_option
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    envvar="SKENE_EMAIL_RATE_LIMIT",
    metavar="PER_SECOND",
    help="Client-side limit on email requests per second; "
    "0 = off [default: 2 for resend, off otherwise] [env: SKENE_EMAIL_RATE_LIMIT].",
)
@click.option(
    "--send-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    envvar="SKENE_EMAIL_TIMEOUT",
    metavar="SECONDS",
    help="Timeout of one email request [env: SKENE_EMAIL_TIMEOUT].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    envvar="SKENE_WORKER_CONCURRENCY",
    help="Sends at once.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    envvar="SKENE_POLL_INTERVAL",
    metavar="SECONDS",
    help="Look for due jobs (and expired leases) this often without NOTIFY.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    envvar="SKENE_LEASE",
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
    metavar="SECONDS",
    help="First retry after about this long, doubling each time, with jitter.",
)
@click.option(
    "--http",
    "http_address",
    envvar="SKENE_HTTP",
    metavar="HOST:PORT",
    help="Also serve POST /webhooks/stripe (STRIPE_WEBHOOK_SECRET) and "
    "/webhooks/resend (RESEND_WEBHOOK_SECRET) [env: SKENE_HTTP].",
)
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
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-json", is_flag=True, envvar="SKENE_LOG_JSON", help="One JSON object per log line."
)
@fails_cleanly
def listen_command(
    database_url: str | None,
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
    drain: bool,
    log_level: str,
    log_json: bool,
) -> None:
    """Run the worker: send the queued emails, exactly once each.

    It LISTENs for new jobs, also polls every --poll-interval, claims due jobs with a
    lease, sends --concurrency at a time, retries failures with exponential backoff,
    honours a 429's Retry-After, and sends a permanent error (bad address, 4xx) to
    `dead` with its reason. SIGTERM stops claiming and lets running sends finish. Several
    workers may run at once.

    Secrets come from the environment only: RESEND_API_KEY (and RESEND_API_URL),
    SKENE_SMTP_URL (smtp://user:password@host:587, or smtps://), and
    SKENE_UNSUBSCRIBE_SECRET (signs the token in unsubscribe links). With
    STRIPE_API_KEY it also syncs plans from Stripe and reports metered usage;
    --http serves the Stripe and Resend webhooks.

    \b
    Examples:
      skene-pg listen                                   # outbox: .eml files in ./outbox
      skene-pg listen --http 0.0.0.0:8787               # + POST /webhooks/stripe, /resend
      RESEND_API_KEY=re_... skene-pg listen --email-provider resend \\
          --email-from 'Acme <hello@acme.com>' --app-url https://app.acme.com
      skene-pg listen --drain                           # send what is due, then exit
    """
    from skene_pg.email import make_provider
    from skene_pg.email.base import ConfigError
    from skene_pg.email.handler import EmailHandler
    from skene_pg.email.templates import TemplateRenderer
    from skene_pg.worker import Worker, WorkerSettings

    setup_logging(log_level, log_json)
    url = db.require_url(database_url)
    try:
        settings = _email_settings(
            email_provider, email_from, app_url, upgrade_url, unsubscribe_url
        )
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
    _require_protocol(url)
    where = f" ({Path(outbox_dir).resolve()})" if email_provider == "outbox" else ""
    log.info("email provider: %s%s", email_provider, where)
    handler = EmailHandler(provider, TemplateRenderer(templates_dir), settings)
    from skene_pg.billing.cli import billing_handlers, start_webhook_server

    worker = Worker(
        url,
        [handler, *billing_handlers(os.environ)],
        WorkerSettings(
            concurrency=concurrency,
            poll_interval=poll_interval,
            lease=lease,
            drain=drain,
            retry_base=retry_base,
        ),
    )

    def on_signal(signum: int, _frame: Any) -> None:
        if worker._stopping.is_set():  # a second signal: leave now, leases cover the rest
            os._exit(128 + signum)
        log.info("%s: no new jobs; finishing the running ones", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = start_webhook_server(url, http_address, os.environ) if http_address else None
    try:
        stats = worker.run()
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


# --------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------


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

    \b
    Examples:
      skene-pg jobs list
      skene-pg jobs list --state dead --kind email --json
    """
    with db.connect(db.require_url(database_url)) as conn:
        rows = q.list_jobs(conn, state=state, kind=kind, customer_id=customer_id, limit=limit)
    if as_json:
        click.echo(q.to_json(rows))
        return
    if not rows:
        click.echo("no jobs")
        return
    click.echo(
        format_table(
            ["id", "kind", "state", "customer", "loop", "attempt", "run_at", "last_error"],
            [
                (
                    r["id"],
                    r["kind"],
                    r["state"],
                    r["customer_id"],
                    r["loop_name"],
                    f"{r['attempt']}/{r['max_attempts']}",
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
    """Show one job with its payload and every attempt's outcome and error.

    \b
    Example:
      skene-pg jobs show 42
    """
    with db.connect(db.require_url(database_url)) as conn:
        job = q.get_job(conn, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id} (list them with `skene-pg jobs list`)")
    if as_json:
        click.echo(q.to_json(job))
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
    click.echo(
        format_table(
            ["attempt", "worker", "started_at", "took", "outcome", "error"],
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
        q.retry(conn, job_id)
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
        changed = q.cancel(conn, job_id)
    click.echo(f"job {job_id} cancelled" if changed else f"job {job_id} was cancelled already")


# --------------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------------


@click.group("templates")
def templates_group() -> None:
    """Email templates: the defaults (upgrade_prompt, re_engagement, milestone) and your
    overrides (--templates DIR: NAME.subject.txt, NAME.html and NAME.txt).

    \b
    Example:
      skene-pg templates preview upgrade_prompt --customer cus_42
    """


@templates_group.command("list")
@_templates_option
def templates_list(templates_dir: Path | None) -> None:
    """List the templates there are (defaults and overrides).

    \b
    Example:
      skene-pg templates list --templates ./emails
    """
    from skene_pg.email.templates import TemplateRenderer

    for name in TemplateRenderer(templates_dir).names():
        click.echo(name)


@templates_group.command("preview")
@database_url_option
@click.argument("name")
@click.option("--customer", "customer_id", required=True, help="Render for this customer.")
@click.option(
    "--feature",
    help="Sample usage of this feature (when the customer has no job of this template yet).",
)
@_templates_option
@_link_options
@click.option("--html", "show_html", is_flag=True, help="Print the HTML part too.")
@fails_cleanly
def templates_preview(
    database_url: str | None,
    name: str,
    customer_id: str,
    feature: str | None,
    templates_dir: Path | None,
    email_from: str | None,
    app_url: str | None,
    upgrade_url: str | None,
    unsubscribe_url: str | None,
    show_html: bool,
) -> None:
    """Render template NAME for a customer, as the worker would, to the terminal.

    It uses the customer's latest job of this template, or else sample usage. A
    missing variable is reported as the worker would record it on the job.

    \b
    Example:
      skene-pg templates preview upgrade_prompt --customer cus_42 --html
    """
    from skene_pg.email.handler import compose, skip_reason
    from skene_pg.email.templates import TemplateFailure, TemplateRenderer

    settings = _email_settings("outbox", email_from, app_url, upgrade_url, unsubscribe_url)
    with db.connect(db.require_url(database_url)) as conn:
        context = q.customer_context(conn, customer_id)
        if context is None:
            raise click.ClickException(f"no customer {customer_id!r}")
        job = q.latest_email_job(conn, customer_id, name)
        if job is not None:
            payload = job["payload"]
            context |= {"loop_type": job["loop_type"], "loop_config": job["loop_config"]}
            loop_name, key = job["loop_name"], job["idempotency_key"]
            click.echo(f"(job {job['id']})", err=True)
        else:
            payload = _sample_payload(conn, name, context, feature)
            loop_name, key = None, "preview"
            click.echo("(no job of this template yet: sample usage)", err=True)
    reason = skip_reason(context, payload, customer_id)
    if reason:
        click.echo(f"(at send time this email would be skipped: {reason})", err=True)
    if not context.get("email"):
        context["email"] = "no-address@example.invalid"
    try:
        email = compose(
            0,
            customer_id,
            key,
            payload,
            context,
            loop_name,
            TemplateRenderer(templates_dir),
            settings,
        )
    except TemplateFailure as exc:
        raise click.ClickException(exc.reason) from exc
    click.echo(f"From: {email.sender}\nTo: {email.to}\nSubject: {email.subject}")
    for header, value in email.headers.items():
        click.echo(f"{header}: {value}")
    click.echo("")
    click.echo(email.text.rstrip("\n"))
    if show_html:
        click.echo("\n----- HTML -----")
        click.echo(email.html.rstrip("\n"))


def _sample_payload(
    conn: Any, template: str, context: dict[str, Any], feature: str | None
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT f.feature, l.usage_limit, u.resets_at "
        "  FROM skene.features f "
        "  LEFT JOIN skene.feature_limits l ON l.feature = f.feature AND l.plan = %(plan)s "
        "  LEFT JOIN skene.usage u ON u.feature = f.feature AND u.customer_id = %(customer)s "
        " WHERE %(feature)s::text IS NULL OR f.feature = %(feature)s "
        " ORDER BY (l.usage_limit IS NULL), f.feature LIMIT 1",
        {"plan": context["plan"], "customer": context["customer_id"], "feature": feature},
    ).fetchone()
    if row is None:
        raise click.ClickException(
            f"no feature {feature!r}" if feature else "no features defined (run skene-pg apply)"
        )
    limit = row[1] if row[1] is not None else 100
    return {
        "template": template,
        "feature": row[0],
        "reason": "limit_reached",
        "plan": context["plan"],
        "used": limit,
        "usage_limit": limit,
        "resets_at": row[2].isoformat() if row[2] else None,
    }
