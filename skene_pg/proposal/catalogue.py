"""The app's tables as init sees them: every ordinary table outside PostgreSQL's and
skene's own schemas, its columns and single-column foreign keys. Read from pg_catalog,
which every role may read; values are sampled only where the role may select."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

_SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "skene", "cron", "pg_toast")
_BARE = re.compile(r"[a-z_][a-z0-9_$]*")
# Words that need quoting as identifiers; enough for the names apps give tables.
_RESERVED = {"user", "order", "group", "table", "select", "where", "limit", "offset", "check"}


def ident(name: str) -> str:
    """A name as SQL writes it: bare when it can be, else double-quoted."""
    if _BARE.fullmatch(name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # name -> type
    references: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> table

    @property
    def sql_name(self) -> str:
        """As a query in skene.toml names it (the public schema left out)."""
        head = "" if self.schema == "public" else ident(self.schema) + "."
        return head + ident(self.name)

    @property
    def file_name(self) -> str:
        """As a source's `table` names it: apply takes "User" as the table "User"."""
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    def column(self, *candidates: str) -> str | None:
        """The first of `candidates` the table has (case-insensitively for snake_case)."""
        lowered = {c.lower(): c for c in self.columns}
        for candidate in candidates:
            if candidate in self.columns:
                return candidate
            if candidate.lower() in lowered:
                return lowered[candidate.lower()]
        return None


def read_tables(conn: psycopg.Connection) -> dict[tuple[str, str], Table]:
    tables: dict[tuple[str, str], Table] = {}
    for schema, name, column, type_ in conn.execute(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, "
        "pg_catalog.format_type(a.atttypid, a.atttypmod) "
        "FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%' "
        "ORDER BY 1, 2, a.attnum",
        (list(_SKIPPED_SCHEMAS),),
    ):
        tables.setdefault((schema, name), Table(schema, name)).columns[column] = type_
    for schema, name, column, ref_schema, ref_name in conn.execute(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, rn.nspname::text, "
        "r.relname::text FROM pg_catalog.pg_constraint k "
        "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] "
        "JOIN pg_catalog.pg_class r ON r.oid = k.confrelid "
        "JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE k.contype = 'f' AND pg_catalog.array_length(k.conkey, 1) = 1"
    ):
        if (schema, name) in tables:
            tables[(schema, name)].references[column] = (ref_schema, ref_name)
    return tables


def sample(conn: psycopg.Connection, table: Table, expression: str, limit: int = 20) -> list[str]:
    """Distinct non-empty values of an expression over a table (sorted), or [] when this
    role may not read it."""
    query = sql.SQL(
        "SELECT DISTINCT ({})::text AS v FROM {} AS {} WHERE ({}) IS NOT NULL ORDER BY 1 LIMIT {}"
    ).format(
        sql.SQL(expression),  # init's own expressions
        sql.Identifier(table.schema, table.name),
        sql.Identifier(table.name),
        sql.SQL(expression),
        sql.Literal(limit),
    )
    try:
        with conn.transaction():
            return [row[0] for row in conn.execute(query) if row[0]]
    except psycopg.Error:
        return []
