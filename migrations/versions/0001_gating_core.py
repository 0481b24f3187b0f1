"""Gating core: plans, features, limits, customers, usage, idempotency keys, limit
hits, loops, the job outbox and the public functions.

Revision ID: 0001
Revises:
"""

from skene_pg.migrations import run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0001_gating_core.up.sql")


def downgrade() -> None:
    run_sql_file("0001_gating_core.down.sql")
