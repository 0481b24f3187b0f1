"""`skene-pg migrate --status`, `--sql --no-transaction`, and the worker refusing to
start on a schema older than the code needs."""

from __future__ import annotations

import json

import psycopg

from skene_pg import migrations
from skene_pg.cli.common import FAILED, NO, OK, USAGE
from tests.cli.test_cli import run


def test_status_shows_current_head_and_pending(db_url: str) -> None:
    head = migrations.head_revision()
    current = run("migrate", "--status", "--json", "--database-url", db_url)
    assert current.returncode == OK, current.stderr
    assert json.loads(current.stdout) == {
        "current": head,
        "head": head,
        "pending": [],
        "up_to_date": True,
    }
    migrations.downgrade(db_url, "0003")
    behind = run("migrate", "--status", "--json", "--database-url", db_url)
    assert behind.returncode == NO
    found = json.loads(behind.stdout)
    assert found["current"] == "0003" and found["pending"] == migrations.revisions()[3:]
    text = run("migrate", "--status", "--database-url", db_url)
    assert text.returncode == NO and "pending  0004" in text.stdout


def test_sql_without_transaction_has_no_begin_or_commit() -> None:
    plain = run("migrate", "--sql")
    bare = run("migrate", "--sql", "--no-transaction")
    assert plain.returncode == bare.returncode == OK
    assert "BEGIN;" in plain.stdout and "COMMIT;" in plain.stdout
    lines = {line.strip() for line in bare.stdout.splitlines()}
    assert "BEGIN;" not in lines and "COMMIT;" not in lines
    assert "CREATE FUNCTION skene.check_and_increment" in bare.stdout
    assert run("migrate", "--no-transaction").returncode == USAGE


def test_listen_refuses_a_schema_older_than_it_needs(conn: psycopg.Connection, db_url: str) -> None:
    migrations.downgrade(db_url, "0003")
    result = run("listen", "--drain", "--database-url", db_url)
    assert result.returncode == FAILED
    assert f"the skene schema is at 0003 but this skene-pg needs {migrations.head_revision()}" in (
        result.stderr
    )
    assert "run `skene-pg migrate`" in result.stderr and "Traceback" not in result.stderr
