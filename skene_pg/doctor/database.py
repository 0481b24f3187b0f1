"""The database checks of `skene-pg doctor`: is the schema at this skene-pg's head,
do the roles its revisions create exist (and who is granted them), and may the
connecting role create or own schema skene, so that `migrate` and `apply` can run."""

from __future__ import annotations

import re

import psycopg

from skene_pg import migrations
from skene_pg.doctor.common import Finding, one_row
from skene_pg.resources import resource_dir


def schema_status(conn: psycopg.Connection) -> migrations.MigrationStatus | str:
    try:
        return migrations.status(conn)
    except migrations.SchemaMismatch as exc:  # this role may not read the version table
        return str(exc)


def check_schema(status: migrations.MigrationStatus | str) -> Finding:
    if isinstance(status, str):  # the version table is not readable by this role
        return Finding("schema", "warning", status)
    if not status.installed:
        return Finding(
            "schema",
            "blocker",
            "the skene schema is not installed in this database",
            ("skene-pg migrate",),
        )
    if status.newer_than_code:
        return Finding(
            "schema",
            "warning",
            f"the schema is at {status.current}, newer than this skene-pg knows "
            f"({status.head}): upgrade skene-pg",
        )
    if status.pending:
        return Finding(
            "schema",
            "blocker",
            f"the schema is at {status.current}; this skene-pg needs {status.head} "
            f"(pending: {', '.join(status.pending)}); `skene-pg listen` refuses to start",
            ("skene-pg migrate",),
        )
    return Finding("schema", "ok", f"at {status.current}, the newest this skene-pg knows")


_CREATE_ROLE = re.compile(r"\bCREATE\s+ROLE\s+(\w+)", re.IGNORECASE)
# A comment may name a role the revision does not create (0008 tells operators to
# create skene_test_clock in test clusters): only statements count.
_LINE_COMMENT = re.compile(r"--[^\n]*")


def schema_roles() -> list[str]:
    """The roles the revisions of this skene-pg create (skene_app, skene_worker, and
    any a later revision adds), in the order they first appear."""
    found: list[str] = []
    chain = migrations.revisions()
    for path in sorted(resource_dir("sql").glob("[0-9][0-9][0-9][0-9]_*.up.sql")):
        if path.name[:4] not in chain:
            continue
        for name in _CREATE_ROLE.findall(_LINE_COMMENT.sub("", path.read_text())):
            if name.lower() not in found:
                found.append(name.lower())
    return found


def check_roles(
    conn: psycopg.Connection, status: migrations.MigrationStatus | str
) -> list[Finding]:
    user, can_create = one_row(
        conn,
        "SELECT current_user, rolsuper OR rolcreaterole FROM pg_catalog.pg_roles "
        "WHERE rolname = current_user",
    )
    at_head = not isinstance(status, str) and status.installed and not status.pending
    findings = []
    for role in schema_roles():
        row = conn.execute(
            "SELECT pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'), "
            "  (SELECT pg_catalog.string_agg(m.rolname, ', ' ORDER BY m.rolname) "
            "     FROM pg_catalog.pg_auth_members a "
            "     JOIN pg_catalog.pg_roles m ON m.oid = a.member "
            "    WHERE a.roleid = r.oid AND m.rolcanlogin) "
            "FROM pg_catalog.pg_roles r WHERE r.rolname = %s",
            (role,),
        ).fetchone()
        if row is None:
            if can_create and not at_head:
                findings.append(
                    Finding("roles", "ok", f"role {role} does not exist yet; migrate creates it")
                )
                continue
            why = (
                f"{user} has no CREATEROLE, so `skene-pg migrate` cannot create it"
                if not at_head
                else "the schema's grants to it are gone"
            )
            findings.append(
                Finding(
                    "roles",
                    "blocker",
                    f"role {role} does not exist: {why}; an admin creates it",
                    (f"CREATE ROLE {role} NOLOGIN;",),
                )
            )
            continue
        member, logins = row
        granted = "granted to" if member else "not granted to"
        who = f"; login roles granted it: {logins}" if logins else ""
        findings.append(Finding("roles", "ok", f"role {role} exists ({granted} {user}){who}"))
    return findings


def check_privileges(conn: psycopg.Connection) -> list[Finding]:
    user, quoted, superuser, database, quoted_db, can_create = one_row(
        conn,
        "SELECT current_user, pg_catalog.quote_ident(current_user), r.rolsuper, "
        "  current_database(), pg_catalog.quote_ident(current_database()), "
        "  pg_catalog.has_database_privilege(current_database(), 'CREATE') "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    owner = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(n.nspowner), "
        "  pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE') "
        "FROM pg_catalog.pg_namespace n WHERE n.nspname = %s",
        (migrations.SCHEMA,),
    ).fetchone()
    create = "has CREATE on" if can_create else "has no CREATE on"
    su = " (a superuser: pg_cron jobs it schedules run as a superuser)" if superuser else ""
    if owner is None:
        if can_create:
            return [
                Finding(
                    "privileges",
                    "ok",
                    f"{user}{su} {create} database {database}: migrate can create schema skene",
                )
            ]
        return [
            Finding(
                "privileges",
                "blocker",
                f"{user} {create} database {database}, so `skene-pg migrate` cannot create "
                "schema skene",
                (f"GRANT CREATE ON DATABASE {quoted_db} TO {quoted};",),
            )
        ]
    schema_owner, acts_as_owner = owner
    if acts_as_owner:
        how = "owns" if schema_owner == user else f"acts as {schema_owner}, which owns"
        return [
            Finding(
                "privileges",
                "ok",
                f"{user}{su} {how} schema skene (migrate and apply run as it); "
                f"{create} database {database}",
            )
        ]
    return [
        Finding(
            "privileges",
            "warning",
            f"{user} is not the owner of schema skene ({schema_owner} is): run "
            f"`skene-pg migrate` and `skene-pg apply` as {schema_owner}",
        )
    ]
