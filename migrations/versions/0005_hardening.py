"""Hardening: the skene_billing role and one role per trust level, owner-rights code
refused on search paths other roles control, and length and shape checks of every
input (SQLSTATE 22023).

Revision ID: 0005
Revises: 0004
"""

from skene_pg.migrations import run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0005_hardening.up.sql")


def downgrade() -> None:
    run_sql_file("0005_hardening.down.sql")
