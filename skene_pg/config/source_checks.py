"""What apply checks against the database before it writes anything: each source's
table, columns and SQL expressions, and each retention loop's query. Every mistake is
reported with the file's line, and nothing is applied.

A source's expressions run inside the app's writes, in a trigger with the owner's
rights and the pinned path `pg_catalog, pg_temp`, so they are tried here under that
path: an unqualified table in one (`djstripe_customer` for `public.djstripe_customer`)
fails now, not in production. A loop's query runs under the path apply runs with (it
is stored with the loop, as a segment's is), so it is planned under that one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from skene_pg.config.locate import Locator
from skene_pg.config.model import FieldPath, Problem, SkeneConfig, SourceSpec, dotted
from skene_pg.config.sources import COUNT_KEYS

PINNED_PATH = "pg_catalog, pg_temp"
# the keys of each kind that are SQL expressions (the others name columns)
EXPRESSIONS = {
    "customers": ("id", "email", "name", "timezone"),
    "subscriptions": ("customer", "price", "plan", "status"),
}
COLUMNS = {
    "count": COUNT_KEYS[1:],
    "events": ("customer", "at"),
    "activity": ("customer", "column"),
}


@dataclass(frozen=True)
class ResolvedSource:
    spec: SourceSpec
    oid: int
    qualified: str  # schema.table, as the pinned path prints it
    config: dict  # what skene.sources stores: the file's, bare mixed-case columns quoted


class _Checker:
    def __init__(self, conn: psycopg.Connection, config: SkeneConfig) -> None:
        self.conn = conn
        self.config = config
        try:
            self.locator: Locator | None = Locator(config.source.read_text(encoding="utf-8"))
        except OSError:
            self.locator = None
        self.problems: list[Problem] = []

    def report(self, path: FieldPath, message: str) -> None:
        line = self.locator.locate(path) if self.locator else None
        self.problems.append(Problem(self.config.source, line, dotted(path), message))


def _where(spec: SourceSpec) -> FieldPath:
    if spec.kind == "count":
        return ("features", spec.feature or "", "count")
    return ("sources", spec.kind)


def _attempt(
    conn: psycopg.Connection, query: sql.Composed, path: str | None = None
) -> tuple[list[str], str | None]:
    """Run `query` in a savepoint that is always rolled back: the names of its result's
    columns, or the database's error."""
    names: list[str] = []
    try:
        with conn.transaction() as savepoint:
            if path is not None:
                conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (path,))
            cursor = conn.execute(query)
            names = [column.name for column in cursor.description or []]
            raise psycopg.Rollback(savepoint)
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc).strip()
        if exc.diag.message_hint:
            message += f" (hint: {exc.diag.message_hint})"
        return [], message
    return names, None


def resolve_sources(
    conn: psycopg.Connection, config: SkeneConfig
) -> tuple[dict[str, ResolvedSource], list[Problem]]:
    """Each source's table (found with apply's search_path) and checked expressions."""
    checker = _Checker(conn, config)
    resolved = {}
    for spec in config.sources:
        found = _resolve(checker, spec)
        if found is not None:
            resolved[spec.name] = found
    return resolved, checker.problems


def _resolve(checker: _Checker, spec: SourceSpec) -> ResolvedSource | None:
    conn, where = checker.conn, _where(spec)
    table = _table(conn, spec.table)
    if table is None:
        checker.report(
            (*where, "table"),
            f"no table {spec.table} on the search_path apply runs with "
            f"({_setting(conn, 'search_path')}); qualify it, e.g. public.{spec.table}",
        )
        return None
    oid, kind, schema, name = table
    if kind not in ("r", "p"):
        checker.report((*where, "table"), f"{schema}.{name} is not a table (triggers need one)")
        return None
    qualified = f"{_quote(conn, schema)}.{_quote(conn, name)}"
    columns = _columns(conn, oid)
    stored: dict[str, Any] = dict(spec.config)
    for key in COLUMNS.get(spec.kind, ()):
        if spec.config[key] not in columns:
            checker.report(
                (*where, key),
                f"{qualified} has no column {spec.config[key]!r}; its columns: "
                f"{', '.join(sorted(columns))}",
            )
    for key in EXPRESSIONS.get(spec.kind, ()):
        if key not in spec.config:
            continue
        expression = spec.config[key]
        if expression in columns and _quote(conn, expression) != expression:
            stored[key] = _quote(conn, expression)  # "userId" as written means the column
        _, error = _attempt(
            conn,
            sql.SQL("SELECT ({})::text FROM {} AS {} LIMIT 0").format(
                sql.SQL(stored[key]),  # the owner's own SQL
                sql.SQL(qualified),
                sql.Identifier(name),
            ),
            path=PINNED_PATH,
        )
        if error:
            checker.report(
                (*where, key),
                f"{expression!r} does not work over a row of {qualified}: {error}. It runs "
                f"in a trigger with search_path {PINNED_PATH}: qualify tables and functions "
                f"that are not in pg_catalog (e.g. {schema}.other_table)",
            )
    if any(p.field.startswith(dotted(where)) for p in checker.problems):
        return None
    return ResolvedSource(spec, oid, qualified, stored)


def query_problems(conn: psycopg.Connection, config: SkeneConfig) -> list[Problem]:
    """Each retention loop's query plans (EXPLAIN), under the search_path apply runs with
    and stores for it, and returns its customer column."""
    checker = _Checker(conn, config)
    path = _setting(conn, "search_path")
    for index, loop in enumerate(config.loops):
        query = loop.config.get("query")
        if loop.type != "retention" or not query:
            continue
        text = query.rstrip().rstrip(";").rstrip()
        column = loop.config.get("customer_column", "customer_id")
        where: FieldPath = ("loops", index, "query")
        _, error = _attempt(conn, sql.SQL("EXPLAIN {}").format(sql.SQL(text)), path)
        if error is None:
            names, error = _attempt(
                conn,
                sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(sql.SQL(text)),
                path,
            )
            if error is None and column not in names:
                checker.report(
                    ("loops", index, "customer_column"),
                    f"the query of loop {loop.name} returns no column {column!r} "
                    f"(it returns {', '.join(names) or 'none'}); set customer_column to the "
                    "column that holds the customer id",
                )
        if error is not None:
            checker.report(
                where,
                f"the query of loop {loop.name} does not plan with search_path {path}: {error}",
            )
    return checker.problems


def _table(conn: psycopg.Connection, name: str) -> tuple[int, str, str, str] | None:
    """The table `name` means on this session's search_path; a name that only works as
    an identifier ("User", as Prisma names it) is taken as one."""
    for candidate in (name, _quote(conn, name)):
        try:
            with conn.transaction():  # a name that is no SQL name raises: not found either
                row = conn.execute(
                    "SELECT c.oid::bigint, c.relkind::text, n.nspname::text, c.relname::text "
                    "FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.oid = pg_catalog.to_regclass(%s)",
                    (candidate,),
                ).fetchone()
        except psycopg.Error:
            continue
        if row is not None:
            return int(row[0]), row[1], row[2], row[3]
    return None


def _columns(conn: psycopg.Connection, oid: int) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped",
            (oid,),
        )
    }


def _quote(conn: psycopg.Connection, name: str) -> str:
    row = conn.execute("SELECT pg_catalog.quote_ident(%s)", (name,)).fetchone()
    return row[0] if row else name


def _setting(conn: psycopg.Connection, name: str) -> str:
    row = conn.execute("SELECT pg_catalog.current_setting(%s)", (name,)).fetchone()
    return row[0] if row else ""
