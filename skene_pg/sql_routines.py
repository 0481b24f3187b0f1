"""Finding a function's definition in SQL files: a small tokenizer that understands
quoting (strings, quoted identifiers, dollar quotes with tags, comments) well enough
to pick out top-level CREATE/DROP/COMMENT ON FUNCTION statements, and the newest
definition of a function by its signature. restore_function (migrations.py) runs it
in a revision's downgrade."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

SCHEMA = "skene"


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


def statements(text: str) -> Iterator[list[_Token]]:
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
    action: str  # create, alter, drop, comment
    signature: str  # canonical; for a DROP without arguments, just the name
    text: str  # the statement (a CREATE already rewritten as CREATE OR REPLACE)
    kind: str = "FUNCTION"  # or PROCEDURE


def _routine_statements(text: str) -> Iterator[_RoutineStatement]:
    """The CREATE, ALTER, DROP and COMMENT ON statements of functions and procedures
    in a SQL file, in order."""
    for statement in statements(text):
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
        elif words[0] == "alter" and words[1] in ("function", "procedure", "routine"):
            # SECURITY DEFINER, SET search_path, ...: a CREATE OR REPLACE resets them,
            # so a restored function needs them again after its CREATE
            _, signature, _ = _parse_routine(statement, 2, procedure=words[1] == "procedure")
            yield _RoutineStatement("alter", signature, source)
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
    oldest first) leave it: its newest CREATE FUNCTION, as CREATE OR REPLACE, the
    ALTER FUNCTION statements after it, then its newest COMMENT ON (or `IS NULL` when
    it has none)."""
    wanted = canonical_signature(signature)
    wanted_name = wanted.partition("(")[0]
    definition: _RoutineStatement | None = None
    alters: list[str] = []
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
                definition, alters, dropped_in = statement, [], None
            elif statement.action == "alter":
                alters.append(statement.text)
            elif statement.action == "drop":
                definition, alters, comment, dropped_in = None, [], None, label
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
    return "".join(f"{_terminated(part)}\n" for part in (definition.text, *alters, comment))
