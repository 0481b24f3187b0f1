"""Apply: make the catalogue (plans, features, limits, loops) match a
validated skene.toml, in one transaction.

The diff is computed as a list of steps, each a human-readable Change plus the
statements that make it, so `--dry-run` shows exactly what a real apply would write.
Only rows that differ are written, so applying the same file twice touches nothing
(not even updated_at).
"""

from __future__ import annotations

import psycopg

from skene_pg.config.diff import ApplyRefused, Change, catalogue_steps
from skene_pg.config.model import SkeneConfig

# Key of the transaction-level advisory lock that serialises concurrent applies: the
# second waits, then diffs against what the first committed. ("skene" in ASCII.)
APPLY_LOCK = 0x736B656E65


def diff(conn: psycopg.Connection, config: SkeneConfig, *, prune: bool = False) -> list[Change]:
    """What applying `config` would change; raises ApplyRefused like apply_config."""
    return [change for change, _ in catalogue_steps(conn, config, prune)]


def apply_config(
    conn: psycopg.Connection, config: SkeneConfig, *, dry_run: bool = False, prune: bool = False
) -> list[Change]:
    """Apply `config` in one transaction and return the changes (with dry_run: roll
    back, changing nothing). Deleting plans or features needs prune=True.

    Then, where pg_cron is installed, retention loops are scheduled as pg_cron jobs
    (in pg_cron's database, after the catalogue has committed)."""
    from skene_pg.retention.schedules import sync_cron

    with conn.transaction() as transaction:
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (APPLY_LOCK,))
        planned = catalogue_steps(conn, config, prune)
        if dry_run:
            raise psycopg.Rollback(transaction)  # also releases the lock
        with conn.cursor() as cursor:
            for _, statements in planned:
                for query, params in statements:
                    cursor.execute(query, params)
    schedules = [
        Change(action, "schedule", name, detail)  # type: ignore[arg-type]
        for action, name, detail in sync_cron(conn, config, dry_run=dry_run)
    ]
    return [change for change, _ in planned] + schedules


__all__ = ["ApplyRefused", "Change", "apply_config", "diff"]
