"""Schema migrations: alembic, driven from code, running the SQL files of `sql/`.

Besides running the chain (`upgrade`, `downgrade`, their `--sql` forms) this module
keeps it honest across releases (docs/migrations.md):

- `status` / `require_current`: where a database is against this code's chain.
- `restore_function`: a revision's downgrade puts back a function as the previous
  revisions left it, without a copy of its old body.
- `fresh_schema_sql` / `write_schema_sql`: `sql/schema.sql`, the head schema whole.
- `release` / `frozen_violations`: `sql/released.sha256`, the checksums of the
  revision files already released, which must never change.

`python -m skene_pg.migrations schema|release` runs the last two from a checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from skene_pg import db
from skene_pg.resources import resource_dir

SCHEMA = "skene"
VERSION_TABLE = "alembic_version"  # inside SCHEMA, never the application's own
SCHEMA_SQL = "schema.sql"  # in sql/: the head schema, generated (`make schema`)
RELEASED_LIST = "released.sha256"  # in sql/: checksums of the released revision files
FROZEN_MESSAGE = (
    "released revisions are frozen: add a new revision instead (see docs/migrations.md)"
)
# alembic main option naming another sql/ folder (tests run throwaway chains with it)
SQL_LOCATION_OPTION = "sql_location"


def alembic_config(root: Path | None = None, output: io.StringIO | None = None) -> Config:
    """alembic's configuration for the chain in `root`, a folder holding `sql/` and
    `migrations/` (default: this install's own; tests pass a throwaway chain)."""
    cfg = Config(output_buffer=output) if output is not None else Config()
    if root is None:
        cfg.set_main_option("script_location", str(resource_dir("migrations")))
    else:
        cfg.set_main_option("script_location", str(root / "migrations"))
        cfg.set_main_option(SQL_LOCATION_OPTION, str(root / "sql"))
    return cfg


def _sql_dir(cfg: Config) -> Path:
    location = cfg.get_main_option(SQL_LOCATION_OPTION)
    return Path(location) if location else resource_dir("sql")


@contextmanager
def _connection(url: str) -> Iterator[Connection]:
    # psycopg understands every form of connection string; SQLAlchemy only wraps it.
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: db.connect(url), poolclass=NullPool
    )
    try:
        with engine.begin() as connection:
            yield connection
    except DBAPIError as exc:
        # Callers handle psycopg's errors; SQLAlchemy is only alembic's plumbing.
        if exc.orig is not None:
            raise exc.orig from None
        raise
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", *, root: Path | None = None) -> None:
    cfg = alembic_config(root)
    with _connection(url) as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str, *, root: Path | None = None) -> None:
    cfg = alembic_config(root)
    with _connection(url) as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def upgrade_sql(
    from_revision: str | None = None,
    to_revision: str = "head",
    *,
    transaction: bool = True,
    root: Path | None = None,
) -> str:
    """The SQL of an upgrade, for teams whose own migration tool runs it.

    With `transaction=False` the script has no BEGIN/COMMIT of its own, for tools that
    wrap every migration in their transaction (Django's RunSQL, Flyway, ...)."""
    out = io.StringIO()
    cfg = alembic_config(root, out)
    cfg.attributes["transaction"] = transaction
    target = f"{from_revision}:{to_revision}" if from_revision else to_revision
    command.upgrade(cfg, target, sql=True)
    return out.getvalue()


def downgrade_sql(
    from_revision: str,
    to_revision: str,
    *,
    transaction: bool = True,
    root: Path | None = None,
) -> str:
    out = io.StringIO()
    cfg = alembic_config(root, out)
    cfg.attributes["transaction"] = transaction
    command.downgrade(cfg, f"{from_revision}:{to_revision}", sql=True)
    return out.getvalue()


def current_revision(url: str) -> str | None:
    with _connection(url) as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table_schema": SCHEMA, "version_table": VERSION_TABLE}
        )
        return context.get_current_revision()


def head_revision(*, root: Path | None = None) -> str:
    head = ScriptDirectory.from_config(alembic_config(root)).get_current_head()
    assert head is not None
    return head


def _revisions(cfg: Config) -> list[str]:
    script = ScriptDirectory.from_config(cfg)
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def revisions(*, root: Path | None = None) -> list[str]:
    """Every revision of the chain, oldest first."""
    return _revisions(alembic_config(root))


# ---------------------------------------------------------------------------------
# Inside revision files
# ---------------------------------------------------------------------------------


def _run_in_revision(text: str) -> None:
    from alembic import op

    context = op.get_context()
    if context.as_sql:
        # Offline (--sql): print the SQL as it is, for psql or another tool.
        context.impl.static_output(text)
        return
    # Online: straight to psycopg. With no parameters it sends the whole text in one
    # simple-protocol query, and nothing in it is mistaken for a bind parameter.
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute(text)


def run_sql_file(name: str) -> None:
    """Run one file of `sql/` from inside an alembic revision."""
    from alembic import context

    _run_in_revision((_sql_dir(context.config) / name).read_text())


def restore_function(signature: str, before: str) -> None:
    """In a revision's downgrade: put a function back as the revisions before `before`
    left it (its newest CREATE FUNCTION in their `sql/*.up.sql`, run as CREATE OR
    REPLACE, and its comment). Works online and in offline `--sql` mode.

        def downgrade() -> None:
            restore_function("skene.check_and_increment(text,text,bigint,text)", before=revision)
    """
    from alembic import context

    _run_in_revision(_function_definition(signature, before, context.config))


# ---------------------------------------------------------------------------------
# Finding a function's definition in the SQL files
# ---------------------------------------------------------------------------------


class FunctionNotFound(LookupError):
    """No revision before the given one defines the function (or one dropped it)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # word, qident, string, dollar, param, number, op, meta (a psql \command)
    text: str
    start: int
    end: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    def is_op(self, op: str) -> bool:
        return self.kind == "op" and self.text == op


_IDENT_CHAR = r"A-Za-z_\u0080-\U0010ffff"
_WORD_RE = re.compile(rf"[{_IDENT_CHAR}][{_IDENT_CHAR}0-9$]*")
_DOLLAR_RE = re.compile(rf"\$(?:[{_IDENT_CHAR}][{_IDENT_CHAR}0-9]*)?\$")
_PARAM_RE = re.compile(r"\$[0-9]+")
_NUMBER_RE = re.compile(r"[0-9][0-9A-Za-z_.]*")


def _skip_quoted(text: str, i: int, quote: str, *, backslash: bool) -> int:
    """End of the literal opening at `i` ('...', E'...' from its quote, "...")."""
    j = i + 1
    while True:
        if j >= len(text):
            raise ValueError(f"unterminated {quote}-quoted text at offset {i}")
        c = text[j]
        if backslash and c == "\\":
            j += 2
        elif c == quote:
            if text.startswith(quote, j + 1):  # a doubled quote stands for itself
                j += 2
            else:
                return j + 1
        else:
            j += 1


def _skip_block_comment(text: str, i: int) -> int:
    depth, j = 0, i
    while j < len(text):
        if text.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif text.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    raise ValueError(f"unterminated /* comment at offset {i}")


def _tokens(text: str) -> Iterator[_Token]:
    """PostgreSQL's lexical structure, enough to find statements: comments (nested
    block comments too) are skipped; strings, E'' strings, quoted identifiers and
    dollar-quoted text ($$, $fn$, ...) are single tokens, whatever they contain."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if text.startswith("--", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
            continue
        if text.startswith("/*", i):
            i = _skip_block_comment(text, i)
            continue
        if c == "\\" and (i == 0 or text[i - 1] == "\n"):
            newline = text.find("\n", i)
            kind, end = "meta", n if newline < 0 else newline
        elif c == "'":
            kind, end = "string", _skip_quoted(text, i, "'", backslash=False)
        elif c in "eE" and text.startswith("'", i + 1):
            kind, end = "string", _skip_quoted(text, i + 1, "'", backslash=True)
        elif c == '"':
            kind, end = "qident", _skip_quoted(text, i, '"', backslash=False)
        elif c == "$":
            if tag := _DOLLAR_RE.match(text, i):
                close = text.find(tag.group(), tag.end())
                if close < 0:
                    raise ValueError(f"unterminated {tag.group()} quote at offset {i}")
                kind, end = "dollar", close + len(tag.group())
            elif param := _PARAM_RE.match(text, i):
                kind, end = "param", param.end()
            else:
                kind, end = "op", i + 1
        elif word := _WORD_RE.match(text, i):
            kind, end = "word", word.end()
        elif number := _NUMBER_RE.match(text, i):
            kind, end = "number", number.end()
        else:
            kind, end = "op", i + 1
        yield _Token(kind, text[i:end], i, end)
        i = end


def _statements(text: str) -> Iterator[list[_Token]]:
    """Top-level statements, as psql splits them: at semicolons outside parentheses
    and outside the BEGIN ... END of a SQL-standard function body (BEGIN ATOMIC)."""
    current: list[_Token] = []
    parens = begins = 0
    for token in _tokens(text):
        if token.kind == "meta" and not current:  # `\restrict ...` of pg_dump: on its own
            yield [token]
            continue
        current.append(token)
        if token.is_op("(") or token.is_op("["):
            parens += 1
        elif token.is_op(")") or token.is_op("]"):
            parens = max(parens - 1, 0)
        elif token.is_op(";") and parens == 0 and begins == 0:
            yield current
            current = []
        elif token.kind == "word" and parens == 0 and _creates_routine(current):
            word = token.text.lower()
            if word == "begin" or (word == "case" and begins > 0):
                begins += 1
            elif word == "end" and begins > 0:
                begins -= 1
    if current:
        yield current


def _creates_routine(statement: Sequence[_Token]) -> bool:
    words = [t.text.lower() for t in statement[:5] if t.kind == "word"]
    if words[:1] != ["create"]:
        return False
    rest = words[3:4] if words[1:3] == ["or", "replace"] else words[1:2]
    return rest in (["function"], ["procedure"])


_MODES = ("in", "out", "inout", "variadic")
_SIMPLE_QUOTED = re.compile(r'"(?!char")[a-z_][a-z0-9_$]*"')
# First words of type names that are several words long: `double precision`,
# `character varying`, `timestamp with time zone`, `interval day to second`, ...
_MULTIWORD_TYPES = {
    "double": {"precision"},
    "character": {"varying"},
    "char": {"varying"},
    "national": {"character", "char"},
    "nchar": {"varying"},
    "bit": {"varying"},
    "timestamp": {"with", "without"},
    "time": {"with", "without"},
    "interval": {"year", "month", "day", "hour", "minute", "second"},
}
_TYPE_ALIASES = {
    "int": "integer",
    "int4": "integer",
    "int2": "smallint",
    "int8": "bigint",
    "bool": "boolean",
    "float": "double precision",
    "float8": "double precision",
    "float4": "real",
    "decimal": "numeric",
    "varchar": "character varying",
    "char varying": "character varying",
    "national character varying": "character varying",
    "national char varying": "character varying",
    "nchar varying": "character varying",
    "char": "character",
    "bpchar": "character",
    "national character": "character",
    "national char": "character",
    "nchar": "character",
    "varbit": "bit varying",
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "timetz": "time with time zone",
    "time": "time without time zone",
}


def _split_top_level(tokens: Sequence[_Token], separator: str) -> list[list[_Token]]:
    parts: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.is_op("(") or token.is_op("["):
            depth += 1
        elif token.is_op(")") or token.is_op("]"):
            depth -= 1
        if depth == 0 and token.is_op(separator):
            parts.append([])
        else:
            parts[-1].append(token)
    return parts if parts != [[]] else []


def _identifier(token: _Token) -> str:
    if token.kind == "qident":
        return token.text[1:-1].replace('""', '"')
    return token.text.lower()


def _canonical_type(tokens: Sequence[_Token]) -> str:
    """A parameter's type as format_type() writes it: aliases resolved (int4 ->
    integer, timestamptz -> timestamp with time zone), type modifiers dropped, one
    `[]` for any array, `pg_catalog.` left out."""
    text, depth, array = "", 0, False
    for token in tokens:
        if token.is_op("(") or token.is_op("["):
            array = array or token.is_op("[")
            depth += 1
        elif token.is_op(")") or token.is_op("]"):
            depth -= 1
        elif depth > 0:
            continue
        elif token.is_word("array"):
            array = True
        elif token.is_op("."):
            text += "."
        else:
            part = token.text if token.kind == "qident" else token.text.lower()
            if _SIMPLE_QUOTED.fullmatch(part):  # "text" is text; "char" stays "char"
                part = part[1:-1]
            text += part if not text or text.endswith(".") else " " + part
    if text.startswith("pg_catalog."):
        text = text.removeprefix("pg_catalog.")
    text = _TYPE_ALIASES.get(text, text)
    return text + "[]" if array else text


def _identity_types(arguments: Sequence[_Token], *, procedure: bool) -> list[str]:
    """The types that identify a routine, from its parenthesised parameter list:
    names, defaults and OUT parameters (for functions) left out."""
    types = []
    for argument in _split_top_level(arguments, ","):
        tokens: list[_Token] = []
        for token in argument:  # the default is no part of the identity
            if token.is_word("default") or token.is_op("="):
                break
            tokens.append(token)
        mode = "in"
        if tokens and tokens[0].is_word(*_MODES):
            mode, tokens = tokens[0].text.lower(), tokens[1:]
        elif len(tokens) > 2 and tokens[1].is_word(*_MODES):  # `name IN type` is valid too
            mode, tokens = tokens[1].text.lower(), [tokens[0], *tokens[2:]]
        if mode == "out" and not procedure:
            continue
        # `name type` or a bare `type`: a type never starts with punctuation, and
        # `double precision`, `int ARRAY` are one type
        if (
            len(tokens) > 1
            and tokens[0].kind in ("word", "qident")
            and tokens[1].kind in ("word", "qident")
            and not tokens[1].is_word("array", *_MULTIWORD_TYPES.get(tokens[0].text.lower(), ()))
        ):
            tokens = tokens[1:]  # the parameter's name
        types.append(_canonical_type(tokens))
    return types


def _parse_name(tokens: Sequence[_Token], i: int) -> tuple[str, int]:
    """A possibly schema-qualified name starting at tokens[i]: (`schema.name`, next i)."""
    parts = [_identifier(tokens[i])]
    i += 1
    while i + 1 < len(tokens) and tokens[i].is_op(".") and tokens[i + 1].kind in ("word", "qident"):
        parts.append(_identifier(tokens[i + 1]))
        i += 2
    return ".".join(parts), i


def _parse_routine(tokens: Sequence[_Token], i: int, *, procedure: bool) -> tuple[str, str, int]:
    """`name(args)` at tokens[i]: (name, canonical signature or "" without args, next i)."""
    name, i = _parse_name(tokens, i)
    if i >= len(tokens) or not tokens[i].is_op("("):
        return name, "", i
    depth, j = 0, i
    while j < len(tokens):
        if tokens[j].is_op("("):
            depth += 1
        elif tokens[j].is_op(")"):
            depth -= 1
            if depth == 0:
                break
        j += 1
    types = _identity_types(tokens[i + 1 : j], procedure=procedure)
    return name, f"{name}({','.join(types)})", j + 1


def canonical_signature(signature: str) -> str:
    """`schema.name(type,type)` as this module compares them: types resolved as
    format_type() writes them, parameter names and defaults left out, `skene.` added
    to an unqualified name. `skene.f(amount int8 DEFAULT 1)` -> `skene.f(bigint)`."""
    tokens = list(_tokens(signature))
    if not tokens or tokens[0].kind not in ("word", "qident"):
        raise ValueError(f"not a function signature: {signature!r}")
    name, canonical, end = _parse_routine(tokens, 0, procedure=False)
    if not canonical or end != len(tokens):
        raise ValueError(
            f"not a function signature: {signature!r} (write it as "
            "skene.name(type, type), e.g. skene.check_and_increment(text,text,bigint,text))"
        )
    if "." not in name:
        canonical = f"{SCHEMA}.{canonical}"
    return canonical


@dataclass(frozen=True)
class _RoutineStatement:
    action: str  # create, drop, comment
    signature: str  # canonical; for a DROP without arguments, just the name
    text: str  # the statement (a CREATE already rewritten as CREATE OR REPLACE)
    kind: str = "FUNCTION"  # or PROCEDURE


def _routine_statements(text: str) -> Iterator[_RoutineStatement]:
    """The CREATE, DROP and COMMENT ON statements of functions and procedures in a
    SQL file, in order."""
    for statement in _statements(text):
        words = [t.text.lower() if t.kind == "word" else None for t in statement[:6]]
        words += [None] * (6 - len(words))
        source = text[statement[0].start : statement[-1].end]
        if words[0] == "create":
            i = 3 if words[1:3] == ["or", "replace"] else 1
            if words[i] not in ("function", "procedure"):
                continue
            procedure = words[i] == "procedure"
            _, signature, _ = _parse_routine(statement, i + 1, procedure=procedure)
            if i == 1:  # CREATE FUNCTION -> CREATE OR REPLACE FUNCTION, the rest as written
                head_end = statement[i].end - statement[0].start
                source = f"CREATE OR REPLACE {statement[i].text.upper()}{source[head_end:]}"
            kind = "PROCEDURE" if procedure else "FUNCTION"
            yield _RoutineStatement("create", signature, source, kind)
        elif words[0] == "drop" and words[1] in ("function", "procedure", "routine"):
            procedure = words[1] == "procedure"
            i = 4 if words[2:4] == ["if", "exists"] else 2
            end = len(statement) - 1 if statement[-1].is_op(";") else len(statement)
            for target in _split_top_level(statement[i:end], ","):
                target = [t for t in target if not t.is_word("cascade", "restrict")]
                if target:
                    name, signature, _ = _parse_routine(target, 0, procedure=procedure)
                    yield _RoutineStatement("drop", signature or name, source)
        elif words[:2] == ["comment", "on"] and words[2] in ("function", "procedure", "routine"):
            _, signature, _ = _parse_routine(statement, 3, procedure=words[2] == "procedure")
            yield _RoutineStatement("comment", signature, source)


def _terminated(statement: str) -> str:
    return statement if statement.endswith(";") else statement + ";"


def _quoted_signature(signature: str) -> str:
    name, _, arguments = signature.partition("(")
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))
    return f"{quoted}({arguments}"


def latest_definition(sources: Iterable[tuple[str, str]], signature: str) -> str:
    """The SQL that recreates `signature` as the SQL texts `sources` ((label, text),
    oldest first) leave it: its newest CREATE FUNCTION, as CREATE OR REPLACE, then its
    newest COMMENT ON (or `IS NULL` when it has none)."""
    wanted = canonical_signature(signature)
    wanted_name = wanted.partition("(")[0]
    definition: _RoutineStatement | None = None
    comment: str | None = None
    dropped_in: str | None = None
    overloads: set[str] = set()
    for label, text in sources:
        for statement in _routine_statements(text):
            if statement.signature.partition("(")[0] == wanted_name:
                overloads.add(statement.signature)
            if statement.signature not in (wanted, wanted_name):
                continue
            if statement.action == "create":
                definition, dropped_in = statement, None
            elif statement.action == "drop":
                definition, comment, dropped_in = None, None, label
            else:
                comment = statement.text
    if definition is None:
        if dropped_in:
            raise FunctionNotFound(f"{wanted} was dropped by {dropped_in}")
        others = sorted(s for s in overloads - {wanted, wanted_name} if "(" in s)
        hint = f"; defined with that name: {', '.join(others)}" if others else ""
        raise FunctionNotFound(f"no CREATE FUNCTION {wanted} in the SQL files{hint}")
    if comment is None:
        comment = f"COMMENT ON {definition.kind} {_quoted_signature(wanted)} IS NULL"
    return f"{_terminated(definition.text)}\n{_terminated(comment)}\n"


def function_definition(
    signature: str, before: str | None = None, *, root: Path | None = None
) -> str:
    """The SQL that recreates a function as the revisions before `before` (all of them
    when None) leave it, from their `sql/NNNN_*.up.sql` files. See latest_definition."""
    return _function_definition(signature, before, alembic_config(root))


def _function_definition(signature: str, before: str | None, cfg: Config) -> str:
    chain = _revisions(cfg)
    if before is not None:
        if before not in chain:
            raise ValueError(f"unknown revision {before!r} (known: {', '.join(chain)})")
        chain = chain[: chain.index(before)]
    sql_dir = _sql_dir(cfg)
    files = [path for rev in chain for path in sorted(sql_dir.glob(f"{rev}_*.up.sql"))]
    try:
        return latest_definition(((f"sql/{p.name}", p.read_text()) for p in files), signature)
    except FunctionNotFound as exc:
        where = f"revisions before {before}" if before else "the revisions"
        raise FunctionNotFound(f"{exc} (searched {where}: {len(files)} files)") from None


# ---------------------------------------------------------------------------------
# Status and version check
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationStatus:
    current: str | None  # None: the skene schema is not installed
    head: str  # the newest revision this skene-pg knows
    pending: list[str]  # what `skene-pg migrate` would apply, in order
    known: bool = True  # False: the database is at a revision this skene-pg doesn't know

    @property
    def installed(self) -> bool:
        return self.current is not None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def newer_than_code(self) -> bool:
        return self.current is not None and not self.known


class SchemaMismatch(RuntimeError):
    """The database's skene schema is not one this skene-pg can work with."""

    def __init__(self, message: str, status: MigrationStatus | None = None):
        super().__init__(message)
        self.status = status


class SchemaNotInstalled(SchemaMismatch):
    """No skene schema in this database (never migrated, or downgraded to base)."""


class SchemaOutOfDate(SchemaMismatch):
    """The skene schema is older than this skene-pg needs: run `skene-pg migrate`."""


class SchemaNewerThanCode(SchemaMismatch):
    """The database was migrated by a newer skene-pg: upgrade skene-pg."""


def _read_current(conn: psycopg.Connection) -> str | None:
    was_idle = (
        not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )
    try:
        found = conn.execute(
            "SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE')"
            "   AND pg_catalog.has_table_privilege(c.oid, 'SELECT')"
            "  FROM pg_catalog.pg_class c"
            "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (SCHEMA, VERSION_TABLE),
        ).fetchone()
        if found is None:
            return None
        if not found[0]:
            user = conn.execute("SELECT current_user").fetchone()
            raise SchemaMismatch(
                f"role {user[0] if user else '?'} may not read {SCHEMA}.{VERSION_TABLE}, so the "
                "schema's version is unknown: check it as the schema's owner or skene_worker"
            )
        rows = conn.execute(
            pgsql.SQL("SELECT version_num FROM {}.{}").format(
                pgsql.Identifier(SCHEMA), pgsql.Identifier(VERSION_TABLE)
            )
        ).fetchall()
    finally:
        if was_idle and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            conn.rollback()  # leave the caller's connection as we found it: idle
    if len(rows) > 1:
        versions = ", ".join(sorted(r[0] for r in rows))
        raise SchemaMismatch(f"{SCHEMA}.{VERSION_TABLE} holds several versions ({versions})")
    return rows[0][0] if rows else None


def status(database: str | psycopg.Connection) -> MigrationStatus:
    """Where a database (a URL, or an open connection) is against this code's chain."""
    if isinstance(database, str):
        with db.connect(database, autocommit=True) as conn:
            current = _read_current(conn)
    else:
        current = _read_current(database)
    chain = revisions()
    if current is None:
        return MigrationStatus(None, chain[-1], chain)
    if current not in chain:
        return MigrationStatus(current, chain[-1], [], known=False)
    return MigrationStatus(current, chain[-1], chain[chain.index(current) + 1 :])


def require_current(
    database: str | psycopg.Connection,
    minimum: str | None = None,
    *,
    allow_newer: bool = False,
) -> MigrationStatus:
    """Raise unless the database's skene schema is at `minimum` or later (default:
    this code's head). A schema newer than this code raises SchemaNewerThanCode unless
    `allow_newer` (old code still running while a deploy rolls out)."""
    chain = revisions()
    required = minimum or chain[-1]
    if required not in chain:
        raise ValueError(f"unknown revision {required!r} (this skene-pg knows {', '.join(chain)})")
    found = status(database)
    if found.current is None:
        raise SchemaNotInstalled(
            f"the skene schema is not installed in this database (this skene-pg needs "
            f"{required}): run `skene-pg migrate`",
            found,
        )
    if not found.known:
        if allow_newer:
            return found
        raise SchemaNewerThanCode(
            f"the skene schema is at {found.current}, which this skene-pg does not know "
            f"(its newest revision is {found.head}): the database was migrated by a newer "
            "skene-pg; upgrade skene-pg",
            found,
        )
    if chain.index(found.current) < chain.index(required):
        raise SchemaOutOfDate(
            f"the skene schema is at {found.current} but this skene-pg needs {required}: "
            "run `skene-pg migrate`",
            found,
        )
    return found


# ---------------------------------------------------------------------------------
# sql/schema.sql: the head schema, whole
# ---------------------------------------------------------------------------------


def _pg_binary(name: str) -> str:
    from skene_pg.devdb import DevDBError, find_bindir

    try:
        candidate = find_bindir() / name
        if candidate.exists():
            return str(candidate)
    except DevDBError:
        pass
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the PostgreSQL client programs")
    return found


# What differs between dumps of the same schema: pg_dump's session settings and
# version header, and the random \restrict key of recent releases.
_NOISE_STATEMENT = re.compile(
    r"(?is)\A(SET\s|SELECT\s+pg_catalog\.set_config\s*\(|\\(un)?restrict\b)"
)
_NOISE_LINE = re.compile(r"(?m)^-- Dumped (from|by) .*\n?")


def _normalise_dump(dump: str) -> str:
    """pg_dump's output without its noise, blank lines between statements collapsed;
    the statements (function bodies above all) are left exactly as dumped."""
    kept: list[str] = []
    between, position = "", 0
    for statement in _statements(dump):
        start, end = statement[0].start, statement[-1].end
        between += _NOISE_LINE.sub("", dump[position:start])
        position = end
        if not _NOISE_STATEMENT.match(dump[start:end]):
            kept += [re.sub(r"\n{3,}", "\n\n", between), dump[start:end]]
            between = ""
    between += _NOISE_LINE.sub("", dump[position:])
    kept.append(re.sub(r"\n{3,}", "\n\n", between))
    return "".join(kept).strip("\n") + "\n"


def dump_schema(url: str) -> str:
    """The skene schema of the database at `url`, as `sql/schema.sql` shows it:
    pg_dump --schema-only of that schema alone (so no extension, pg_cron's included,
    shows), without owners and without pg_dump's version-dependent noise."""
    result = subprocess.run(
        [
            _pg_binary("pg_dump"),
            "--schema-only",
            f"--schema={SCHEMA}",
            "--no-owner",
            "--no-tablespaces",
            f"--dbname={url}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {result.stderr.strip()}")
    return _normalise_dump(result.stdout)


def _schema_header(head: str) -> str:
    return (
        f"-- The skene schema at head (revision {head}), whole, as a fresh `skene-pg migrate`\n"
        "-- leaves it. Generated by `make schema` (pg_dump --schema-only, normalised): do\n"
        "-- not edit. The schema changes only through a new revision (docs/migrations.md).\n\n"
    )


def fresh_schema_sql(server_url: str | None = None) -> str:
    """`sql/schema.sql` as it should be: a new, empty database migrated to head and
    dumped. On the server at `server_url` (the role needs CREATEDB; the database is
    dropped afterwards) or, without one, on a throwaway local cluster."""
    if server_url is None:
        from skene_pg.devdb import DevCluster

        directory = Path(tempfile.mkdtemp(prefix="skene-pg-schema-"))
        directory.chmod(0o755)  # reachable by the server's own user when we are root
        cluster = DevCluster(directory / "cluster", fast=True)
        try:
            cluster.start()
            return fresh_schema_sql(cluster.url("postgres"))
        finally:
            cluster.stop()
            shutil.rmtree(directory, ignore_errors=True)
    name = f"skene_schema_{uuid.uuid4().hex[:12]}"
    with db.connect(server_url, autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("CREATE DATABASE {} TEMPLATE template0").format(pgsql.Identifier(name))
        )
    try:
        url = make_conninfo(server_url, dbname=name)
        upgrade(url)
        return _schema_header(head_revision()) + dump_schema(url)
    finally:
        with db.connect(server_url, autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
            )


def write_schema_sql(path: Path | None = None, server_url: str | None = None) -> Path:
    """Regenerate `sql/schema.sql` (or `path`); see fresh_schema_sql."""
    target = path or resource_dir("sql") / SCHEMA_SQL
    target.write_text(fresh_schema_sql(server_url))
    return target


# ---------------------------------------------------------------------------------
# Released revisions are frozen: sql/released.sha256
# ---------------------------------------------------------------------------------


def _root(root: Path | None) -> Path:
    """The folder holding sql/ and migrations/: the checkout, or the installed package."""
    return root if root is not None else resource_dir("sql").parent


def revision_files(revision: str, root: Path | None = None) -> list[str]:
    """The files of a revision, relative to the root: sql/NNNN_*.sql and
    migrations/versions/NNNN_*.py."""
    base = _root(root)
    found = [
        *(base / "sql").glob(f"{revision}_*.sql"),
        *(base / "migrations" / "versions").glob(f"{revision}_*.py"),
    ]
    return sorted(str(p.relative_to(base)) for p in found)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def released_checksums(root: Path | None = None) -> dict[str, str]:
    """sql/released.sha256 (sha256sum's format: `sha256sum -c` checks it from the
    root): {relative path: sha256}."""
    listing = _root(root) / "sql" / RELEASED_LIST
    if not listing.exists():
        return {}
    checksums = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            digest, _, path = line.partition("  ")
            checksums[path] = digest
    return checksums


def _revision_of(path: str) -> str:
    return Path(path).name.partition("_")[0]


def released_revisions(root: Path | None = None) -> list[str]:
    return sorted({_revision_of(path) for path in released_checksums(root)})


def frozen_violations(root: Path | None = None) -> list[str]:
    """What breaks the freeze: a released file edited or deleted, or a new file added
    to a released revision. Empty when all is well."""
    base = _root(root)
    checksums = released_checksums(root)
    problems = []
    for path, digest in checksums.items():
        if not (base / path).exists():
            problems.append(f"{path}: released, now missing")
        elif _sha256(base / path) != digest:
            problems.append(f"{path}: edited after its release")
    for revision in released_revisions(root):
        for path in revision_files(revision, root):
            if path not in checksums:
                problems.append(f"{path}: a new file in released revision {revision}")
    return problems


def release(revision: str, root: Path | None = None) -> list[str]:
    """Freeze a revision: add its files' checksums to sql/released.sha256. The
    revision before it must be released already. Returns the lines added."""
    base = _root(root)
    chain = revisions(root=root)
    if revision not in chain:
        raise ValueError(f"unknown revision {revision!r} (known: {', '.join(chain)})")
    released = released_revisions(root)
    if revision in released:
        raise ValueError(f"revision {revision} is released already")
    missing = [r for r in chain[: chain.index(revision)] if r not in released]
    if missing:
        raise ValueError(f"release {', '.join(missing)} first: revisions are released in order")
    files = revision_files(revision, root)
    if not files:
        raise ValueError(f"revision {revision} has no files under sql/ or migrations/versions/")
    lines = [f"{_sha256(base / path)}  {path}" for path in files]
    listing = base / "sql" / RELEASED_LIST
    existing = listing.read_text() if listing.exists() else ""
    listing.write_text(existing + "".join(line + "\n" for line in lines))
    return lines


# ---------------------------------------------------------------------------------
# python -m skene_pg.migrations
# ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skene_pg.migrations", description="Maintain the migration chain."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    schema = commands.add_parser(
        "schema", help="print (or write) sql/schema.sql: a fresh database migrated to head"
    )
    schema.add_argument("--output", type=Path, help="write here instead of printing")
    schema.add_argument(
        "--server-url",
        help="a server to create the scratch database on (default: a throwaway local cluster)",
    )
    freeze = commands.add_parser(
        "release", help="freeze a revision: add its files to sql/released.sha256"
    )
    freeze.add_argument("revision")
    freeze.add_argument(
        "--root", type=Path, help="the folder holding sql/ and migrations/ (default: this one)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "schema":
            if args.output:
                write_schema_sql(args.output, args.server_url)
                print(f"wrote {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(fresh_schema_sql(args.server_url))
        else:
            for line in release(args.revision, args.root):
                print(line)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
