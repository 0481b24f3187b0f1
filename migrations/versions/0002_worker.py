"""Worker: job attempts, suppressions, and the queue protocol (claim, extend, finish,
reap, retry, cancel).

Revision ID: 0002
Revises: 0001
"""

from skene_pg.migrations import run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0002_worker.up.sql")


def downgrade() -> None:
    run_sql_file("0002_worker.down.sql")
