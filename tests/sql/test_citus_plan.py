"""docs/scaling.md plans how skene's tables would spread over a Citus cluster: which are
distributed by customer_id, which are reference tables, which stay on the coordinator,
and which keys and foreign keys would have to change first. The lists live in the doc,
between markers; these tests read them and hold them against the catalogue of a
migrated database, so the plan cannot drift from the schema: a new table fails until
it is classified, and a new key that Citus could not keep fails until it is fixed or
listed. (Nothing here runs Citus: the rules are the ones its docs state.)"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

SCALING_MD = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
DISTRIBUTION_COLUMN = "customer_id"
KINDS = ("distributed", "reference", "local")
FIX = "update docs/scaling.md"
ENTRY = re.compile(r"^- `skene\.(\w+)`(?: `(\w+)`)?")


def marked_entries(name: str) -> list[tuple[str, str | None]]:
    """The `- `skene.table`` (or `- `skene.table` `name``) lines of one marked list."""
    text = SCALING_MD.read_text()
    found = re.search(
        rf"<!-- {re.escape(name)}:start -->\n(.*?)<!-- {re.escape(name)}:end -->", text, re.S
    )
    assert found, f"docs/scaling.md has no <!-- {name}:start --> ... <!-- {name}:end --> list"
    entries = []
    for line in found.group(1).splitlines():
        match = ENTRY.match(line)
        if match:
            entries.append((match.group(1), match.group(2)))
        else:
            assert not line.startswith("- "), f"docs/scaling.md, list {name}: cannot read {line!r}"
    return entries


def classification() -> dict[str, str]:
    """table -> distributed | reference | local, as the doc has it."""
    kind_of: dict[str, str] = {}
    for kind in KINDS:
        for table, extra in marked_entries(kind):
            assert extra is None, f"docs/scaling.md, list {kind}: one table per line ({table})"
            assert table not in kind_of, (
                f"docs/scaling.md lists skene.{table} as {kind_of[table]} and as {kind}"
            )
            kind_of[table] = kind
    return kind_of


def documented_violations(name: str) -> set[str]:
    entries = marked_entries(name)
    assert all(extra for _, extra in entries), f"list {name}: `skene.table` `name` per line"
    names = {f"{table}.{extra}" for table, extra in entries}
    assert len(names) == len(entries), f"docs/scaling.md, list {name}: a line appears twice"
    return names


def skene_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'skene' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"""
    ).fetchall()
    return {name for (name,) in rows}


def compare(found: dict[str, str], listed: set[str], what: str, list_name: str) -> None:
    """The known violations, exactly: a new one fails, and so does one that went away."""
    new = sorted(set(found) - listed)
    gone = sorted(listed - set(found))
    message = []
    if new:
        message.append(
            f"{what} that Citus could not keep, missing from the <!-- {list_name} --> list "
            "of docs/scaling.md:\n"
            + "\n".join(f"  {key}: {found[key]}" for key in new)
            + f"\nChange the schema so they fit the plan, or {FIX}: list each under "
            "'What would have to change', with what would replace it."
        )
    if gone:
        message.append(
            f"The <!-- {list_name} --> list of docs/scaling.md names {', '.join(gone)}, which "
            f"no longer break the plan (fixed, renamed or dropped): {FIX} and take them off."
        )
    assert not message, "\n".join(message)


def test_every_skene_table_is_classified_once(conn: psycopg.Connection) -> None:
    kind_of = classification()
    tables = skene_tables(conn)
    unclassified = sorted(tables - set(kind_of))
    unknown = sorted(set(kind_of) - tables)
    message = []
    if unclassified:
        message.append(
            f"skene tables with no place in the Citus plan: {', '.join(unclassified)}. "
            f"{FIX}: add each to one list, distributed (keyed by customer_id), reference "
            "(catalogue, small, read everywhere) or local (stays on the coordinator, and why)."
        )
    if unknown:
        message.append(
            f"docs/scaling.md classifies tables that do not exist: {', '.join(unknown)}; {FIX}."
        )
    assert not message, "\n".join(message)


def test_distributed_tables_carry_a_text_customer_id_that_is_never_null(
    conn: psycopg.Connection,
) -> None:
    """Colocated tables need one distribution column type, and a row needs a value."""
    distributed = sorted(t for t, kind in classification().items() if kind == "distributed")
    assert distributed
    rows = dict(
        conn.execute(
            """SELECT c.relname, format_type(a.atttypid, a.atttypmod) || CASE
                        WHEN a.attnotnull THEN ' not null' ELSE '' END
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
                WHERE n.nspname = 'skene' AND c.relname = ANY (%s)
                  AND a.attname = %s AND NOT a.attisdropped""",
            (distributed, DISTRIBUTION_COLUMN),
        ).fetchall()
    )
    wrong = {t: rows.get(t, "missing") for t in distributed if rows.get(t) != "text not null"}
    assert not wrong, (
        f"distributed tables need {DISTRIBUTION_COLUMN} text NOT NULL: {wrong}; fix the "
        f"schema or {FIX} (classify the table otherwise)"
    )


def test_unique_keys_of_distributed_tables_include_customer_id(
    conn: psycopg.Connection,
) -> None:
    """Citus enforces a primary key, unique constraint, unique index or exclusion
    constraint only shard by shard, so it must include the distribution column."""
    distributed = [t for t, kind in classification().items() if kind == "distributed"]
    rows = conn.execute(
        """SELECT t.relname, i.relname, pg_catalog.pg_get_indexdef(x.indexrelid),
                  coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                              FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                              JOIN pg_catalog.pg_attribute a
                                ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                             WHERE k.ord <= x.indnkeyatts), '{}')
             FROM pg_catalog.pg_index x
             JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
             JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = 'skene' AND t.relname = ANY (%s)
              AND (x.indisunique OR x.indisexclusion)""",
        (distributed,),
    ).fetchall()
    assert rows, "no unique keys found at all: the catalogue query is wrong"
    found = {
        f"{table}.{index}": definition
        for table, index, definition, columns in rows
        if DISTRIBUTION_COLUMN not in columns
    }
    compare(
        found,
        documented_violations("violations-unique"),
        "Unique keys of distributed tables without customer_id",
        "violations-unique",
    )


def test_foreign_keys_stay_on_one_node(conn: psycopg.Connection) -> None:
    """A distributed table may point at a reference table, or at a distributed table
    through customer_id (a colocated join); a reference table only at reference tables;
    a local table at local or reference tables."""
    kind_of = classification()
    rows = conn.execute(
        """SELECT t.relname, c.conname, n2.nspname, r.relname,
                  pg_catalog.pg_get_constraintdef(c.oid),
                  ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                          JOIN pg_catalog.pg_attribute a
                            ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                         ORDER BY k.ord),
                  ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
                          JOIN pg_catalog.pg_attribute a
                            ON a.attrelid = c.confrelid AND a.attnum = k.attnum
                         ORDER BY k.ord)
             FROM pg_catalog.pg_constraint c
             JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
             JOIN pg_catalog.pg_class r ON r.oid = c.confrelid
             JOIN pg_catalog.pg_namespace n2 ON n2.oid = r.relnamespace
            WHERE c.contype = 'f' AND n.nspname = 'skene'"""
    ).fetchall()
    assert rows, "no foreign keys found at all: the catalogue query is wrong"
    allowed = {
        "distributed": {"reference", "distributed"},
        "reference": {"reference"},
        "local": {"local", "reference"},
    }
    found = {}
    for table, name, target_schema, target, definition, columns, target_columns in rows:
        source_kind = kind_of.get(table, "unclassified")
        target_kind = (
            kind_of.get(target, "unclassified") if target_schema == "skene" else "outside skene"
        )
        fits = target_kind in allowed.get(source_kind, set())
        if fits and source_kind == target_kind == "distributed":
            # colocated only when customer_id meets customer_id
            fits = (DISTRIBUTION_COLUMN, DISTRIBUTION_COLUMN) in zip(
                columns, target_columns, strict=True
            )
        if not fits:
            found[f"{table}.{name}"] = (
                f"{source_kind} skene.{table} -> {target_kind} {target_schema}.{target}: "
                f"{definition}"
            )
    compare(
        found,
        documented_violations("violations-fk"),
        "Foreign keys",
        "violations-fk",
    )


def test_identity_columns_of_distributed_tables_are_bigint(conn: psycopg.Connection) -> None:
    """Citus hands each node its own range of a distributed table's sequence, which only
    a bigint has room for."""
    distributed = [t for t, kind in classification().items() if kind == "distributed"]
    rows = conn.execute(
        """SELECT c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod)
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = 'skene' AND c.relname = ANY (%s) AND a.attnum > 0
              AND NOT a.attisdropped
              AND (a.attidentity <> ''
                   OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%')""",
        (distributed,),
    ).fetchall()
    wrong = {column: kind for column, kind in rows if kind != "bigint"}
    assert not wrong, f"identity or serial columns of distributed tables must be bigint: {wrong}"
