"""Schema migrations: alembic, driven from code, running the SQL files of `sql/`.

Besides running the chain (`upgrade`, `downgrade`, their `--sql` forms):

- `status` / `require_current`: where a database is against this code's chain;
- `restore_function`: a revision's downgrade puts back a function as the previous
  revisions left it, without a copy of its old body (found by sql_routines.py).

`sql/schema.sql` and the frozen list of released revisions: schema_files.py. The
policy and the recipe: docs/migrations.md."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql as pgsql
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from skene_pg import db
from skene_pg.resources import resource_dir
from skene_pg.sql_routines import FunctionNotFound, latest_definition

SCHEMA = "skene"
VERSION_TABLE = "alembic_version"  # inside SCHEMA, never the application's own
# alembic main option naming another sql/ folder (tests run throwaway chains with it)
SQL_LOCATION_OPTION = "sql_location"


def alembic_config(root: Path | None = None, output: io.StringIO | None = None) -> Config:
    """alembic's configuration for the chain in `root`, a folder holding `sql/` and
    `migrations/` (default: this install's own; tests pass a throwaway chain)."""
    cfg = Config(output_buffer=output) if output is not None else Config()
    if root is None:
        cfg.set_main_option("script_location", str(resource_dir("migrations")))
    else:
        cfg.set_main_option("script_location", str(root / "migrations"))
        cfg.set_main_option(SQL_LOCATION_OPTION, str(root / "sql"))
    return cfg


def _sql_dir(cfg: Config) -> Path:
    location = cfg.get_main_option(SQL_LOCATION_OPTION)
    return Path(location) if location else resource_dir("sql")


@contextmanager
def _connection(url: str) -> Iterator[Connection]:
    # psycopg understands every form of connection string; SQLAlchemy only wraps it.
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: db.connect(url), poolclass=NullPool
    )
    try:
        with engine.begin() as connection:
            yield connection
    except DBAPIError as exc:
        # Callers handle psycopg's errors; SQLAlchemy is only alembic's plumbing.
        if exc.orig is not None:
            raise exc.orig from None
        raise
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", *, root: Path | None = None) -> None:
    cfg = alembic_config(root)
    with _connection(url) as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str, *, root: Path | None = None) -> None:
    cfg = alembic_config(root)
    with _connection(url) as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def upgrade_sql(
    from_revision: str | None = None,
    to_revision: str = "head",
    *,
    transaction: bool = True,
    root: Path | None = None,
) -> str:
    """The SQL of an upgrade, for teams whose own migration tool runs it.

    With `transaction=False` the script has no BEGIN/COMMIT of its own, for tools that
    wrap every migration in their transaction (Django's RunSQL, Flyway, ...)."""
    out = io.StringIO()
    cfg = alembic_config(root, out)
    cfg.attributes["transaction"] = transaction
    target = f"{from_revision}:{to_revision}" if from_revision else to_revision
    command.upgrade(cfg, target, sql=True)
    return out.getvalue()


def downgrade_sql(
    from_revision: str,
    to_revision: str,
    *,
    transaction: bool = True,
    root: Path | None = None,
) -> str:
    out = io.StringIO()
    cfg = alembic_config(root, out)
    cfg.attributes["transaction"] = transaction
    command.downgrade(cfg, f"{from_revision}:{to_revision}", sql=True)
    return out.getvalue()


def current_revision(url: str) -> str | None:
    with _connection(url) as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table_schema": SCHEMA, "version_table": VERSION_TABLE}
        )
        return context.get_current_revision()


def head_revision(*, root: Path | None = None) -> str:
    head = ScriptDirectory.from_config(alembic_config(root)).get_current_head()
    assert head is not None
    return head


def _revisions(cfg: Config) -> list[str]:
    script = ScriptDirectory.from_config(cfg)
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def revisions(*, root: Path | None = None) -> list[str]:
    """Every revision of the chain, oldest first."""
    return _revisions(alembic_config(root))


# ---------------------------------------------------------------------------------
# Inside revision files
# ---------------------------------------------------------------------------------


def _run_in_revision(text: str) -> None:
    from alembic import op

    context = op.get_context()
    if context.as_sql:
        # Offline (--sql): print the SQL as it is, for psql or another tool.
        context.impl.static_output(text)
        return
    # Online: straight to psycopg. With no parameters it sends the whole text in one
    # simple-protocol query, and nothing in it is mistaken for a bind parameter.
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute(text)


def run_sql_file(name: str) -> None:
    """Run one file of `sql/` from inside an alembic revision."""
    from alembic import context

    _run_in_revision((_sql_dir(context.config) / name).read_text())


def restore_function(signature: str, before: str) -> None:
    """In a revision's downgrade: put a function back as the revisions before `before`
    left it (its newest CREATE FUNCTION in their `sql/*.up.sql`, run as CREATE OR
    REPLACE, and its comment). Works online and in offline `--sql` mode.

        def downgrade() -> None:
            restore_function("skene.check_and_increment(text,text,bigint,text)", before=revision)
    """
    from alembic import context

    _run_in_revision(_function_definition(signature, before, context.config))


def function_definition(
    signature: str, before: str | None = None, *, root: Path | None = None
) -> str:
    """The SQL that recreates a function as the revisions before `before` (all of them
    when None) leave it, from their `sql/NNNN_*.up.sql` files. See latest_definition."""
    return _function_definition(signature, before, alembic_config(root))


def _function_definition(signature: str, before: str | None, cfg: Config) -> str:
    chain = _revisions(cfg)
    if before is not None:
        if before not in chain:
            raise ValueError(f"unknown revision {before!r} (known: {', '.join(chain)})")
        chain = chain[: chain.index(before)]
    sql_dir = _sql_dir(cfg)
    files = [path for rev in chain for path in sorted(sql_dir.glob(f"{rev}_*.up.sql"))]
    try:
        return latest_definition(((f"sql/{p.name}", p.read_text()) for p in files), signature)
    except FunctionNotFound as exc:
        where = f"revisions before {before}" if before else "the revisions"
        raise FunctionNotFound(f"{exc} (searched {where}: {len(files)} files)") from None


# ---------------------------------------------------------------------------------
# Status and version check
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationStatus:
    current: str | None  # None: the skene schema is not installed
    head: str  # the newest revision this skene-pg knows
    pending: list[str]  # what `skene-pg migrate` would apply, in order
    known: bool = True  # False: the database is at a revision this skene-pg doesn't know

    @property
    def installed(self) -> bool:
        return self.current is not None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def newer_than_code(self) -> bool:
        return self.current is not None and not self.known


class SchemaMismatch(RuntimeError):
    """The database's skene schema is not one this skene-pg can work with."""

    def __init__(self, message: str, status: MigrationStatus | None = None):
        super().__init__(message)
        self.status = status


class SchemaNotInstalled(SchemaMismatch):
    """No skene schema in this database (never migrated, or downgraded to base)."""


class SchemaOutOfDate(SchemaMismatch):
    """The skene schema is older than this skene-pg needs: run `skene-pg migrate`."""


class SchemaNewerThanCode(SchemaMismatch):
    """The database was migrated by a newer skene-pg: upgrade skene-pg."""


def _read_current(conn: psycopg.Connection) -> str | None:
    was_idle = (
        not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )
    try:
        found = conn.execute(
            "SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE')"
            "   AND pg_catalog.has_table_privilege(c.oid, 'SELECT')"
            "  FROM pg_catalog.pg_class c"
            "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (SCHEMA, VERSION_TABLE),
        ).fetchone()
        if found is None:
            return None
        if not found[0]:
            user = conn.execute("SELECT current_user").fetchone()
            raise SchemaMismatch(
                f"role {user[0] if user else '?'} may not read {SCHEMA}.{VERSION_TABLE}, so the "
                "schema's version is unknown: check it as the schema's owner or skene_worker"
            )
        rows = conn.execute(
            pgsql.SQL("SELECT version_num FROM {}.{}").format(
                pgsql.Identifier(SCHEMA), pgsql.Identifier(VERSION_TABLE)
            )
        ).fetchall()
    finally:
        if was_idle and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            conn.rollback()  # leave the caller's connection as we found it: idle
    if len(rows) > 1:
        versions = ", ".join(sorted(r[0] for r in rows))
        raise SchemaMismatch(f"{SCHEMA}.{VERSION_TABLE} holds several versions ({versions})")
    return rows[0][0] if rows else None


def status(database: str | psycopg.Connection) -> MigrationStatus:
    """Where a database (a URL, or an open connection) is against this code's chain."""
    if isinstance(database, str):
        with db.connect(database, autocommit=True) as conn:
            current = _read_current(conn)
    else:
        current = _read_current(database)
    chain = revisions()
    if current is None:
        return MigrationStatus(None, chain[-1], chain)
    if current not in chain:
        return MigrationStatus(current, chain[-1], [], known=False)
    return MigrationStatus(current, chain[-1], chain[chain.index(current) + 1 :])


def require_current(
    database: str | psycopg.Connection,
    minimum: str | None = None,
    *,
    allow_newer: bool = False,
) -> MigrationStatus:
    """Raise unless the database's skene schema is at `minimum` or later (default:
    this code's head). A schema newer than this code raises SchemaNewerThanCode unless
    `allow_newer` (old code still running while a deploy rolls out)."""
    chain = revisions()
    required = minimum or chain[-1]
    if required not in chain:
        raise ValueError(f"unknown revision {required!r} (this skene-pg knows {', '.join(chain)})")
    found = status(database)
    if found.current is None:
        raise SchemaNotInstalled(
            f"the skene schema is not installed in this database (this skene-pg needs "
            f"{required}): run `skene-pg migrate`",
            found,
        )
    if not found.known:
        if allow_newer:
            return found
        raise SchemaNewerThanCode(
            f"the skene schema is at {found.current}, which this skene-pg does not know "
            f"(its newest revision is {found.head}): the database was migrated by a newer "
            "skene-pg; upgrade skene-pg",
            found,
        )
    if chain.index(found.current) < chain.index(required):
        raise SchemaOutOfDate(
            f"the skene schema is at {found.current} but this skene-pg needs {required}: "
            "run `skene-pg migrate`",
            found,
        )
    return found
