"""Paper cuts: deferrals counted apart from attempts, a retention message's sent_at is
when it went out, a loop's default time zone for quiet hours, the requested amount in
upgrade prompts, and a test clock role for an app's own tests.

Revision ID: 0008
Revises: 0007
"""

from skene_pg.migrations import restore_function, run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Functions 0008 replaces with CREATE OR REPLACE; the downgrade puts back the bodies
# (and comments) the revisions before it left.
CHANGED = (
    "skene.claim_jobs(text,integer,interval,text[])",
    "skene.finish_job(bigint,uuid,text,text,timestamptz)",
    "skene.reap_expired_leases(integer)",
    "skene.cancel_job(bigint)",
    "skene.note_comeback(text,timestamptz)",
    "skene.retention_send_after(bigint[])",
    "skene.queue_retention(text,jsonb,timestamptz,bigint)",
    "skene.retention_report(integer)",
    "skene.record_block(text,text,timestamptz,skene.decision,bigint)",
    "skene.test_now()",
    "skene.now()",  # only its comment changed
)


def upgrade() -> None:
    run_sql_file("0008_paper_cuts.up.sql")


def downgrade() -> None:
    for signature in CHANGED:
        restore_function(signature, before=revision)
    run_sql_file("0008_paper_cuts.down.sql")
