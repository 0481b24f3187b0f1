"""Operations never deadlock the app: changes of limits, plans, overrides and billing
periods bump a catalogue or customer version that the gate compares, instead of
invalidating counter rows an app transaction may hold.

Revision ID: 0007
Revises: 0006
"""

from skene_pg.migrations import restore_function, run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REDEFINED = (
    "skene.check_and_increment(text,text,bigint,text)",
    "skene.set_billing_period(text,timestamptz,timestamptz)",
)


def upgrade() -> None:
    run_sql_file("0007_no_deadlocks.up.sql")


def downgrade() -> None:
    for signature in REDEFINED:
        restore_function(signature, before=revision)
    run_sql_file("0007_no_deadlocks.down.sql")
