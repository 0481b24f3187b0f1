"""Sources: the app's own tables feed skene through triggers `skene-pg apply` installs
(customers, subscriptions, events, a last-activity column, counted features), and a
retention loop may take its audience from the app's own query.

Revision ID: 0010
Revises: 0009
"""

from skene_pg.migrations import restore_function, run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Functions 0010 replaces with CREATE OR REPLACE; the downgrade puts back the bodies
# (and comments) the revisions before it left.
CHANGED = (
    "skene.queue_retention(text,jsonb,timestamptz,bigint)",
    "skene.run_loop(text,timestamptz)",
)


def upgrade() -> None:
    run_sql_file("0010_sources.up.sql")


def downgrade() -> None:
    run_sql_file("0010_sources.down.sql")
    for signature in CHANGED:
        restore_function(signature, before=revision)
