"""When retention loops run: pg_cron jobs kept in step with skene.toml by `skene-pg
apply`, or, where pg_cron does not run them, the worker's own schedule (`run_due`).

Either way a run is `skene.run_loop(name, slot)`, and a slot runs once (the
skene.loop_runs unique key), so two schedulers, or three workers, never queue twice.
That is also why handing a loop to the worker is always safe: at worst both run it.

What pg_cron lets this role do, and what an admin would grant otherwise: pg_cron.py.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from skene_pg.config.model import SkeneConfig, duration_seconds
from skene_pg.jobs.kinds import PeriodicTask
from skene_pg.retention import pg_cron
from skene_pg.retention.cron import Schedule
from skene_pg.retention.pg_cron import Advice, CronAccess

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_TIMEOUT = "60 seconds"
JOB_PREFIX = "skene:"
# pg_cron's cron.job.jobname is a `name`: PostgreSQL cuts it to 63 bytes, and
# cron.schedule overwrites a job of the same name. A longer name gets a readable head
# and a hash of the whole name, so two loops never share a job.
MAX_JOB_NAME = 63
_HASH_CHARS = 10


@dataclass(frozen=True)
class CronJob:
    name: str
    schedule: str
    command: str


def job_name(loop: str, app_database: str, cron_database: str) -> str:
    """`skene:<loop>`; `skene:<database>:<loop>` when pg_cron runs in another database
    (one cluster may serve several applications' databases). Past 63 bytes: the first
    52 bytes, `~` and 10 hex digits of the whole name's SHA-256. Loop names hold no `~`
    or `:`, so a shortened name never equals a whole one."""
    if app_database == cron_database:
        whole = f"{JOB_PREFIX}{loop}"
    else:
        whole = f"{JOB_PREFIX}{app_database}:{loop}"
    raw = whole.encode()
    if len(raw) <= MAX_JOB_NAME:
        return whole
    digest = hashlib.sha256(raw).hexdigest()[:_HASH_CHARS]
    # cut at a character boundary: a database name may be any UTF-8
    head = raw[: MAX_JOB_NAME - _HASH_CHARS - 1].decode(errors="ignore")
    return f"{head}~{digest}"


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


def wanted_jobs(config: SkeneConfig, app_database: str, cron_db: str) -> dict[str, CronJob]:
    """The job of each enabled retention loop, by loop name."""
    jobs = {}
    for loop in config.loops:
        if loop.type != "retention" or not loop.enabled:
            continue
        jobs[loop.name] = CronJob(
            job_name(loop.name, app_database, cron_db),
            loop.config["schedule"],
            # a query loop says `timeout`, a segment `segment_timeout`: both bound the run
            command(loop.name, loop.config.get("segment_timeout") or loop.config.get("timeout")),
        )
    return jobs


def _scheduled_loops(config: SkeneConfig) -> list[str]:
    return sorted(loop.name for loop in config.loops if loop.type == "retention" and loop.enabled)


@dataclass
class Sync:
    """What `apply` did to the schedules: (action, job, detail) changes, and warnings
    for the operator (each with the SQL an admin would run)."""

    changes: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[Advice] = field(default_factory=list)


def sync_cron(conn: psycopg.Connection, config: SkeneConfig, *, dry_run: bool = False) -> Sync:
    """Schedule each enabled retention loop with pg_cron, update changed jobs and
    unschedule the rest of this database's skene jobs; then record in skene.loops which
    loops pg_cron runs. Where this role cannot use pg_cron (not running, not installed,
    no grant) the loops go to the worker (cron_job NULL) with a warning saying why and
    what to grant. Never raises because of pg_cron: the catalogue is applied by now."""
    loops = _scheduled_loops(config)
    access = pg_cron.probe(conn)
    result = Sync()
    if access.running and access.installed is False and loops:
        if dry_run:
            return _planned_with_new_extension(config, access)
        problem = pg_cron.create_extension(conn, access)
        if problem is not None:
            return _hand_to_worker(conn, problem, loops, dry_run=dry_run, access=access)
        log.info("created extension pg_cron in database %s", access.database)
        access = pg_cron.probe(conn)
    if not access.can_schedule:
        return _hand_to_worker(conn, access.problems[0], loops, dry_run=dry_run, access=access)
    assert access.database is not None
    wanted = wanted_jobs(config, access.app_database, access.database)
    try:
        scheduled = _sync_jobs(conn, access, wanted, result, dry_run=dry_run)
    except psycopg.Error as exc:
        result.warnings.append(
            Advice(
                f"pg_cron refused a change in database {access.database}: "
                f"{str(exc).strip().splitlines()[0]}; skene-pg listen runs the loops "
                "pg_cron does not",
                database=access.database,
            )
        )
        scheduled = _still_scheduled(conn, access, wanted)
    if not dry_run:
        _record(conn, scheduled)
    return result


def _sync_jobs(
    conn: psycopg.Connection,
    access: CronAccess,
    wanted: dict[str, CronJob],
    result: Sync,
    *,
    dry_run: bool,
) -> dict[str, str]:
    """Make this database's skene jobs in pg_cron match `wanted`; returns loop -> job
    for the loops pg_cron now runs."""
    assert access.database is not None
    app_db = access.app_database
    by_name = {job.name: job for job in wanted.values()}
    with pg_cron.cron_connection(conn, access.database) as cron:
        current: dict[str, pg_cron.ScheduledJob] = {}
        extra: list[pg_cron.ScheduledJob] = []
        # A superuser sees every role's jobs: keep this role's own, else the first.
        for found in sorted(pg_cron.skene_jobs(cron, app_db), key=lambda j: (not j.mine, j.jobid)):
            if found.name in by_name and found.name not in current:
                current[found.name] = found
            else:
                extra.append(found)  # a removed loop, an older naming, or a duplicate
        # Each change is reported once made, so a refusal part-way reports what was done.
        for gone in sorted(extra, key=lambda j: (j.name, j.jobid)):
            if not dry_run:
                cron.execute("SELECT cron.unschedule(%s::bigint)", (gone.jobid,))
            why = "loop removed or disabled" if gone.name not in by_name else "duplicate job"
            result.changes.append(("delete", gone.name, why))
        for job in sorted(wanted.values(), key=lambda j: j.name):
            old = current.get(job.name)
            if old is not None and (old.schedule, old.command) == (job.schedule, job.command):
                continue
            if not dry_run:
                if old is not None:
                    cron.execute("SELECT cron.unschedule(%s::bigint)", (old.jobid,))
                if access.same_database:  # cron.schedule: PUBLIC's, and enough here
                    cron.execute(
                        "SELECT cron.schedule(%s, %s, %s)", (job.name, job.schedule, job.command)
                    )
                else:
                    cron.execute(
                        "SELECT cron.schedule_in_database(%s, %s, %s, %s)",
                        (job.name, job.schedule, job.command, app_db),
                    )
            if old is None:
                result.changes.append(("create", job.name, f"{job.schedule} in database {app_db}"))
            else:
                result.changes.append(("update", job.name, f"{old.schedule} -> {job.schedule}"))
    return {loop: job.name for loop, job in wanted.items()}


def _still_scheduled(
    conn: psycopg.Connection, access: CronAccess, wanted: dict[str, CronJob]
) -> dict[str, str]:
    """After pg_cron refused a change part-way: the loops whose job is there as wanted
    (the others go to the worker)."""
    assert access.database is not None
    try:
        with pg_cron.cron_connection(conn, access.database) as cron:
            there = {
                (j.name, j.schedule, j.command)
                for j in pg_cron.skene_jobs(cron, access.app_database)
            }
    except psycopg.Error:
        return {}
    return {
        loop: job.name
        for loop, job in wanted.items()
        if (job.name, job.schedule, job.command) in there
    }


def _record(conn: psycopg.Connection, scheduled: dict[str, str]) -> None:
    """Tell the worker which loops pg_cron runs (skene.loops.cron_job); it runs the
    others itself. Only rows that differ are written."""
    with conn.transaction():
        conn.execute(
            "UPDATE skene.loops SET cron_job = NULL WHERE cron_job IS NOT NULL "
            "AND NOT (name = ANY(%s))",
            (list(scheduled),),
        )
        for loop, name in sorted(scheduled.items()):
            conn.execute(
                "UPDATE skene.loops SET cron_job = %s "
                "WHERE name = %s AND cron_job IS DISTINCT FROM %s",
                (name, loop, name),
            )


def _planned_with_new_extension(config: SkeneConfig, access: CronAccess) -> Sync:
    """A dry run where pg_cron's extension is not created yet: apply would create it
    (if this role may) and then every job."""
    assert access.database is not None
    wanted = wanted_jobs(config, access.app_database, access.database)
    return Sync(
        [
            ("create", job.name, f"{job.schedule} in database {access.app_database}")
            for job in sorted(wanted.values(), key=lambda j: j.name)
        ],
        [
            Advice(
                f"pg_cron's extension is not created in database {access.database}: "
                "apply will create it, which needs a superuser or the provider's admin "
                "role (otherwise skene-pg listen runs the loops)",
                ("CREATE EXTENSION pg_cron;",),
                access.database,
            )
        ],
    )


def _hand_to_worker(
    conn: psycopg.Connection,
    problem: Advice,
    loops: list[str],
    *,
    dry_run: bool,
    access: CronAccess | None = None,
) -> Sync:
    """pg_cron won't run the loops for us: clear skene.loops.cron_job so the worker
    runs the ones pg_cron was running (it runs only those without one), a change for
    each, and a warning with what an admin could grant, when there are loops to run."""
    result = Sync()
    why = problem.message
    handed = conn.execute(
        "SELECT name, cron_job FROM skene.loops WHERE cron_job IS NOT NULL ORDER BY name"
    ).fetchall()
    if handed and not dry_run:
        conn.execute(
            "UPDATE skene.loops SET cron_job = NULL WHERE name = ANY(%s) AND cron_job IS NOT NULL",
            ([name for name, _ in handed],),
        )
    result.changes += [
        ("update", job, f"pg_cron does not run it; skene-pg listen runs loop {name} now")
        for name, job in handed
    ]
    if loops:
        result.warnings.append(
            Advice(
                f"{why}; skene-pg listen runs retention loop{'s' if len(loops) > 1 else ''} "
                f"{', '.join(loops)} (keep it running)",
                problem.fix,
                problem.database,
            )
        )
    if handed and access is not None and access.running and access.database:
        # Jobs scheduled before this role lost its grants still fire: harmless (a slot
        # runs once), but someone who may should remove them.
        result.warnings.append(
            Advice(
                "pg_cron may still run the job(s) scheduled before: "
                f"{', '.join(job for _, job in handed)}; a slot runs once, so this only "
                "costs a call, but an admin can remove them",
                tuple(
                    f"SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = "
                    f"{_literal(job)} AND database = {_literal(access.app_database)};"
                    for _, job in handed
                ),
                access.database,
            )
        )
    return result


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
        "SELECT name, config ->> 'schedule', "
        "coalesce(config ->> 'segment_timeout', config ->> 'timeout') FROM skene.loops "
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
