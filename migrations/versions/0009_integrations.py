"""Integrations: skene.refund and skene.gates for the Python client and the Django
and FastAPI middleware; feature display names and top-level settings (upgrade_url);
idempotency keys remember the amount they counted.

Revision ID: 0009
Revises: 0008
"""

from skene_pg.migrations import restore_function, run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0009_integrations.up.sql")


def downgrade() -> None:
    # the function first: the old body does not name the column the down file drops
    restore_function("skene.check_and_increment(text,text,bigint,text)", before=revision)
    run_sql_file("0009_integrations.down.sql")
