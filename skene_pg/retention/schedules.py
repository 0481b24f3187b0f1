"""When retention loops run: pg_cron jobs kept in step with skene.toml by `skene-pg
apply`, or, where pg_cron is not installed, the worker's own schedule (`run_due`).

Either way a run is `skene.run_loop(name, slot)`, and a slot runs once (the
skene.loop_runs unique key), so two schedulers, or three workers, never queue twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from skene_pg import db
from skene_pg.config.model import SkeneConfig, duration_seconds
from skene_pg.jobs.kinds import PeriodicTask
from skene_pg.retention.cron import Schedule

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_TIMEOUT = "60 seconds"
JOB_PREFIX = "skene:"


@dataclass(frozen=True)
class CronJob:
    name: str
    schedule: str
    command: str


def job_name(loop: str, app_database: str, cron_database: str) -> str:
    """`skene:<loop>`; `skene:<database>:<loop>` when pg_cron runs in another database
    (one cluster may serve several applications' databases)."""
    if app_database == cron_database:
        return f"{JOB_PREFIX}{loop}"
    return f"{JOB_PREFIX}{app_database}:{loop}"


def command(loop: str, segment_timeout: str | None) -> str:
    """What the job runs, in one transaction: its turn among retention runs (untimed),
    then the segment timeout, which bounds the run (run_loop catches it and records
    the run as failed), then the loop for this minute's slot. PostgreSQL times each
    statement of the command on its own."""
    return (
        "SELECT skene.retention_turn(); "
        f"SET LOCAL statement_timeout = {timeout_ms(segment_timeout)}; "
        f"SELECT skene.run_loop({_literal(loop)})"
    )


def timeout_ms(segment_timeout: str | None) -> int:
    """statement_timeout for a run, in milliseconds."""
    seconds = duration_seconds(segment_timeout or DEFAULT_SEGMENT_TIMEOUT)
    return 1000 * (seconds or 60)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def cron_database(conn: psycopg.Connection) -> str | None:
    """The database pg_cron runs in, or None when pg_cron is not preloaded."""
    row = conn.execute("SELECT pg_catalog.current_setting('cron.database_name', true)").fetchone()
    return row[0] if row and row[0] else None


def _cron_connect(conn: psycopg.Connection, database: str) -> psycopg.Connection:
    params: dict[str, Any] = conninfo_to_dict(conn.info.dsn)
    params["dbname"] = database
    if conn.info.password:
        params["password"] = conn.info.password
    return db.connect(make_conninfo(**params), autocommit=True)


def _has_cron_extension(cron: psycopg.Connection) -> bool:
    row = cron.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'")
    return row.fetchone() is not None


def wanted_jobs(config: SkeneConfig, app_database: str, cron_db: str) -> dict[str, CronJob]:
    jobs = {}
    for loop in config.loops:
        if loop.type != "retention" or not loop.enabled:
            continue
        name = job_name(loop.name, app_database, cron_db)
        jobs[name] = CronJob(
            name, loop.config["schedule"], command(loop.name, loop.config.get("segment_timeout"))
        )
    return jobs


def sync_cron(
    conn: psycopg.Connection, config: SkeneConfig, *, dry_run: bool = False
) -> list[tuple[str, str, str]]:
    """Schedule each enabled retention loop with pg_cron, update changed ones and
    unschedule the rest of this database's skene jobs. Returns (action, job, detail)
    triples. When pg_cron is not available the worker runs the schedules: loops pg_cron
    ran before are handed to it (cron_job cleared), one "update" each."""
    cron_db = cron_database(conn)
    if cron_db is None:
        return _hand_to_worker(conn, "pg_cron is not preloaded", dry_run=dry_run)
    app_db = conn.info.dbname
    wanted = wanted_jobs(config, app_db, cron_db)
    changes: list[tuple[str, str, str]] = []
    with _cron_connect(conn, cron_db) as cron:
        if not _has_cron_extension(cron):
            if not wanted:
                return []
            if dry_run:
                return [("create", name, job.schedule) for name, job in sorted(wanted.items())]
            try:
                cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            except psycopg.Error as exc:
                log.warning("pg_cron is preloaded but cannot be installed in %s: %s", cron_db, exc)
                why = f"pg_cron cannot be installed in database {cron_db}"
                return _hand_to_worker(conn, why, dry_run=dry_run)
        prefix = job_name("", app_db, cron_db)
        current = {
            name: CronJob(name, schedule, cmd)
            for name, schedule, cmd in cron.execute(
                "SELECT jobname, schedule, command FROM cron.job "
                "WHERE database = %s AND jobname LIKE %s",
                (app_db, prefix.replace("_", r"\_").replace("%", r"\%") + "%"),
            )
            # skene:<loop> in the cron database itself must not catch skene:<db>:<loop>
            if ":" not in name[len(prefix) :]
        }
        for name in sorted(set(current) - set(wanted)):
            changes.append(("delete", name, "loop removed or disabled"))
            if not dry_run:
                cron.execute("SELECT cron.unschedule(%s)", (name,))
        for name, job in sorted(wanted.items()):
            old = current.get(name)
            if old == job:
                continue
            if old is None:
                changes.append(("create", name, f"{job.schedule} in database {app_db}"))
            else:
                changes.append(("update", name, f"{old.schedule} -> {job.schedule}"))
            if not dry_run:
                if old is not None:
                    cron.execute("SELECT cron.unschedule(%s)", (name,))
                cron.execute(
                    "SELECT cron.schedule_in_database(%s, %s, %s, %s)",
                    (name, job.schedule, job.command, app_db),
                )
    if not dry_run:
        # Tell the worker which loops pg_cron runs; it runs the others itself.
        with conn.transaction():
            conn.execute(
                "UPDATE skene.loops SET cron_job = NULL WHERE cron_job IS NOT NULL "
                "AND NOT (cron_job = ANY(%s))",
                (list(wanted),),
            )
            for name, _job in wanted.items():
                loop = name[len(job_name("", app_db, cron_db)) :]
                conn.execute(
                    "UPDATE skene.loops SET cron_job = %s "
                    "WHERE name = %s AND cron_job IS DISTINCT FROM %s",
                    (name, loop, name),
                )
    return changes


def _hand_to_worker(
    conn: psycopg.Connection, why: str, *, dry_run: bool
) -> list[tuple[str, str, str]]:
    """Without pg_cron, clear skene.loops.cron_job so the worker runs the loops pg_cron
    was running (it runs only those without one); a change for each."""
    loops = conn.execute(
        "SELECT name, cron_job FROM skene.loops WHERE cron_job IS NOT NULL ORDER BY name"
    ).fetchall()
    if loops and not dry_run:
        conn.execute(
            "UPDATE skene.loops SET cron_job = NULL WHERE name = ANY(%s) AND cron_job IS NOT NULL",
            ([name for name, _ in loops],),
        )
    return [("update", job, f"{why}; skene-pg listen runs loop {name} now") for name, job in loops]


# --------------------------------------------------------------------------------
# Without pg_cron: the worker runs the schedules
# --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    loop_name: str
    slot: datetime
    state: str
    queued: int
    held_out: int
    error: str | None


def run_due(conn: psycopg.Connection, now: datetime | None = None) -> list[Run]:
    """Run each retention loop that pg_cron does not run, for its latest slot at or
    before `now` (default: skene.now()) unless a run of that slot or a later one
    exists. Each run is its
    own transaction, so a failing loop leaves the others alone. Safe to call from any
    number of workers at once."""
    if now is None:
        row = conn.execute("SELECT skene.now()").fetchone()
        assert row is not None
        now = row[0]
    loops = conn.execute(
        "SELECT name, config ->> 'schedule', config ->> 'segment_timeout' FROM skene.loops "
        "WHERE type = 'retention' AND enabled AND cron_job IS NULL ORDER BY name"
    ).fetchall()
    runs = []
    for name, schedule, timeout in loops:
        try:
            slot = Schedule(schedule).latest(now)
        except ValueError:
            log.warning("retention loop %s: bad schedule %r", name, schedule)
            continue
        if slot is None:
            continue
        # A run of this slot or a later one (by hand) covers it. "Or later" also keeps
        # an old slot from running again once housekeeping deleted its run: it keeps
        # each loop's newest run.
        done = conn.execute(
            "SELECT 1 FROM skene.loop_runs WHERE loop_name = %s AND slot >= %s LIMIT 1",
            (name, slot),
        ).fetchone()
        if done:
            continue
        try:
            run = run_slot(conn, name, slot, timeout)
        except psycopg.Error as exc:
            if conn.broken:
                raise  # the worker reconnects
            # A refused loop (an unsafe search_path, a bad segment) must not stop the
            # others; it is retried at the next poll, once its cause is fixed.
            log.warning("retention loop %s refused: %s", name, exc.diag.message_primary or exc)
            continue
        runs.append(run)
        log.info(
            "retention loop %s ran for %s: %s",
            name,
            slot.isoformat(),
            run.state,
            extra={"loop": name, "queued": run.queued, "held_out": run.held_out},
        )
    return runs


def run_slot(
    conn: psycopg.Connection, loop: str, slot: datetime | None, segment_timeout: str | None
) -> Run:
    """Run one slot of a retention loop (None: this minute) in its own transaction: its
    turn among retention runs (untimed), then the run under the segment timeout. A
    slot that ran before returns its first run."""
    with conn.transaction():
        conn.execute("SELECT skene.retention_turn()")  # waiting is not the run's time
        conn.execute(
            sql.SQL("SET LOCAL statement_timeout = {}").format(
                sql.Literal(timeout_ms(segment_timeout))
            )
        )
        row = conn.execute(
            "SELECT loop_name, slot, state, queued, held_out, error FROM skene.run_loop(%s, %s)",
            (loop, slot),
        ).fetchone()
    assert row is not None
    return Run(*row)


def periodic_task() -> PeriodicTask:
    """Run the schedules pg_cron does not run, on every poll of every worker (a slot
    runs once: skene.loop_runs' unique key)."""
    return PeriodicTask("retention schedules", run_due)
