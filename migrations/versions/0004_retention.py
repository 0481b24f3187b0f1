"""Retention: activity (skene.track, watched tables), retention loop runs keyed by
time slot, dormancy episodes and steps, holdout and reactivation, milestones.

Revision ID: 0004
Revises: 0003
"""

from skene_pg.migrations import run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0004_retention.up.sql")


def downgrade() -> None:
    run_sql_file("0004_retention.down.sql")
