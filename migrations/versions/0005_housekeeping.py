"""Housekeeping: skene.housekeep() deletes finished work older than keep_finished in
short batches, keeping what reports and dedupes read; skene.claim_periodic() runs a
daily task once across many workers.

Revision ID: 0005
Revises: 0004
"""

from skene_pg.migrations import run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0005_housekeeping.up.sql")


def downgrade() -> None:
    run_sql_file("0005_housekeeping.down.sql")
