"""Helpers and fixtures for managed PostgreSQL, emulated with real parts: an admin
(the test superuser) who pre-creates skene's roles and a database, and an owner role
that is no superuser, may not create roles or databases, and has only CREATE on that
database; the app and the worker log in as their own roles. pg_cron lives in another
database than the app's, as on RDS and Cloud SQL; extra clusters cover pg_cron in the
app's database and pg_cron configured but not running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from skene_pg.devdb import DevCluster

SKENE_PG = str(Path(sys.executable).parent / "skene-pg")
SCHEMA_ROLES = ("skene_app", "skene_worker", "skene_billing")

CONFIG = """\
default_plan = "free"
[plans.free]
[plans.pro]
paid = true

[features.api_calls]
period = "month"
limits = { free = 2, pro = "unlimited" }

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "You've reached your free tier limit. Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
recovery = { retries = 0 }

[[loops]]
name = "dormant_users"
type = "retention"
schedule = "* * * * *"
dormant_after = "7 days"
template = "re_engagement"
holdout_percent = 0
quiet_hours = { start = "00:00", end = "00:00" }
"""


def admin(cluster: DevCluster, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(cluster.url(database), autocommit=True)


def has_pg_cron_extension(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone())


def launcher_database(cluster: DevCluster) -> str | None:
    with admin(cluster) as conn:
        row = conn.execute(
            "SELECT datname FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
        ).fetchone()
    return row[0] if row else None


@dataclass
class Deployment:
    """One application's database on a shared cluster, and its roles."""

    cluster: DevCluster
    database: str
    owner: str
    app_user: str
    worker_user: str
    created_roles: list[str] = field(default_factory=list)

    def url(self, role: str, database: str | None = None) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.cluster.port}/{database or self.database}"

    @property
    def owner_url(self) -> str:
        return self.url(self.owner)

    def connect(self, role: str) -> psycopg.Connection:
        return psycopg.connect(self.url(role), autocommit=True)

    def admin(self, database: str | None = None) -> psycopg.Connection:
        return admin(self.cluster, database or self.database)

    def cron_admin(self) -> psycopg.Connection:
        return admin(self.cluster, self.cluster.cron_database)

    def grant_cron(self, *statements: str) -> None:
        """Run an admin's grants in pg_cron's database."""
        with self.cron_admin() as conn:
            for statement in statements:
                conn.execute(statement)

    def cron_jobs(self) -> list[tuple[str, str, str, str]]:
        """(jobname, database, username, schedule) of this database's jobs, as the admin
        sees them (all roles)."""
        with self.cron_admin() as conn:
            if not has_pg_cron_extension(conn):
                return []
            return conn.execute(
                "SELECT jobname, database, username, schedule FROM cron.job "
                "WHERE database = %s ORDER BY jobname",
                (self.database,),
            ).fetchall()


def create_deployment(
    cluster: DevCluster,
    database: str | None = None,
    *,
    grant_create: bool = True,
    schema_roles: bool = True,
) -> Deployment:
    """An admin's setup: skene's roles pre-created (the owner has no CREATEROLE), an
    owner role with CREATE on a database the admin owns, and login roles for the app
    and the worker (those only with schema_roles: they are granted skene's roles)."""
    suffix = uuid.uuid4().hex[:8]
    dep = Deployment(
        cluster,
        database or f"skene_mpg_{suffix}",
        f"owner_{suffix}",
        f"app_{suffix}",
        f"worker_{suffix}",
    )
    with admin(cluster) as conn:
        for role in SCHEMA_ROLES if schema_roles else ():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                dep.created_roles.append(role)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(dep.owner)
            )
        )
        if schema_roles:
            add_login_roles(conn, dep)
        if database is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dep.database)))
        if grant_create:
            conn.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(dep.database), sql.Identifier(dep.owner)
                )
            )
    return dep


def add_login_roles(conn: psycopg.Connection, dep: Deployment) -> None:
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN IN ROLE skene_app").format(sql.Identifier(dep.app_user))
    )
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN IN ROLE skene_worker").format(sql.Identifier(dep.worker_user))
    )


def customers(dep: Deployment) -> None:
    """The app at work, as its own role: a free customer hits the limit (the gate
    queues an upgrade prompt), and a customer last seen 8 days ago is dormant."""
    with dep.connect(dep.app_user) as app:
        app.execute("SELECT skene.identify('cus_gate', 'gate@example.com')")
        decisions = [
            app.execute(
                "SELECT allowed, reason FROM skene.check_and_increment('cus_gate', 'api_calls')"
            ).fetchone()
            for _ in range(3)
        ]
        assert decisions == [(True, "ok"), (True, "ok"), (False, "limit_reached")]
        app.execute("SELECT skene.identify('cus_away', 'away@example.com')")
        app.execute("SELECT skene.track('cus_away', 'login', '{}', now() - interval '8 days')")


def drop_deployment(dep: Deployment, *, drop_database: bool = True) -> None:
    """Unschedule its jobs, drop its database and its roles (roles are cluster-wide)."""
    roles = [dep.owner, dep.app_user, dep.worker_user]
    with dep.cron_admin() as cron:
        if has_pg_cron_extension(cron):
            cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s "
                "OR username = ANY(%s)",
                (dep.database, roles),
            )
        for role in roles:
            cron.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with admin(dep.cluster) as conn:
        if drop_database:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(dep.database)
                )
            )
        else:
            with dep.admin() as own:
                own.execute("DROP SCHEMA IF EXISTS skene CASCADE")
                for role in roles:
                    own.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        for role in roles + dep.created_roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def cron_cluster(pg_cluster: DevCluster) -> DevCluster:
    """The suite's cluster, where pg_cron keeps its jobs in a database other than the
    applications' (as an admin set it up: the extension created there)."""
    if not pg_cluster.has_pg_cron:
        pytest.skip("pg_cron is not installed on this machine (apt-get install postgresql-15-cron)")
    with admin(pg_cluster, pg_cluster.cron_database) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    return pg_cluster


@pytest.fixture
def deployment(cron_cluster: DevCluster) -> Iterator[Deployment]:
    dep = create_deployment(cron_cluster)
    assert dep.database != cron_cluster.cron_database
    yield dep
    drop_deployment(dep)


def extra_cluster(name: str, **kwargs: Any) -> Iterator[DevCluster]:
    """A cluster of its own for one module, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=f"skene-pg-{name}-"))
    directory.chmod(0o755)
    cluster = DevCluster(directory / "cluster", fast=True, max_connections=40, **kwargs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------
# The commands, as an operator runs them
# ---------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    secrets = ("SKENE_", "RESEND_", "STRIPE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(secrets)}
    env.update(extra)
    return env


def skene_pg(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKENE_PG, *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
    )


def in_process(*args: str, env: dict[str, str] | None = None) -> Result:
    """The command in this process (click's runner): the same code as the installed
    command without a Python start-up per call; the environment is the one given (or
    a clean one), so no SKENE_, RESEND_ or STRIPE_ variable of ours leaks in."""
    from skene_pg.cli import main

    given = env if env is not None else clean_env()
    cleared: dict[str, str | None] = {k: None for k in os.environ if k not in given}
    result = CliRunner().invoke(main, list(args), env={**cleared, **given}, catch_exceptions=False)
    return result


def apply_json(config: Path, url: str, *extra: str) -> dict[str, Any]:
    result = in_process("apply", str(config), "--json", "--database-url", url, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def doctor(url: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = in_process("doctor", "--json", "--database-url", url, *extra, env=env)
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.stdout)


def findings(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check]


def statuses(report: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in report["findings"]:
        out.setdefault(f["check"], set()).add(f["status"])
    return out


def write_config(directory: Path, text: str = CONFIG) -> Path:
    path = directory / "skene.toml"
    path.write_text(text)
    return path
