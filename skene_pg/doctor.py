"""`skene-pg doctor`: look at a deployment and say what would stop it, with the SQL or
setting that fixes each thing.

Each check returns findings: `ok`, `warning` (works, but not as well as it could: a
loop run by the worker instead of pg_cron, email written to files) or `blocker`
(something will not work: the schema is behind, a role is missing, a loop runs
nowhere). The checks only read; a check that cannot look says so as a warning.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict

from skene_pg import db, migrations
from skene_pg.resources import resource_dir
from skene_pg.retention import pg_cron, schedules

Status = Literal["ok", "warning", "blocker"]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: tuple[str, ...] = ()
    database: str | None = None  # where the fix runs, when not this database


@dataclass(frozen=True)
class ListenSettings:
    """What `skene-pg listen` would run with: its options (from the command line or
    their environment variables) and the secrets it reads from the environment only."""

    email_provider: str = "outbox"
    email_from: str | None = None
    app_url: str | None = None
    upgrade_url: str | None = None
    unsubscribe_url: str | None = None
    outbox_dir: str = "outbox"
    listen_database_url: str | None = None
    # what listen's own check of sender and links said (cli/email_options.email_settings)
    links_error: str | None = None


# The secrets `listen` reads from the environment. Doctor says whether each is set and
# never prints a value.
SECRETS = (
    "RESEND_API_KEY",
    "SKENE_SMTP_URL",
    "SKENE_UNSUBSCRIBE_SECRET",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "RESEND_WEBHOOK_SECRET",
)


def diagnose(
    conn: psycopg.Connection, listen: ListenSettings, environ: Mapping[str, str]
) -> list[Finding]:
    """Every check, in the order an operator fixes things: schema, roles, privileges,
    pg_cron and the schedules, the connection path, email, Stripe."""
    status = _schema_status(conn)
    installed = not isinstance(status, str) and status.installed
    findings = [_schema(status)]
    findings += _roles(conn, status)
    findings += _privileges(conn)
    access = pg_cron.probe(conn)
    findings.append(_pg_cron(access))
    if installed:
        findings += _schedules(conn, access)
    findings += _pooler(conn, listen.listen_database_url)
    findings += _email(listen, environ)
    findings += _stripe(conn, environ, installed=installed)
    return findings


def exit_blocked(findings: list[Finding]) -> bool:
    return any(f.status == "blocker" for f in findings)


# ---------------------------------------------------------------------------------
# Schema, roles, privileges
# ---------------------------------------------------------------------------------


def _schema_status(conn: psycopg.Connection) -> migrations.MigrationStatus | str:
    try:
        return migrations.status(conn)
    except migrations.SchemaMismatch as exc:  # this role may not read the version table
        return str(exc)


def _schema(status: migrations.MigrationStatus | str) -> Finding:
    if isinstance(status, str):  # the version table is not readable by this role
        return Finding("schema", "warning", status)
    if not status.installed:
        return Finding(
            "schema",
            "blocker",
            "the skene schema is not installed in this database",
            ("skene-pg migrate",),
        )
    if status.newer_than_code:
        return Finding(
            "schema",
            "warning",
            f"the schema is at {status.current}, newer than this skene-pg knows "
            f"({status.head}): upgrade skene-pg",
        )
    if status.pending:
        return Finding(
            "schema",
            "blocker",
            f"the schema is at {status.current}; this skene-pg needs {status.head} "
            f"(pending: {', '.join(status.pending)}); `skene-pg listen` refuses to start",
            ("skene-pg migrate",),
        )
    return Finding("schema", "ok", f"at {status.current}, the newest this skene-pg knows")


_CREATE_ROLE = re.compile(r"\bCREATE\s+ROLE\s+(\w+)", re.IGNORECASE)


def schema_roles() -> list[str]:
    """The roles the revisions of this skene-pg create (skene_app, skene_worker, and
    any a later revision adds), in the order they first appear."""
    found: list[str] = []
    chain = migrations.revisions()
    for path in sorted(resource_dir("sql").glob("[0-9][0-9][0-9][0-9]_*.up.sql")):
        if path.name[:4] not in chain:
            continue
        for name in _CREATE_ROLE.findall(path.read_text()):
            if name.lower() not in found:
                found.append(name.lower())
    return found


def _roles(conn: psycopg.Connection, status: migrations.MigrationStatus | str) -> list[Finding]:
    user, can_create = _one(
        conn,
        "SELECT current_user, rolsuper OR rolcreaterole FROM pg_catalog.pg_roles "
        "WHERE rolname = current_user",
    )
    at_head = not isinstance(status, str) and status.installed and not status.pending
    findings = []
    for role in schema_roles():
        row = conn.execute(
            "SELECT pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'), "
            "  (SELECT pg_catalog.string_agg(m.rolname, ', ' ORDER BY m.rolname) "
            "     FROM pg_catalog.pg_auth_members a "
            "     JOIN pg_catalog.pg_roles m ON m.oid = a.member "
            "    WHERE a.roleid = r.oid AND m.rolcanlogin) "
            "FROM pg_catalog.pg_roles r WHERE r.rolname = %s",
            (role,),
        ).fetchone()
        if row is None:
            if can_create and not at_head:
                findings.append(
                    Finding("roles", "ok", f"role {role} does not exist yet; migrate creates it")
                )
                continue
            why = (
                f"{user} has no CREATEROLE, so `skene-pg migrate` cannot create it"
                if not at_head
                else "the schema's grants to it are gone"
            )
            findings.append(
                Finding(
                    "roles",
                    "blocker",
                    f"role {role} does not exist: {why}; an admin creates it",
                    (f"CREATE ROLE {role} NOLOGIN;",),
                )
            )
            continue
        member, logins = row
        granted = "granted to" if member else "not granted to"
        who = f"; login roles granted it: {logins}" if logins else ""
        findings.append(Finding("roles", "ok", f"role {role} exists ({granted} {user}){who}"))
    return findings


def _privileges(conn: psycopg.Connection) -> list[Finding]:
    user, quoted, superuser, database, quoted_db, can_create = _one(
        conn,
        "SELECT current_user, pg_catalog.quote_ident(current_user), r.rolsuper, "
        "  current_database(), pg_catalog.quote_ident(current_database()), "
        "  pg_catalog.has_database_privilege(current_database(), 'CREATE') "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    owner = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(n.nspowner), "
        "  pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE') "
        "FROM pg_catalog.pg_namespace n WHERE n.nspname = %s",
        (migrations.SCHEMA,),
    ).fetchone()
    create = "has CREATE on" if can_create else "has no CREATE on"
    su = " (a superuser: pg_cron jobs it schedules run as a superuser)" if superuser else ""
    if owner is None:
        if can_create:
            return [
                Finding(
                    "privileges",
                    "ok",
                    f"{user}{su} {create} database {database}: migrate can create schema skene",
                )
            ]
        return [
            Finding(
                "privileges",
                "blocker",
                f"{user} {create} database {database}, so `skene-pg migrate` cannot create "
                "schema skene",
                (f"GRANT CREATE ON DATABASE {quoted_db} TO {quoted};",),
            )
        ]
    schema_owner, acts_as_owner = owner
    if acts_as_owner:
        how = "owns" if schema_owner == user else f"acts as {schema_owner}, which owns"
        return [
            Finding(
                "privileges",
                "ok",
                f"{user}{su} {how} schema skene (migrate and apply run as it); "
                f"{create} database {database}",
            )
        ]
    return [
        Finding(
            "privileges",
            "warning",
            f"{user} is not the owner of schema skene ({schema_owner} is): run "
            f"`skene-pg migrate` and `skene-pg apply` as {schema_owner}",
        )
    ]


# ---------------------------------------------------------------------------------
# pg_cron and the schedules
# ---------------------------------------------------------------------------------


def _pg_cron(access: pg_cron.CronAccess) -> Finding:
    if access.can_schedule:
        how = "cron.schedule" if access.same_database else "cron.schedule_in_database"
        return Finding(
            "pg_cron",
            "ok",
            f"pg_cron {access.version} is running in database {access.database}; "
            f"{access.role} may schedule retention loops there ({how})",
        )
    problem = access.problems[0]
    if not access.running and not access.configured:
        # No pg_cron is a supported deployment, not a fault: say where loops run.
        return Finding(
            "pg_cron",
            "ok",
            f"{problem.message}: `skene-pg listen` runs retention loops (to use pg_cron: "
            "the fix below)",
            problem.fix,
            problem.database,
        )
    return Finding(
        "pg_cron",
        "warning",
        f"{problem.message}: `skene-pg listen` runs retention loops instead",
        problem.fix,
        problem.database,
    )


def _schedules(conn: psycopg.Connection, access: pg_cron.CronAccess) -> list[Finding]:
    """Whether every enabled retention loop runs somewhere: a loop whose cron_job names
    a job pg_cron will not run is skipped by the worker too, so it runs nowhere."""
    try:
        loops = conn.execute(
            "SELECT name, cron_job FROM skene.loops "
            "WHERE type = 'retention' AND enabled ORDER BY name"
        ).fetchall()
    except psycopg.Error as exc:
        return [Finding("schedules", "warning", f"cannot read skene.loops: {_line(exc)}")]
    if not loops:
        return [Finding("schedules", "ok", "no retention loops")]
    by_worker = [name for name, job in loops if job is None]
    by_cron = {name: job for name, job in loops if job is not None}
    findings = []
    if by_worker:
        findings.append(Finding("schedules", "ok", f"skene-pg listen runs {', '.join(by_worker)}"))
    if not by_cron:
        return findings
    apply = ("skene-pg apply skene.toml   # hands them to the worker or schedules them again",)
    names = ", ".join(sorted(by_cron))
    if not access.running:
        return [
            *findings,
            Finding(
                "schedules",
                "blocker",
                f"pg_cron is not running, yet skene.loops says it runs {names}: "
                "the worker skips them, so they run nowhere",
                apply,
            ),
        ]
    jobs = _jobs_in_cron(conn, access)
    if jobs is None:
        return [
            *findings,
            Finding(
                "schedules",
                "warning",
                f"skene.loops says pg_cron runs {names}, but {access.role} cannot read "
                "pg_cron's jobs to check (see pg_cron); `skene-pg apply` hands them to "
                "the worker",
                apply,
            ),
        ]
    expected = {
        name: schedules.job_name(name, access.app_database, access.database or "")
        for name in by_cron
    }
    claimed: dict[str, list[str]] = {}
    for name, job in by_cron.items():
        claimed.setdefault(job, []).append(name)
    nowhere = sorted(name for name, job in by_cron.items() if job not in jobs)
    shared = sorted(", ".join(names) for job, names in claimed.items() if len(names) > 1)
    renamed = sorted(name for name, job in by_cron.items() if job in jobs and job != expected[name])
    if nowhere:
        findings.append(
            Finding(
                "schedules",
                "blocker",
                f"skene.loops says pg_cron runs {', '.join(nowhere)}, but pg_cron has no "
                f"such job for database {access.app_database}: the worker skips them, so "
                "they run nowhere",
                apply,
            )
        )
    if shared:
        findings.append(
            Finding(
                "schedules",
                "blocker",
                f"loops share one pg_cron job ({'; '.join(shared)}): only one of them runs",
                apply,
            )
        )
    if renamed:
        findings.append(
            Finding(
                "schedules",
                "warning",
                f"pg_cron jobs of {', '.join(renamed)} have an older name",
                apply,
            )
        )
    fine = sorted(set(by_cron) - set(nowhere) - set(renamed))
    if fine and not shared:
        findings.append(
            Finding(
                "schedules",
                "ok",
                f"pg_cron runs {', '.join(fine)} (in database {access.app_database})",
            )
        )
    return findings


def _jobs_in_cron(conn: psycopg.Connection, access: pg_cron.CronAccess) -> set[str] | None:
    if access.database is None or access.installed is not True:
        return None
    try:
        with pg_cron.cron_connection(conn, access.database) as cron:
            return {job.name for job in pg_cron.skene_jobs(cron, access.app_database)}
    except psycopg.Error:
        return None


# ---------------------------------------------------------------------------------
# The connection path
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    url_port: int | None
    server_port: int | None
    backends: int  # distinct backend pids over a few transactions on one connection


def _path(conn: psycopg.Connection) -> _Path:
    port, configured = _one(
        conn, "SELECT pg_catalog.inet_server_port(), pg_catalog.current_setting('port')"
    )
    pids = {_one(conn, "SELECT pg_catalog.pg_backend_pid()")[0] for _ in range(3)}
    try:
        url_port: int | None = int(conn.info.port)
    except (TypeError, ValueError):
        url_port = None
    return _Path(url_port, port or int(configured), len(pids))


def _pooler(conn: psycopg.Connection, listen_url: str | None) -> list[Finding]:
    """A transaction pooler (PgBouncer in transaction mode, Supavisor on 6543, ...)
    gives each transaction whichever server connection is free: the application's
    calls are fine with that, `listen`'s LISTEN is not. Two signs: the backend changes
    between transactions of one connection, or the URL's port is not the server's."""
    path = _path(conn)
    need = (
        "SKENE_LISTEN_DATABASE_URL=postgresql://...   # a direct (or session-pooled) URL "
        "for skene-pg listen",
    )
    if path.backends > 1:
        finding = Finding(
            "pooler",
            "warning",
            "a transaction pooler is in front: the server connection changed between "
            "transactions of one client connection. The gate works through it; "
            "`skene-pg listen` needs a direct connection for LISTEN",
            need,
        )
    elif path.url_port is not None and path.server_port != path.url_port:
        finding = Finding(
            "pooler",
            "warning",
            f"something forwards connections: the URL's port is {path.url_port}, the "
            f"server's {path.server_port} (a proxy, a port mapping or a pooler). If it "
            "pools by transaction, `skene-pg listen` needs a direct connection for LISTEN",
            need,
        )
    else:
        return [
            Finding(
                "pooler",
                "ok",
                f"direct connection (server port {path.server_port}; the same backend "
                "across transactions)",
            )
        ]
    if not listen_url:
        return [finding]
    try:
        with db.connect(listen_url, autocommit=True, connect_timeout=10) as direct:
            listen_path = _path(direct)
    except psycopg.Error as exc:
        return [
            finding,
            Finding(
                "pooler",
                "blocker",
                f"SKENE_LISTEN_DATABASE_URL cannot connect: {_line(exc)}",
            ),
        ]
    if listen_path.backends == 1 and listen_path.server_port == listen_path.url_port:
        host = conninfo_to_dict(listen_url).get("host") or "localhost"
        return [
            Finding(
                "pooler",
                "ok",
                f"{finding.message.split(':')[0]}; skene-pg listen connects directly "
                f"(SKENE_LISTEN_DATABASE_URL, {host}:{listen_path.url_port})",
            )
        ]
    return [
        finding,
        Finding(
            "pooler",
            "warning",
            "SKENE_LISTEN_DATABASE_URL does not look direct either",
            need,
        ),
    ]


# ---------------------------------------------------------------------------------
# Email and Stripe, as `skene-pg listen` would run
# ---------------------------------------------------------------------------------


def _email(listen: ListenSettings, environ: Mapping[str, str]) -> list[Finding]:
    from skene_pg.email import make_provider
    from skene_pg.email.base import ConfigError

    provider_name = listen.email_provider
    try:
        provider = make_provider(
            provider_name,
            resend_api_key=environ.get("RESEND_API_KEY"),
            resend_api_url=environ.get("RESEND_API_URL"),
            smtp_url=environ.get("SKENE_SMTP_URL"),
            outbox_dir=listen.outbox_dir,
        )
        provider.close()
        if listen.links_error:
            raise ConfigError(listen.links_error)
    except ConfigError as exc:
        return [
            Finding(
                "email",
                "blocker",
                f"skene-pg listen would not start: {exc}",
                _email_fix(provider_name),
            )
        ]
    findings = []
    if provider_name == "outbox":
        findings.append(
            Finding(
                "email",
                "warning",
                f"provider outbox: emails are written to {listen.outbox_dir}/ as .eml "
                "files, not sent",
                ("SKENE_EMAIL_PROVIDER=resend   # or smtp",),
            )
        )
    else:
        detail = "RESEND_API_KEY set" if provider_name == "resend" else _smtp_detail(environ)
        findings.append(
            Finding(
                "email",
                "ok",
                f"provider {provider_name} ({detail}); sender {listen.email_from}; "
                f"app URL {listen.app_url}",
            )
        )
        if not environ.get("SKENE_UNSUBSCRIBE_SECRET"):
            findings.append(
                Finding(
                    "email",
                    "warning",
                    "SKENE_UNSUBSCRIBE_SECRET is not set: unsubscribe links carry no "
                    "token, so your endpoint cannot check who sent them",
                    ("SKENE_UNSUBSCRIBE_SECRET=<a long random string>",),
                )
            )
    if provider_name == "resend" and not environ.get("RESEND_WEBHOOK_SECRET"):
        findings.append(
            Finding(
                "email",
                "warning",
                "RESEND_WEBHOOK_SECRET is not set: bounces and complaints from Resend "
                "are not received, so those addresses keep getting email",
                ("RESEND_WEBHOOK_SECRET=whsec_...   # and skene-pg listen --http",),
            )
        )
    return findings


def _email_fix(provider: str) -> tuple[str, ...]:
    if provider == "resend":
        return (
            "RESEND_API_KEY=re_...",
            "SKENE_EMAIL_FROM='Acme <hello@acme.com>'",
            "SKENE_APP_URL=https://app.acme.com",
        )
    if provider == "smtp":
        return (
            "SKENE_SMTP_URL=smtp://user:password@mail.example.com:587",
            "SKENE_EMAIL_FROM='Acme <hello@acme.com>'",
            "SKENE_APP_URL=https://app.acme.com",
        )
    return ("SKENE_EMAIL_PROVIDER=resend|smtp|outbox",)


def _smtp_detail(environ: Mapping[str, str]) -> str:
    from skene_pg.email.smtp import SmtpSettings

    settings = SmtpSettings.from_url(environ.get("SKENE_SMTP_URL"))
    login = "with a login" if settings.username else "without a login"
    return f"{settings.host}:{settings.port}, {login}"  # never the password


def _stripe(
    conn: psycopg.Connection, environ: Mapping[str, str], *, installed: bool
) -> list[Finding]:
    prices = metered = 0
    if installed:
        with contextlib.suppress(psycopg.Error):
            prices, metered = _one(
                conn,
                "SELECT (SELECT count(*) FROM skene.plan_prices), "
                "(SELECT count(*) FROM skene.features WHERE meter IS NOT NULL)",
            )
    uses = []
    if prices:
        uses.append(f"{prices} Stripe price(s) mapped to plans")
    if metered:
        uses.append(f"{metered} metered feature(s)")
    if not environ.get("STRIPE_API_KEY"):
        if uses:
            return [
                Finding(
                    "stripe",
                    "warning",
                    f"STRIPE_API_KEY is not set, yet the catalogue has {' and '.join(uses)}: "
                    "plans are not synced from Stripe and usage is not reported",
                    ("STRIPE_API_KEY=sk_...", "STRIPE_WEBHOOK_SECRET=whsec_..."),
                )
            ]
        return [Finding("stripe", "ok", "Stripe is off (no STRIPE_API_KEY, nothing uses it)")]
    if not environ.get("STRIPE_WEBHOOK_SECRET"):
        return [
            Finding(
                "stripe",
                "warning",
                "STRIPE_API_KEY is set but STRIPE_WEBHOOK_SECRET is not: listen --http "
                "cannot verify Stripe's webhooks, so plans change only on "
                "`skene-pg billing reconcile`",
                ("STRIPE_WEBHOOK_SECRET=whsec_...   # and skene-pg listen --http",),
            )
        ]
    return [Finding("stripe", "ok", "STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET are set")]


# ---------------------------------------------------------------------------------


def _one(conn: psycopg.Connection, query: LiteralString) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(row)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
