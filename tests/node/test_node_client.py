"""The npm package `skene-pg` (clients/node): its own `node --test` suite, run against
this suite's real PostgreSQL (a migrated database with the catalogue of
tests/node/conftest.py applied), over node-postgres and postgres.js, and through
PgBouncer when the suite provides one. What the Python side makes (the 402 bodies of
problem_vectors.json, unsubscribe tokens) is handed to the Node tests to compare."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from skene_pg import http_problem
from skene_pg.email.handler import unsubscribe_token
from tests.integrations.conftest import apply_toml
from tests.integrations.test_problem_vectors import VECTORS, at, decision, gate
from tests.node.conftest import CLIENT, NOW, SKENE_TOML, libpq_to_url, node_tools, npm_ci

# Non-ASCII, control characters, quotes: escaped the way json.dumps escapes them.
STRINGS = [
    "You’ve used all 100 calls — upgrade ✨",
    'tab\there, newline\n, DEL\x7f, bell\x07, "quoted" \\ /',
    "an emoji 😀 and é",
    "plain ASCII",
]
ISO_TIMES = ["2026-04-01T00:00:00Z", "2026-04-01T00:00:00.250Z", "2026-03-31T23:59:59.001Z"]
UNSUBSCRIBE = [
    ("s3cret-unsubscribe-key", "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"),
    ("another key, with spaces", "cus_é_42"),
]


def python_outputs() -> dict[str, Any]:
    """What the Python builders make, for the Node tests to match byte for byte."""
    blocked = {
        case["name"]: http_problem.blocked(
            decision(case["decision"]), gate(case["gate"]), at(case["now"])
        )
        .content()
        .decode()
        for case in VECTORS["blocked"]
    }
    anonymous = http_problem.anonymous(gate(VECTORS["anonymous"]["gate"]))  # type: ignore[arg-type]
    return {
        "problems": {
            "blocked": blocked,
            "anonymous": anonymous.content().decode(),
            "unavailable": http_problem.unavailable().content().decode(),
            "strings": [[s, json.dumps(s)] for s in STRINGS],
            "isoformat": [[t, http_problem.iso(at(t))] for t in ISO_TIMES],
        },
        "unsubscribe": [
            {"secret": s, "customer": c, "token": unsubscribe_token(s, c)} for s, c in UNSUBSCRIBE
        ],
    }


@pytest.fixture
def node_db(db_url: str, conn: psycopg.Connection, tmp_path: Path) -> str:
    """This test's database with the Node catalogue applied and skene's clock fixed."""
    apply_toml(db_url, tmp_path, SKENE_TOML)
    name = conninfo_to_dict(db_url)["dbname"]
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET skene.now = {}").format(
            sql.Identifier(name), sql.Literal(NOW)
        )
    )
    return libpq_to_url(db_url)


def pooled(request: pytest.FixtureRequest) -> str | None:
    """The suite's PgBouncer (transaction mode) in front of this test's database, when
    the suite has that fixture (`pooled_url`)."""
    try:
        return libpq_to_url(request.getfixturevalue("pooled_url"))
    except pytest.FixtureLookupError:
        return None


def summary(tap: str) -> dict[str, int]:
    counts = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", tap, re.M))
    return {key: int(value) for key, value in counts.items()}


def test_node_client(node_db: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    node, _ = node_tools()
    npm_ci(CLIENT)
    outputs = tmp_path / "python-outputs.json"
    outputs.write_text(json.dumps(python_outputs()))
    pooled_url = pooled(request)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SKENE_")},
        "SKENE_TEST_DATABASE_URL": node_db,
        "SKENE_PYTHON_OUTPUTS": str(outputs),
        "SKENE_PROBLEM_VECTORS": str(
            Path(__file__).parents[1] / "integrations" / "problem_vectors.json"
        ),
    }
    if pooled_url:
        env["SKENE_TEST_POOLED_URL"] = pooled_url
    files = sorted(str(p.relative_to(CLIENT)) for p in (CLIENT / "test").glob("*.test.js"))
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = f"{done.stdout}\n{done.stderr}"
    counts = summary(done.stdout)
    assert done.returncode == 0 and counts.get("fail") == 0, out
    assert counts.get("pass", 0) >= 45, out
    assert counts.get("cancelled") == 0 and counts.get("todo") == 0, out
    skipped = re.findall(r"^\s*ok \d+ - (.*) # SKIP(.*)$", done.stdout, re.M)
    if pooled_url:
        assert skipped == [], out
    else:  # only the PgBouncer suites, and say so
        assert skipped and all("PgBouncer" in reason for _, reason in skipped), out
        print(f"skene-pg (Node): PgBouncer suites skipped: {[name for name, _ in skipped]}")


def test_python_outputs_are_what_the_vectors_pin() -> None:
    """The bytes handed to Node are the vectors' bodies (so Node is held to the file)."""
    made = python_outputs()["problems"]
    for case in VECTORS["blocked"]:
        assert json.loads(made["blocked"][case["name"]]) == case["body"]
    assert made["isoformat"][1] == ["2026-04-01T00:00:00.250Z", "2026-04-01T00:00:00.250000Z"]
