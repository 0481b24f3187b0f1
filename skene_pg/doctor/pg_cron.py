"""The pg_cron checks of `skene-pg doctor`: is pg_cron running where this role may
schedule retention loops (without it, `listen` runs them, which is fine), and does
every enabled retention loop run somewhere: by the worker, or by a pg_cron job that
exists under the name `apply` gives it."""

from __future__ import annotations

import psycopg

from skene_pg.doctor.common import Finding
from skene_pg.logs import first_line
from skene_pg.retention import pg_cron, schedules


def check_pg_cron(conn: psycopg.Connection, *, installed: bool) -> list[Finding]:
    """pg_cron, then (once the schema is installed) the loops it or the worker runs."""
    access = pg_cron.probe(conn)
    findings = [_pg_cron(access)]
    if installed:
        findings += _schedules(conn, access)
    return findings


def _pg_cron(access: pg_cron.CronAccess) -> Finding:
    if access.can_schedule:
        how = "cron.schedule" if access.same_database else "cron.schedule_in_database"
        return Finding(
            "pg_cron",
            "ok",
            f"pg_cron {access.version} is running in database {access.database}; "
            f"{access.role} may schedule retention loops there ({how})",
        )
    problem = access.problems[0]
    if not access.running and not access.configured:
        # No pg_cron is a supported deployment, not a fault: say where loops run.
        return Finding(
            "pg_cron",
            "ok",
            f"{problem.message}: `skene-pg listen` runs retention loops (to use pg_cron: "
            "the fix below)",
            problem.fix,
            problem.database,
        )
    return Finding(
        "pg_cron",
        "warning",
        f"{problem.message}: `skene-pg listen` runs retention loops instead",
        problem.fix,
        problem.database,
    )


def _schedules(conn: psycopg.Connection, access: pg_cron.CronAccess) -> list[Finding]:
    """Whether every enabled retention loop runs somewhere: a loop whose cron_job names
    a job pg_cron will not run is skipped by the worker too, so it runs nowhere."""
    try:
        loops = conn.execute(
            "SELECT name, cron_job FROM skene.loops "
            "WHERE type = 'retention' AND enabled ORDER BY name"
        ).fetchall()
    except psycopg.Error as exc:
        return [Finding("schedules", "warning", f"cannot read skene.loops: {first_line(exc)}")]
    if not loops:
        return [Finding("schedules", "ok", "no retention loops")]
    by_worker = [name for name, job in loops if job is None]
    by_cron = {name: job for name, job in loops if job is not None}
    findings = []
    if by_worker:
        findings.append(Finding("schedules", "ok", f"skene-pg listen runs {', '.join(by_worker)}"))
    if not by_cron:
        return findings
    apply = ("skene-pg apply skene.toml   # hands them to the worker or schedules them again",)
    names = ", ".join(sorted(by_cron))
    if not access.running:
        return [
            *findings,
            Finding(
                "schedules",
                "blocker",
                f"pg_cron is not running, yet skene.loops says it runs {names}: "
                "the worker skips them, so they run nowhere",
                apply,
            ),
        ]
    jobs = _jobs_in_cron(conn, access)
    if jobs is None:
        return [
            *findings,
            Finding(
                "schedules",
                "warning",
                f"skene.loops says pg_cron runs {names}, but {access.role} cannot read "
                "pg_cron's jobs to check (see pg_cron); `skene-pg apply` hands them to "
                "the worker",
                apply,
            ),
        ]
    expected = {
        name: schedules.job_name(name, access.app_database, access.database or "")
        for name in by_cron
    }
    claimed: dict[str, list[str]] = {}
    for name, job in by_cron.items():
        claimed.setdefault(job, []).append(name)
    nowhere = sorted(name for name, job in by_cron.items() if job not in jobs)
    shared = sorted(", ".join(names) for job, names in claimed.items() if len(names) > 1)
    renamed = sorted(name for name, job in by_cron.items() if job in jobs and job != expected[name])
    if nowhere:
        findings.append(
            Finding(
                "schedules",
                "blocker",
                f"skene.loops says pg_cron runs {', '.join(nowhere)}, but pg_cron has no "
                f"such job for database {access.app_database}: the worker skips them, so "
                "they run nowhere",
                apply,
            )
        )
    if shared:
        findings.append(
            Finding(
                "schedules",
                "blocker",
                f"loops share one pg_cron job ({'; '.join(shared)}): only one of them runs",
                apply,
            )
        )
    if renamed:
        findings.append(
            Finding(
                "schedules",
                "warning",
                f"pg_cron jobs of {', '.join(renamed)} have an older name",
                apply,
            )
        )
    fine = sorted(set(by_cron) - set(nowhere) - set(renamed))
    if fine and not shared:
        findings.append(
            Finding(
                "schedules",
                "ok",
                f"pg_cron runs {', '.join(fine)} (in database {access.app_database})",
            )
        )
    return findings


def _jobs_in_cron(conn: psycopg.Connection, access: pg_cron.CronAccess) -> set[str] | None:
    if access.database is None or access.installed is not True:
        return None
    try:
        with pg_cron.cron_connection(conn, access.database) as cron:
            return {job.name for job in pg_cron.skene_jobs(cron, access.app_database)}
    except psycopg.Error:
        return None
