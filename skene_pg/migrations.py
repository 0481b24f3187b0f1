"""Schema migrations: alembic, driven from code, running the SQL files of `sql/`."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from skene_pg import db
from skene_pg.resources import resource_dir, sql_file

SCHEMA = "skene"
VERSION_TABLE = "alembic_version"  # inside SCHEMA, never the application's own


def _config(output: io.StringIO | None = None) -> Config:
    cfg = Config(output_buffer=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(resource_dir("migrations")))
    return cfg


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


def upgrade(url: str, revision: str = "head") -> None:
    cfg = _config()
    with _connection(url) as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str) -> None:
    cfg = _config()
    with _connection(url) as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def upgrade_sql(from_revision: str | None = None, to_revision: str = "head") -> str:
    """The SQL of an upgrade, for teams whose own migration tool runs it."""
    out = io.StringIO()
    target = f"{from_revision}:{to_revision}" if from_revision else to_revision
    command.upgrade(_config(out), target, sql=True)
    return out.getvalue()


def downgrade_sql(from_revision: str, to_revision: str) -> str:
    out = io.StringIO()
    command.downgrade(_config(out), f"{from_revision}:{to_revision}", sql=True)
    return out.getvalue()


def current_revision(url: str) -> str | None:
    with _connection(url) as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table_schema": SCHEMA, "version_table": VERSION_TABLE}
        )
        return context.get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def run_sql_file(name: str) -> None:
    """Run one file of `sql/` from inside an alembic revision."""
    from alembic import op

    text = sql_file(name)
    context = op.get_context()
    if context.as_sql:
        # Offline (--sql): print the file as it is, for psql or another tool.
        context.impl.static_output(text)
        return
    # Online: straight to psycopg. With no parameters it sends the whole file in one
    # simple-protocol query, and nothing in it is mistaken for a bind parameter.
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute(text)
