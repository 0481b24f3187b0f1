"""Billing: the webhook inbox and Stripe sync, customer links, conversions and the
funnel, and metered usage for Stripe Billing Meters.

Revision ID: 0003
Revises: 0002
"""

from skene_pg.migrations import run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0003_billing.up.sql")


def downgrade() -> None:
    run_sql_file("0003_billing.down.sql")
