"""`skene-pg loops list|run` and `skene-pg suppressions list|add|remove`, as users run
them (a subprocess of the installed command)."""

from __future__ import annotations

import json

import psycopg

from skene_pg.cli.common import FAILED, OK
from tests.cli.test_cli import run
from tests.retention.conftest import DORMANT, T0, add_loop, customer, days, jobs
from tests.retention.conftest import catalogue as catalogue  # the fixture

SLOT = T0.isoformat(timespec="minutes")


def test_loops_run_runs_one_slot_once_and_shows_its_run(
    catalogue: psycopg.Connection, db_url: str
) -> None:
    conn = catalogue
    add_loop(conn, "dormant", "retention", DORMANT)
    customer(conn, "ada", T0 - days(8))
    first = run("loops", "run", "dormant", "--slot", SLOT, "--json", "--database-url", db_url)
    assert first.returncode == OK, first.stderr
    run_row = json.loads(first.stdout)
    assert run_row["loop_name"] == "dormant" and run_row["state"] == "succeeded"
    assert run_row["queued"] == 1 and run_row["slot"].startswith("2026-01-20T09:00")
    assert [c for c, _, _ in jobs(conn, "dormant")] == ["ada"]

    customer(conn, "bob", T0 - days(9))  # due now, but the slot has run
    again = run("loops", "run", "dormant", "--slot", SLOT, "--json", "--database-url", db_url)
    assert again.returncode == OK, again.stderr
    assert json.loads(again.stdout) == run_row
    assert [c for c, _, _ in jobs(conn, "dormant")] == ["ada"]

    listed = run("loops", "list", "--json", "--database-url", db_url)
    assert listed.returncode == OK, listed.stderr
    (loop,) = json.loads(listed.stdout)
    assert loop["name"] == "dormant" and loop["scheduled_by"] == "worker"
    assert loop["last_state"] == "succeeded" and loop["last_queued"] == 1


def test_loops_run_refuses_what_it_cannot_run(catalogue: psycopg.Connection, db_url: str) -> None:
    add_loop(catalogue, "celebrate", "milestone", {"thresholds": [3], "template": "milestone"})
    unknown = run("loops", "run", "nope", "--database-url", db_url)
    assert unknown.returncode == FAILED and "no loop 'nope'" in unknown.stderr
    milestone = run("loops", "run", "celebrate", "--database-url", db_url)
    assert milestone.returncode == FAILED
    assert "only retention loops run on a schedule" in milestone.stderr


def test_suppressions_add_list_remove(conn: psycopg.Connection, db_url: str) -> None:
    added = run("suppressions", "add", " Ada@Example.com ", "--database-url", db_url)
    assert added.returncode == OK, added.stderr
    listed = run("suppressions", "list", "--json", "--database-url", db_url)
    (row,) = json.loads(listed.stdout)
    assert (row["email"], row["reason"], row["source"]) == ("ada@example.com", "manual", "cli")
    removed = run("suppressions", "remove", "ada@example.com", "--database-url", db_url)
    assert removed.returncode == OK and "unsuppressed" in removed.stdout
    assert conn.execute("SELECT count(*) FROM skene.suppressions").fetchone() == (0,)
    again = run("suppressions", "remove", "ada@example.com", "--database-url", db_url)
    assert "was not suppressed" in again.stdout
