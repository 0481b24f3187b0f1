"""alembic environment of skene-pg.

The version table lives in the `skene` schema, so an application's own
`alembic_version` is never touched. Each revision runs the matching file of `sql/`.
"""

from alembic import context
from sqlalchemy import text

from skene_pg.migrations import SCHEMA, VERSION_TABLE

config = context.config


def run_offline() -> None:
    # transaction=False (upgrade_sql): no BEGIN/COMMIT in the script, for tools that
    # run it inside their own transaction.
    context.configure(
        dialect_name="postgresql",
        version_table_schema=SCHEMA,
        version_table=VERSION_TABLE,
        transactional_ddl=config.attributes.get("transaction", True),
        output_buffer=config.output_buffer,
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("skene-pg runs alembic with a connection: use `skene-pg migrate`")
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    # Several app instances may run `skene-pg migrate` at start-up: one at a time.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('skene-pg migrate'))"))
    context.configure(
        connection=connection,
        version_table_schema=SCHEMA,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
