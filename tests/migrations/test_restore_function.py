"""restore_function: a revision that changes a function restores the previous body on
downgrade from the earlier revisions' SQL files, without a copy of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from skene_pg import migrations
from skene_pg.devdb import find_bindir
from skene_pg.resources import resource_dir
from skene_pg.sql_routines import FunctionNotFound, canonical_signature, latest_definition

# Every skene function: its signature as format_type() spells the argument types, its
# definition, comment and source text.
FUNCTIONS = """
SELECT n.nspname || '.' || p.proname || '(' || coalesce((
           SELECT string_agg(pg_catalog.format_type(t.oid, NULL), ',' ORDER BY t.i)
             FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t(oid, i)), '') || ')',
       pg_catalog.pg_get_functiondef(p.oid),
       pg_catalog.obj_description(p.oid, 'pg_proc'),
       p.prosrc
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'skene' AND p.prokind = 'f'
 ORDER BY 1
"""


def definition_of(conn: psycopg.Connection, signature: str) -> tuple[str, str | None]:
    row = conn.execute(
        "SELECT pg_catalog.pg_get_functiondef(%s::regprocedure),"
        "       pg_catalog.obj_description(%s::regprocedure, 'pg_proc')",
        (signature, signature),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


# -- finding definitions in SQL text ------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (
            "skene.check_and_increment(text,text,bigint,text)",
            "skene.check_and_increment(text,text,bigint,text)",
        ),
        (
            "skene.f(int4, timestamptz, varchar(10), double precision, text[], skene.decision)",
            "skene.f(integer,timestamp with time zone,character varying,double precision,"
            "text[],skene.decision)",
        ),
        (
            "skene.f(IN a int DEFAULT 1, OUT b text, VARIADIC c int ARRAY, time timestamp(3))",
            "skene.f(integer,integer[],timestamp without time zone)",
        ),
        (
            "skene.watch_activity(\"table\" regclass, c text = 'x,y')",
            "skene.watch_activity(regclass,text)",
        ),
        (
            "claim_jobs(text, int, interval, text[])",
            "skene.claim_jobs(text,integer,interval,text[])",
        ),
        ("skene.now()", "skene.now()"),
    ],
)
def test_signatures_are_compared_as_postgres_spells_them(written: str, canonical: str) -> None:
    assert canonical_signature(written) == canonical


@pytest.mark.parametrize("bad", ["skene.check_and_increment", "", "(text)", "skene.f(text) x"])
def test_a_signature_needs_its_argument_list(bad: str) -> None:
    with pytest.raises(ValueError, match="not a function signature"):
        canonical_signature(bad)


V1 = """\
-- CREATE FUNCTION skene.f(integer) RETURNS text in a comment defines nothing;
/* nor /* in a nested */ block comment: CREATE FUNCTION skene.f(integer); */
CREATE FUNCTION skene.f(n integer DEFAULT 1) RETURNS text
LANGUAGE sql AS $$ SELECT 'v1; $fn$ ' || n $$;
COMMENT ON FUNCTION skene.f(int) IS 'first; comment';
CREATE FUNCTION skene.f(n text) RETURNS text LANGUAGE sql AS $$ SELECT 'text overload' $$;
SELECT 'CREATE FUNCTION skene.f(integer) RETURNS text AS $$ SELECT 1 $$;';
DO $do$ BEGIN
    EXECUTE 'CREATE OR REPLACE FUNCTION skene.f(n integer DEFAULT 1) RETURNS text '
            'LANGUAGE sql AS $q$ SELECT ''dynamic; '' $q$';
END $do$;
"""
V2 = """\
create or replace function skene.f(n int4 = 2)
returns text language plpgsql as $fn$
BEGIN
    -- a $$-quote and a ; inside the body
    RETURN $$v2; $$ || E'it\\'s; ' || n;
END
$fn$;
CREATE FUNCTION skene.g(a integer) RETURNS integer LANGUAGE sql
BEGIN ATOMIC
    SELECT 1;
    SELECT CASE WHEN a > 0 THEN a ELSE 0 END;
END;
"""
V2_F = V2[: V2.index("CREATE FUNCTION skene.g")].rstrip("\n")
V3 = "DROP FUNCTION IF EXISTS skene.g(int), skene.f(integer) CASCADE;\n"


def test_the_newest_definition_wins_whatever_its_quoting() -> None:
    sources = [("v1", V1), ("v2", V2)]
    assert latest_definition(sources, "skene.f(integer)") == (
        V2_F + "\nCOMMENT ON FUNCTION skene.f(int) IS 'first; comment';\n"
    )
    assert latest_definition(sources[:1], "skene.f(int4)") == (
        "CREATE OR REPLACE FUNCTION skene.f(n integer DEFAULT 1) RETURNS text\n"
        "LANGUAGE sql AS $$ SELECT 'v1; $fn$ ' || n $$;\n"
        "COMMENT ON FUNCTION skene.f(int) IS 'first; comment';\n"
    )
    # a SQL-standard body keeps its semicolons; no comment: it is cleared
    assert latest_definition(sources, "skene.g(integer)") == (
        "CREATE OR REPLACE FUNCTION" + V2[V2.index(" skene.g") : V2.rindex("END;") + 4] + "\n"
        'COMMENT ON FUNCTION "skene"."g"(integer) IS NULL;\n'
    )


def test_a_missing_or_dropped_function_is_reported() -> None:
    with pytest.raises(
        FunctionNotFound, match=r"skene.f\(bigint\).*skene.f\(integer\), skene.f\(text\)"
    ):
        latest_definition([("v1", V1)], "skene.f(bigint)")
    with pytest.raises(FunctionNotFound, match=r"skene.f\(integer\) was dropped by v3"):
        latest_definition([("v1", V1), ("v2", V2), ("v3", V3)], "skene.f(integer)")
    # dropped, then created again
    again = [("v1", V1), ("v3", V3), ("v4", V2)]
    assert latest_definition(again, "skene.f(integer)").startswith(
        V2_F + '\nCOMMENT ON FUNCTION "skene"'
    )


def test_procedures_and_a_last_statement_without_semicolon(conn: psycopg.Connection) -> None:
    source = (
        "CREATE PROCEDURE skene.p(a int, OUT b int) LANGUAGE plpgsql\n"
        "AS $proc$ BEGIN b := a * 2; END $proc$"
    )
    found = latest_definition([("p", source)], "skene.p(integer, integer)")
    assert found == (
        "CREATE OR REPLACE PROCEDURE skene.p(a int, OUT b int) LANGUAGE plpgsql\n"
        "AS $proc$ BEGIN b := a * 2; END $proc$;\n"
        'COMMENT ON PROCEDURE "skene"."p"(integer,integer) IS NULL;\n'
    )
    conn.execute(found)
    assert conn.execute("CALL skene.p(21, NULL)").fetchone() == (42,)


def test_extracted_definitions_restore_the_database_byte_for_byte(conn: psycopg.Connection) -> None:
    conn.execute(V1)
    conn.execute(V2)
    v2 = {sig: definition_of(conn, sig) for sig in ("skene.f(integer)", "skene.g(integer)")}
    conn.execute(
        "CREATE OR REPLACE FUNCTION skene.f(n integer DEFAULT 3) RETURNS text LANGUAGE sql "
        "AS $$ SELECT 'v3' $$; COMMENT ON FUNCTION skene.f(integer) IS 'third';"
        "CREATE OR REPLACE FUNCTION skene.g(a integer) RETURNS integer LANGUAGE sql RETURN 3;"
        "COMMENT ON FUNCTION skene.g(integer) IS 'third'"
    )
    for signature, before in v2.items():
        assert definition_of(conn, signature) != before
        conn.execute(latest_definition([("v1", V1), ("v2", V2)], signature))
        assert definition_of(conn, signature) == before
    assert conn.execute("SELECT skene.f(7), skene.g(5)").fetchone() == ("v2; it's; 7", 5)


# -- the real revisions -------------------------------------------------------------


def test_every_function_of_the_chain_is_found_and_restored(conn: psycopg.Connection) -> None:
    """For each skene function: the definition found in sql/*.up.sql carries the body
    that is in the database, and running it after the function was changed puts back
    the same pg_get_functiondef and comment."""
    functions = conn.execute(FUNCTIONS).fetchall()
    assert len(functions) > 50
    restored = []
    for signature, functiondef, comment, prosrc in functions:
        found = migrations.function_definition(signature)
        assert found.startswith("CREATE OR REPLACE FUNCTION"), signature
        assert prosrc in found, f"{signature}: body not extracted whole"
        # change it (the body where it is dollar-quoted, and the comment) ...
        head, tag, tail = functiondef.rpartition("$function$")
        changed = f"{head}-- changed by a later revision\n{tag}{tail}" if tag else functiondef
        conn.execute(changed)
        conn.execute(f"COMMENT ON FUNCTION {signature} IS 'changed'")
        assert definition_of(conn, signature) != (functiondef, comment)
        # ... and restore it
        conn.execute(found)
        assert definition_of(conn, signature) == (functiondef, comment), signature
        restored.append(signature)
    assert {
        "skene.check_and_increment(text,text,bigint,text)",
        "skene.claim_jobs(text,integer,interval,text[])",
        "skene.run_loop(text,timestamp with time zone)",
    } <= set(restored)


@pytest.mark.parametrize(
    ("signature", "defined_in"),
    [
        ("skene.check(text, text, bigint)", "0001"),
        ("skene.claim_jobs(text, integer, interval, text[])", "0002"),
        ("skene.ingest_billing_event(text, jsonb)", "0003"),
        ("skene.run_loop(text, timestamptz)", "0004"),
    ],
)
def test_before_means_the_revisions_before(signature: str, defined_in: str) -> None:
    chain = migrations.revisions()
    after = chain[chain.index(defined_in) + 1 :]
    for revision in after:
        assert migrations.function_definition(signature, before=revision) == (
            migrations.function_definition(signature)
        )
    with pytest.raises(FunctionNotFound, match=f"revisions before {defined_in}"):
        migrations.function_definition(signature, before=defined_in)
    with pytest.raises(ValueError, match="unknown revision"):
        migrations.function_definition(signature, before="9999")


# -- a revision that changes a function, run by alembic ------------------------------

SIGNATURE = "skene.check(text,text,bigint)"
# the revisions the `chain` fixture adds after the real head
BASE = migrations.head_revision()
A, B = f"{int(BASE) + 1:04d}", f"{int(BASE) + 2:04d}"
REVISION = '''"""{doc}

Revision ID: {rev}
Revises: {down}
"""

from skene_pg.migrations import restore_function, run_sql_file

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("{rev}_check.up.sql")


def downgrade() -> None:
    restore_function("{signature}", before=revision)
'''


def new_body(definition: str, marker: str, tag: str) -> str:
    """skene.check as 0001 defines it, with a line added to its body, quoted with
    `tag`, and another comment."""
    create, _, _ = definition.partition("\nCOMMENT ON FUNCTION")
    create = create.replace("AS $$\n", f"AS {tag}\n", 1).replace(
        "BEGIN\n", f"BEGIN\n    -- {marker}\n", 1
    )
    assert create.endswith("$$;")
    return (
        f"{create[:-3]}{tag};\nCOMMENT ON FUNCTION skene.check(text, text, bigint) IS '{marker}';\n"
    )


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """The real chain plus two revisions after its head (A and B below), each giving
    skene.check a new body; their downgrades call restore_function."""
    root = tmp_path / "chain"
    shutil.copytree(resource_dir("sql"), root / "sql")
    shutil.copytree(
        resource_dir("migrations"),
        root / "migrations",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    original = migrations.function_definition(SIGNATURE)
    for rev, down, tag in ((A, BASE, "$fn$"), (B, A, "$body$")):
        (root / "sql" / f"{rev}_check.up.sql").write_text(
            f"-- {rev}: skene.check gets a new body\n\n" + new_body(original, f"body of {rev}", tag)
        )
        (root / "migrations" / "versions" / f"{rev}_check.py").write_text(
            REVISION.format(doc=f"skene.check, take {rev}", rev=rev, down=down, signature=SIGNATURE)
        )
    return root


def test_a_new_revision_changes_a_function_and_its_downgrade_restores_it(
    chain: Path, db_url: str, conn: psycopg.Connection
) -> None:
    states = {BASE: definition_of(conn, SIGNATURE)}
    for rev in (A, B):
        migrations.upgrade(db_url, rev, root=chain)
        states[rev] = definition_of(conn, SIGNATURE)
        assert f"-- body of {rev}" in states[rev][0]
        assert states[rev][1] == f"body of {rev}"
    assert "$fn$" in (chain / "sql" / f"{A}_check.up.sql").read_text()

    migrations.downgrade(db_url, A, root=chain)
    assert definition_of(conn, SIGNATURE) == states[A]
    migrations.downgrade(db_url, BASE, root=chain)
    assert definition_of(conn, SIGNATURE) == states[BASE]
    assert migrations.current_revision(db_url) == BASE


def test_restore_function_in_offline_sql(
    chain: Path, db_url: str, conn: psycopg.Connection
) -> None:
    original = definition_of(conn, SIGNATURE)
    migrations.upgrade(db_url, B, root=chain)

    script = migrations.downgrade_sql(B, BASE, root=chain)
    v5 = (chain / "sql" / f"{A}_check.up.sql").read_text()
    assert v5[v5.index("CREATE OR REPLACE") : v5.index("\nCOMMENT")] in script
    assert migrations.function_definition(SIGNATURE) in script
    result = subprocess.run(
        [str(find_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", db_url],
        input=script,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert definition_of(conn, SIGNATURE) == original
    assert migrations.current_revision(db_url) == BASE
