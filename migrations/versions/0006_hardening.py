"""Hardening: the skene_billing role and one role per trust level, owner-rights code
refused on search paths other roles control, and length and shape checks of every
input (SQLSTATE 22023).

Revision ID: 0006
Revises: 0005
"""

from skene_pg.migrations import restore_function, run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The functions this revision redefines; its downgrade puts back the bodies the
# revisions before it left.
REDEFINED = (
    "skene.require_customer_id(text)",
    "skene.require_valid(text,text,bigint)",
    "skene.register_customer(text)",
    "skene.check_and_increment(text,text,bigint,text)",
    "skene.check(text,text,bigint)",
    "skene.identify(text,text,text,jsonb,text)",
    "skene.suppress(text,text,text)",
    "skene.link_billing_customer(text,text,text)",
    "skene.ingest_billing_event(text,jsonb)",
    "skene.track(text,text,jsonb,timestamptz)",
    "skene.watched_activity()",
    "skene.run_loop(text,timestamptz)",
)


def upgrade() -> None:
    run_sql_file("0006_hardening.up.sql")


def downgrade() -> None:
    for signature in REDEFINED:
        restore_function(signature, before=revision)
    run_sql_file("0006_hardening.down.sql")
