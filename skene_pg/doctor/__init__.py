"""`skene-pg doctor`: look at a deployment and say what would stop it, with the SQL or
setting that fixes each thing.

Each check returns findings: `ok`, `warning` (works, but not as well as it could: a
loop run by the worker instead of pg_cron, email written to files) or `blocker`
(something will not work: the schema is behind, a role is missing, a loop runs
nowhere). The checks only read; a check that cannot look says so as a warning.

The checks live by what they look at: `database` (schema, roles, privileges),
`pg_cron` (pg_cron and the schedules), `connections` (a pooler in front) and
`settings` (email and Stripe, as `listen` would run); `common` holds `Finding`.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg

from skene_pg.doctor.common import Finding, Status
from skene_pg.doctor.connections import check_pooler
from skene_pg.doctor.database import (
    check_privileges,
    check_roles,
    check_schema,
    schema_roles,
    schema_status,
)
from skene_pg.doctor.pg_cron import check_pg_cron
from skene_pg.doctor.settings import ListenSettings, check_email, check_stripe

__all__ = [
    "Finding",
    "ListenSettings",
    "Status",
    "diagnose",
    "exit_blocked",
    "schema_roles",
]


def diagnose(
    conn: psycopg.Connection, listen: ListenSettings, environ: Mapping[str, str]
) -> list[Finding]:
    """Every check, in the order an operator fixes things: schema, roles, privileges,
    pg_cron and the schedules, the connection path, email, Stripe."""
    status = schema_status(conn)
    installed = not isinstance(status, str) and status.installed
    findings = [check_schema(status)]
    findings += check_roles(conn, status)
    findings += check_privileges(conn)
    findings += check_pg_cron(conn, installed=installed)
    findings += check_pooler(conn, listen.listen_database_url)
    findings += check_email(listen, environ)
    findings += check_stripe(conn, environ, installed=installed)
    return findings


def exit_blocked(findings: list[Finding]) -> bool:
    return any(f.status == "blocker" for f in findings)
