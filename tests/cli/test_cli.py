"""The CLI as users run it: a subprocess of the installed `skene-pg` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from skene_pg.cli import main

ROOT = Path(__file__).resolve().parents[2]
SKENE_PG = str(Path(sys.executable).parent / "skene-pg")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SKENE_")}
    full_env.update(env or {})
    return subprocess.run(
        [SKENE_PG, *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found += all_commands(command, path)
    return found


@pytest.mark.parametrize("path", all_commands(main), ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    command, *sub = path
    lines = [line for line in readme_lines if f"skene-pg {command}" in line]
    if sub:  # subcommands are documented as `skene-pg group a|b|c`
        lines = [line for line in lines if re.search(rf"\b{re.escape(sub[0])}\b", line)]
    assert lines, f"`skene-pg {' '.join(path)}` is not documented in README.md"


def test_missing_database_url_is_one_clear_line() -> None:
    result = run("migrate")
    assert result.returncode == 1
    assert "no database given: pass --database-url or set SKENE_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_reported_without_traceback() -> None:
    result = run("migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 4  # UNREACHABLE: only a failed connection
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_then_migrate_again_says_nothing_to_do(db_url: str) -> None:
    first = run("migrate", "--database-url", db_url)
    assert first.returncode == 0, first.stderr
    assert "already at" in first.stdout  # the test database comes migrated


def test_migrate_sql_prints_the_whole_schema_without_a_database() -> None:
    result = run("migrate", "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE FUNCTION skene.check_and_increment" in result.stdout
    assert result.stdout.rstrip().endswith("COMMIT;")


def test_check_reports_sql_errors_with_their_hint(db_url: str) -> None:
    result = run("check", "cus_1", "nope", env={"SKENE_DATABASE_URL": db_url})
    assert result.returncode == 1
    assert "unknown feature 'nope'" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
