"""What pg_cron can do for the role skene-pg runs as: is it running, in which database
does it keep its jobs, and may this role schedule there?

On managed PostgreSQL the role that owns the schema is rarely a superuser, pg_cron
often lives in the `postgres` database, and its functions are not granted to everyone.
So every "no" here comes with the SQL or setting an admin would use to turn it into a
"yes", and nothing here raises for a missing privilege: a role that cannot use pg_cron
is a normal deployment (`skene-pg listen` runs the loops), never a reason to fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import psycopg
from psycopg import errors

from skene_pg import db
from skene_pg.logs import first_line

# How pg_cron's launcher shows in pg_stat_activity. backend_type is hidden from roles
# without pg_read_all_stats; datname and application_name are visible to every role,
# so an unprivileged role can still see that it runs, and where.
LAUNCHER_BACKEND_TYPE = "pg_cron launcher"
LAUNCHER_APPLICATION_NAME = "pg_cron scheduler"

# What skene-pg calls: cron.schedule in pg_cron's own database, cron.schedule_in_database
# for another one (pg_cron 1.4 revoked it from PUBLIC), cron.unschedule by job id.
SCHEDULE_HERE = ("schedule", "text, text, text")
SCHEDULE_ELSEWHERE = ("schedule_in_database", "text, text, text, text, text, boolean")
UNSCHEDULE = ("unschedule", "bigint")


@dataclass(frozen=True)
class Advice:
    """Something wrong, and what fixes it: SQL statements or settings, run in
    `database` when that is not the application's own."""

    message: str
    fix: tuple[str, ...] = ()
    database: str | None = None


@dataclass(frozen=True)
class CronAccess:
    role: str  # current_user, as an SQL identifier (quoted when it must be)
    app_database: str
    running: bool  # its launcher is in pg_stat_activity
    database: str | None  # where pg_cron keeps its jobs (None: not running, or unknown)
    configured: str | None  # cron.database_name, when set and readable by this role
    installed: bool | None  # CREATE EXTENSION pg_cron done in `database`; None: unknown
    version: str | None
    problems: tuple[Advice, ...]  # why this role cannot schedule; empty: it can

    @property
    def can_schedule(self) -> bool:
        return self.running and self.database is not None and not self.problems

    @property
    def same_database(self) -> bool:
        """pg_cron runs in the application's database: cron.schedule will do."""
        return self.database == self.app_database


def probe(conn: psycopg.Connection) -> CronAccess:
    """Look, from the application's database, at what pg_cron can do for this role."""
    row = conn.execute(
        "SELECT current_user, pg_catalog.quote_ident(current_user), current_database()"
    ).fetchone()
    assert row is not None
    _user, role, app_db = row
    running, launcher_db = _launcher(conn)
    configured, readable = _setting(conn)
    base = CronAccess(role, app_db, running, None, configured, None, None, ())
    if not running:
        return replace(base, problems=(_not_running(configured, readable, app_db),))
    database = launcher_db or configured
    if database is None:
        return replace(
            base,
            problems=(
                Advice(
                    "pg_cron is running but this role cannot tell in which database it "
                    "keeps its jobs (reading cron.database_name needs pg_read_all_settings)",
                    (f"GRANT pg_read_all_settings TO {role};",),
                ),
            ),
        )
    base = replace(base, database=database)
    quoted_db = _ident(conn, database)
    may_connect = _may_connect(conn, database)
    if may_connect is None:
        return replace(
            base,
            problems=(
                Advice(
                    f"pg_cron is running but its database {database} (cron.database_name) "
                    "does not exist",
                    (f"CREATE DATABASE {quoted_db};   -- or set cron.database_name and restart",),
                ),
            ),
        )
    if not may_connect:
        return replace(
            base,
            problems=(
                Advice(
                    f"role {role} may not connect to database {database}, where pg_cron "
                    "keeps its jobs",
                    (f"GRANT CONNECT ON DATABASE {quoted_db} TO {role};",),
                ),
            ),
        )
    try:
        with cron_connection(conn, database) as cron:
            return _in_cron_database(cron, base)
    except psycopg.OperationalError as exc:  # pg_hba, a firewall, a max_connections
        return replace(
            base,
            problems=(
                Advice(
                    f"cannot connect to database {database}, where pg_cron keeps its jobs: "
                    f"{first_line(exc)}",
                    (
                        f"GRANT CONNECT ON DATABASE {quoted_db} TO {role};",
                        f"-- and allow {role} to connect to {database} in pg_hba.conf "
                        "(or the provider's network settings)",
                    ),
                ),
            ),
        )
    except psycopg.Error as exc:  # anything else pg_cron's database says no to
        return replace(
            base,
            problems=(
                Advice(
                    f"cannot look at pg_cron in database {database}: {first_line(exc)}",
                    database=database,
                ),
            ),
        )


def _in_cron_database(cron: psycopg.Connection, base: CronAccess) -> CronAccess:
    assert base.database is not None
    row = cron.execute(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'"
    ).fetchone()
    if row is None:
        return replace(
            base,
            installed=False,
            problems=(
                Advice(
                    f"pg_cron is running but its extension is not created in database "
                    f"{base.database}",
                    ("CREATE EXTENSION pg_cron;",),
                    base.database,
                ),
            ),
        )
    version = row[0]
    base = replace(base, installed=True, version=version)
    needed = [UNSCHEDULE, SCHEDULE_HERE if base.same_database else SCHEDULE_ELSEWHERE]
    usage = cron.execute("SELECT pg_catalog.has_schema_privilege('cron', 'USAGE')").fetchone()
    fix: list[str] = [] if usage and usage[0] else [f"GRANT USAGE ON SCHEMA cron TO {base.role};"]
    for name, args in needed:
        # by oid: has_function_privilege('cron.f(...)') would need USAGE on cron itself
        found = cron.execute(
            "SELECT pg_catalog.has_function_privilege(p.oid, 'EXECUTE') FROM pg_catalog.pg_proc p "
            "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'cron' AND p.proname = %s "
            "AND pg_catalog.oidvectortypes(p.proargtypes) = %s",
            (name, args),
        ).fetchone()
        if found is None:
            return replace(
                base,
                problems=(
                    Advice(
                        f"pg_cron {version} in database {base.database} has no "
                        f"cron.{name}({args}) (scheduling in another database needs "
                        "pg_cron 1.4 or later)",
                        ("ALTER EXTENSION pg_cron UPDATE;",),
                        base.database,
                    ),
                ),
            )
        if not found[0]:
            fix.append(f"GRANT EXECUTE ON FUNCTION cron.{name}({args}) TO {base.role};")
    if fix:
        what = "cron.schedule" if base.same_database else "cron.schedule_in_database"
        return replace(
            base,
            problems=(
                Advice(
                    f"role {base.role} may not schedule jobs with pg_cron in database "
                    f"{base.database} (it needs USAGE on schema cron and EXECUTE on {what})",
                    tuple(fix),
                    base.database,
                ),
            ),
        )
    return base


def _not_running(configured: str | None, readable: bool, app_db: str) -> Advice:
    preload = "shared_preload_libraries = 'pg_cron'   # then restart PostgreSQL"
    if configured:
        # The leftover that once stopped every loop: the setting outlives the library.
        return Advice(
            f"pg_cron is configured (cron.database_name = {configured}) but not running: "
            "its launcher is not in pg_stat_activity (is pg_cron missing from "
            "shared_preload_libraries?)",
            (preload,),
        )
    unknown = "" if readable else " (cron.database_name is not readable by this role)"
    return Advice(
        f"pg_cron is not running in this cluster{unknown}",
        (preload, f"cron.database_name = '{app_db}'"),
    )


def _launcher(conn: psycopg.Connection) -> tuple[bool, str | None]:
    rows = conn.execute(
        "SELECT datname FROM pg_catalog.pg_stat_activity "
        "WHERE backend_type = %s OR (backend_type IS NULL AND application_name = %s)",
        (LAUNCHER_BACKEND_TYPE, LAUNCHER_APPLICATION_NAME),
    ).fetchall()
    databases = [name for (name,) in rows if name]
    return bool(rows), databases[0] if databases else None


def _setting(conn: psycopg.Connection) -> tuple[str | None, bool]:
    """cron.database_name and whether this role may read it. pg_cron marks it
    superuser-only, but only once loaded: a leftover line in postgresql.conf without
    the library is a placeholder anyone may read."""
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT pg_catalog.current_setting('cron.database_name', true)"
            ).fetchone()
    except errors.InsufficientPrivilege:
        return None, False
    return (row[0] if row and row[0] else None), True


def _may_connect(conn: psycopg.Connection, database: str) -> bool | None:
    """CONNECT on `database`; None when there is no such database."""
    row = conn.execute(
        "SELECT pg_catalog.has_database_privilege(d.oid, 'CONNECT') "
        "FROM pg_catalog.pg_database d WHERE d.datname = %s",
        (database,),
    ).fetchone()
    return None if row is None else bool(row[0])


def _ident(conn: psycopg.Connection, name: str) -> str:
    row = conn.execute("SELECT pg_catalog.quote_ident(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


@contextmanager
def cron_connection(conn: psycopg.Connection, database: str) -> Iterator[psycopg.Connection]:
    """A connection to pg_cron's database: `conn` itself when that is its database."""
    if database == conn.info.dbname:
        yield conn
        return
    with db.connect_to(conn, database) as cron:
        yield cron


def create_extension(conn: psycopg.Connection, access: CronAccess) -> Advice | None:
    """CREATE EXTENSION pg_cron in its database (superusers, and the admin roles of
    some providers, may); what an admin should do when this role may not."""
    assert access.database is not None
    try:
        with cron_connection(conn, access.database) as cron, cron.transaction():
            cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    except psycopg.Error as exc:
        return Advice(
            f"pg_cron is running but its extension is not created in database "
            f"{access.database}, and role {access.role} may not create it: {first_line(exc)}",
            ("CREATE EXTENSION pg_cron;",),
            access.database,
        )
    return None


@dataclass(frozen=True)
class ScheduledJob:
    jobid: int
    name: str
    schedule: str
    command: str
    mine: bool  # owned by this role (a superuser also sees other roles' jobs)


def skene_jobs(cron: psycopg.Connection, app_database: str) -> list[ScheduledJob]:
    """The jobs skene-pg scheduled for `app_database` (named skene:..., whatever the
    naming of the skene-pg that made them), as far as this role may see them: pg_cron
    shows a role its own jobs only, a superuser all of them."""
    return [
        ScheduledJob(*row)
        for row in cron.execute(
            "SELECT jobid, jobname, schedule, command, username = current_user FROM cron.job "
            "WHERE database = %s AND jobname LIKE 'skene:%%' ORDER BY jobname, jobid",
            (app_database,),
        )
    ]
