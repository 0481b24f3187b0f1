"""apply refuses a retention segment that would run with the owner's rights under a
search_path other roles control (naming file, loop and schema), and the worker's
scheduler runs the other loops when one is refused at run time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from skene_pg.config import ApplyRefused, apply_config, load_config
from skene_pg.retention.schedules import run_due

CONFIG = """\
default_plan = "free"

[plans.free]

[[loops]]
name = "trial_users"
type = "retention"
schedule = "0 9 * * *"
dormant_after = "7 days"
template = "re_engagement"
segment = "SELECT id AS customer_id FROM accounts WHERE tier = 'trial'"
"""


@pytest.fixture
def open_public(conn: psycopg.Connection) -> psycopg.Connection:
    """public as PostgreSQL 14 and clusters upgraded from it leave it: anyone creates."""
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    return conn


def test_apply_refuses_a_segment_path_others_control(
    open_public: psycopg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "skene.toml"
    path.write_text(CONFIG)
    with pytest.raises(ApplyRefused) as refused:
        apply_config(open_public, load_config(path))
    message = str(refused.value)
    assert f"{path}: loops[0].segment: loop trial_users" in message
    assert "public" in message and "search_path=pg_catalog" in message
    assert open_public.execute("SELECT count(*) FROM skene.loops").fetchone() == (0,)


def test_apply_accepts_the_segment_from_a_safe_path(
    open_public: psycopg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "skene.toml"
    path.write_text(CONFIG.replace("FROM accounts", "FROM public.accounts"))
    open_public.execute("SET search_path = pg_catalog")
    apply_config(open_public, load_config(path))
    assert open_public.execute("SELECT segment_search_path FROM skene.loops").fetchone() == (
        "pg_catalog",
    )


def test_a_refused_loop_does_not_stop_the_others(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE public.accounts (id text, tier text)")
    conn.execute("INSERT INTO skene.plans (plan, is_default) VALUES ('free', true)")
    config = {"schedule": "0 9 * * *", "dormant_after": "7 days", "template": "re_engagement"}
    conn.execute(
        "INSERT INTO skene.loops (name, type, config) VALUES ('a_refused', 'retention', %s)",
        (json.dumps({**config, "segment": "SELECT id AS customer_id FROM accounts"}),),
    )
    conn.execute(
        "INSERT INTO skene.loops (name, type, config) VALUES ('b_plain', 'retention', %s)",
        (json.dumps(config),),
    )
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # a_refused's path is unsafe now
    runs = run_due(conn, datetime(2026, 1, 20, 9, 0, tzinfo=UTC))
    assert [(r.loop_name, r.state) for r in runs] == [("b_plain", "succeeded")]
    assert conn.execute("SELECT loop_name FROM skene.loop_runs").fetchall() == [("b_plain",)]
