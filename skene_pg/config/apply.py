"""Apply: make the catalogue (plans, features, limits, loops) match a
validated skene.toml, in one transaction.

The diff is computed as a list of steps, each a human-readable Change plus the
statements that make it, so `--dry-run` shows exactly what a real apply would write.
Only rows that differ are written, so applying the same file twice touches nothing
(not even updated_at).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from skene_pg.config.diff import ApplyRefused, Change, catalogue_steps
from skene_pg.config.model import SkeneConfig

if TYPE_CHECKING:
    from skene_pg.retention.pg_cron import Advice

log = logging.getLogger(__name__)

# Key of the transaction-level advisory lock that serialises concurrent applies: the
# second waits, then diffs against what the first committed. ("skene" in ASCII.)
APPLY_LOCK = 0x736B656E65


def diff(conn: psycopg.Connection, config: SkeneConfig, *, prune: bool = False) -> list[Change]:
    """What applying `config` would change; raises ApplyRefused like apply_config."""
    return [change for change, _ in catalogue_steps(conn, config, prune)]


@dataclass(frozen=True)
class Applied:
    changes: list[Change]
    # what the operator should know: loops pg_cron could not take, with the fix
    warnings: list[Advice] = field(default_factory=list)


def apply_config(
    conn: psycopg.Connection, config: SkeneConfig, *, dry_run: bool = False, prune: bool = False
) -> list[Change]:
    """Apply `config` in one transaction and return the changes (with dry_run: roll
    back, changing nothing). Deleting plans or features needs prune=True. Warnings
    are logged; `apply_with_warnings` returns them."""
    applied = apply_with_warnings(conn, config, dry_run=dry_run, prune=prune)
    for warning in applied.warnings:
        log.warning("%s", warning.message)
    return applied.changes


def apply_with_warnings(
    conn: psycopg.Connection, config: SkeneConfig, *, dry_run: bool = False, prune: bool = False
) -> Applied:
    """apply_config, and the warnings about where retention loops run.

    After the catalogue has committed, retention loops are scheduled as pg_cron jobs
    (in pg_cron's database). Where this role cannot use pg_cron, the loops go to
    `skene-pg listen` and a warning says why and what an admin would grant: pg_cron
    never makes an apply fail half-way."""
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
    synced = sync_cron(conn, config, dry_run=dry_run)
    schedules = [
        Change(action, "schedule", name, detail)  # type: ignore[arg-type]
        for action, name, detail in synced.changes
    ]
    return Applied([change for change, _ in planned] + schedules, synced.warnings)


__all__ = ["Applied", "ApplyRefused", "Change", "apply_config", "apply_with_warnings", "diff"]
