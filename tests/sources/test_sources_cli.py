"""`skene-pg sources list|backfill`: what apply installed, and a backfill that brings
skene back in step after the app's table changed behind the trigger's back."""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner

from skene_pg.cli import main
from skene_pg.cli.common import FAILED
from tests.sources.conftest import PLANS, Apply, decision

COUNTED = (
    PLANS
    + """
[features.projects]
count = { table = "projects", customer = "owner_id" }
limits = { free = 3, pro = 50 }
"""
)


def cli(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["sources", *args, "--database-url", db_url])
    return result.exit_code, result.output


def test_list_and_backfill(conn: psycopg.Connection, db_url: str, apply_toml: Apply) -> None:
    conn.execute("CREATE TABLE public.projects (id serial PRIMARY KEY, owner_id int NOT NULL)")
    assert cli(db_url, "list")[1].startswith("no sources")
    apply_toml(COUNTED)
    code, listed = cli(db_url, "list", "--json")
    assert code == 0
    assert [(r["name"], r["kind"], r["table"], r["trigger"]) for r in json.loads(listed)] == [
        ("count:projects", "count", "projects", "skene_count_projects")
    ]
    # rows that arrived while the trigger was disabled (a bulk load, a restore)
    conn.execute("ALTER TABLE projects DISABLE TRIGGER skene_count_projects")
    conn.execute("INSERT INTO projects (owner_id) VALUES (1), (1)")
    conn.execute("ALTER TABLE projects ENABLE TRIGGER skene_count_projects")
    assert decision(conn, "1", "projects")["used"] == 0
    assert cli(db_url, "backfill", "count:projects", "--json") == (
        0,
        json.dumps({"count:projects": 1}) + "\n",
    )
    assert decision(conn, "1", "projects")["used"] == 2
    code, refused = cli(db_url, "backfill", "customers")
    assert code == FAILED
    assert "no source customers; sources: count:projects" in refused
