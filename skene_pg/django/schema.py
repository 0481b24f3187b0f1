"""`manage.py migrate` installs and upgrades the skene schema.

UpgradeSkene runs, on Django's own connection and inside the migration's transaction,
the same SQL `skene-pg migrate` runs (migrations.upgrade_sql, without BEGIN/COMMIT),
from the revision the database is at: so whichever of the two ran first, the other
finds the schema current and does nothing, and both record the revision in
skene.alembic_version.

Each skene revision gets a Django migration in skene_pg/django/migrations/ whose
operation is UpgradeSkene() and whose `skene_revision` names it (a test checks the
newest one names the head revision), so `migrate` upgrades existing installs too.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import migrations as django_migrations

from skene_pg import migrations

log = logging.getLogger("skene_pg.django.schema")


def current_revision(cursor: Any) -> str | None:
    cursor.execute("SELECT pg_catalog.to_regclass('skene.alembic_version') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return None
    cursor.execute("SELECT version_num FROM skene.alembic_version")
    row = cursor.fetchone()
    return row[0] if row else None


class UpgradeSkene(django_migrations.operations.base.Operation):
    """Bring the skene schema to the newest revision this skene-pg knows."""

    reduces_to_sql = True
    reversible = True  # backwards: nothing (downgrading drops data: use skene-pg migrate)

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # no Django models

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            raise RuntimeError(f"skene-pg needs PostgreSQL, not {connection.vendor}")
        with connection.cursor() as cursor:
            current = current_revision(cursor)
        chain = migrations.revisions()
        if current == chain[-1]:
            return
        if current is not None and current not in chain:
            log.warning(
                "skene schema is at %s, newer than this skene-pg knows: left as it is", current
            )
            return
        schema_editor.execute(
            migrations.upgrade_sql(from_revision=current, transaction=False), params=None
        )

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        pass

    def describe(self) -> str:
        return "Install or upgrade the skene schema (skene-pg migrate)"
