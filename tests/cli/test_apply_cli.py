"""`skene-pg apply` as users run it: a subprocess of the installed command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "skene.toml"
SKENE_PG = str(Path(sys.executable).parent / "skene-pg")

BAD = """\
default_plan = "gold"

[plans.free]

[features.api_calls]
period = "30 days"
limits = { free = -1 }
"""


def apply(
    *args: str, db_url: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKENE_")}
    if db_url:
        env["SKENE_DATABASE_URL"] = db_url
    return subprocess.run(
        [SKENE_PG, "apply", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def plan_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM skene.plans").fetchone()
    return row[0] if row else -1


def test_a_bad_file_lists_every_problem_and_applies_nothing(
    tmp_path: Path, db_url: str, conn: psycopg.Connection
) -> None:
    bad = tmp_path / "skene.toml"
    bad.write_text(BAD)
    result = apply(str(bad), db_url=db_url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    located = [
        line for line in lines if re.match(rf"{re.escape(str(bad))}:\d+: [\w.\[\]]+: ", line)
    ]
    assert [line.split(": ")[0:2] for line in located] == [
        [f"{bad}:1", "default_plan"],
        [f"{bad}:6", "features.api_calls.period"],
        [f"{bad}:7", "features.api_calls.limits.free"],
    ]
    assert lines[-1] == f"3 problems in {bad}: nothing applied"
    assert plan_count(conn) == 0


def test_a_syntax_error_is_one_line_without_traceback(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "skene.toml").write_text('default_plan = "free"\n[plans.free\n')
    result = apply(db_url=db_url, cwd=tmp_path)  # FILE defaults to ./skene.toml
    assert result.returncode == 1
    assert result.stderr.startswith("skene.toml:2: invalid TOML: ")
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    result = apply(cwd=tmp_path)
    assert result.returncode == 1
    assert "skene.toml: cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_example_applies_then_has_nothing_to_change(
    db_url: str, conn: psycopg.Connection
) -> None:
    first = apply(str(EXAMPLE), db_url=db_url)
    assert first.returncode == 0, first.stderr
    assert "create plan pro: paid" in first.stdout
    assert "create loop free_tier_limit: freemium on api_calls" in first.stdout
    assert "create loop dormant_users: retention" in first.stdout
    assert "create loop api_milestones: milestone on api_calls" in first.stdout
    *changes, last = first.stdout.rstrip().splitlines()
    assert last == f"applied {len(changes)} changes from {EXAMPLE}"
    assert plan_count(conn) == 2
    again = apply(str(EXAMPLE), db_url=db_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"nothing to change: the database matches {EXAMPLE}"


def test_dry_run_says_would_and_changes_nothing(db_url: str, conn: psycopg.Connection) -> None:
    result = apply(str(EXAMPLE), "--dry-run", db_url=db_url)
    assert result.returncode == 0, result.stderr
    changes = result.stdout.splitlines()[:-1]
    assert changes and all(line.startswith("would ") for line in changes)
    assert "would create limit api_calls/free: 100" in changes
    assert "nothing was changed" in result.stdout.splitlines()[-1]
    assert plan_count(conn) == 0


def test_json_output(tmp_path: Path, db_url: str) -> None:
    result = apply(str(EXAMPLE), "--json", "--dry-run", db_url=db_url)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["dry_run"] is True
    assert out["changes"][0] == {"action": "create", "kind": "plan", "name": "free", "detail": ""}
    bad = tmp_path / "skene.toml"
    bad.write_text(BAD)
    failed = apply(str(bad), "--json", db_url=db_url)
    assert failed.returncode == 1
    problems = json.loads(failed.stdout)["problems"]
    assert problems[0] == {
        "file": str(bad),
        "line": 1,
        "field": "default_plan",
        "message": '"gold" is not a defined plan; defined: free',
    }


def test_deleting_a_feature_needs_prune(
    tmp_path: Path, db_url: str, conn: psycopg.Connection
) -> None:
    assert apply(str(EXAMPLE), db_url=db_url).returncode == 0
    text = EXAMPLE.read_text()
    smaller = tmp_path / "skene.toml"
    smaller.write_text(text[: text.index("[features.api_calls]")])
    refused = apply(str(smaller), db_url=db_url)
    assert refused.returncode == 1
    assert "feature api_calls" in refused.stderr and "--prune" in refused.stderr
    assert "Traceback" not in refused.stderr
    pruned = apply(str(smaller), "--prune", db_url=db_url)
    assert pruned.returncode == 0, pruned.stderr
    assert "delete feature api_calls" in pruned.stdout
    assert conn.execute("SELECT count(*) FROM skene.features").fetchone() == (0,)


def test_a_valid_file_without_a_database_says_how_to_name_one() -> None:
    result = apply(str(EXAMPLE))
    assert result.returncode == 1
    assert "no database given" in result.stderr
    assert "Traceback" not in result.stderr
