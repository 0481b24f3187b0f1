"""[housekeeping] in skene.toml: validated with line and field like the rest, applied
into skene.housekeeping_settings (where skene.housekeep reads it), idempotent, shown by
--dry-run, back to the default when the table is left out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from skene_pg.config import Change, ConfigError, Problem, apply_config, load_config
from skene_pg.config.model import HousekeepingSpec

SKENE_PG = str(Path(sys.executable).parent / "skene-pg")

BASE = """\
default_plan = "free"

[plans.free]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "skene.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


def stored(conn: psycopg.Connection) -> tuple[str, int]:
    row = conn.execute(
        "SELECT keep_finished::text, extract(epoch FROM keep_finished)::bigint "
        "FROM skene.housekeeping_settings"
    ).fetchone()
    assert row is not None
    return row


def with_keep(value: str) -> str:
    return BASE + f'\n[housekeeping]\nkeep_finished = "{value}"\n'


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30 days", 2592000), ("7d", 604800), ("2 weeks", 1209600), ("36 hours", 129600)],
)
def test_keep_finished_takes_durations(tmp_path: Path, written: str, seconds: int) -> None:
    config = load_config(write(tmp_path, with_keep(written)))
    assert config.housekeeping == HousekeepingSpec(seconds)


def test_left_out_it_is_30_days(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).housekeeping == HousekeepingSpec(30 * 86400)
    empty = BASE + "\n[housekeeping]\n"
    assert load_config(write(tmp_path, empty)).housekeeping == HousekeepingSpec(30 * 86400)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (with_keep("12 hours"), "housekeeping.keep_finished", '"12 hours" is shorter than 1 day'),
        (with_keep("soon"), "housekeeping.keep_finished", '"soon" is not a duration'),
        (
            BASE + "\n[housekeeping]\nkeep_finished = 30\n",
            "housekeeping.keep_finished",
            "30 is not a duration",
        ),
        (
            BASE + '\n[housekeeping]\nkeep_finshed = "30 days"\n',
            "housekeeping.keep_finshed",
            "unknown key; did you mean keep_finished?",
        ),
        ('housekeeping = "30 days"\n' + BASE, "housekeeping", "must be a table"),
    ],
    ids=["too short", "not a duration", "a number", "a typo", "not a table"],
)
def test_mistakes_have_their_line_and_field(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    (problem,) = problems(tmp_path, text)
    key = field.rsplit(".", 1)[-1]
    (line,) = [n for n, row in enumerate(text.splitlines(), 1) if row.startswith(f"{key} =")]
    assert (problem.field, problem.line) == (field, line)
    assert message in problem.message


def test_the_minimum_says_why(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, with_keep("1 hour"))
    assert str(problem) == (
        f'{tmp_path / "skene.toml"}:6: housekeeping.keep_finished: "1 hour" is shorter than '
        "1 day, the least finished work is kept (a day's dedupe keys, e.g. the daily "
        'reconcile\'s, must outlive the day); use e.g. "30 days"'
    )


def test_apply_stores_it_once_and_dry_run_only_shows_it(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    assert apply_config(conn, load_config(write(tmp_path, BASE)))  # the plan
    assert stored(conn) == ("30 days", 2592000)  # the default, untouched
    week = load_config(write(tmp_path, with_keep("7d")))
    change = Change("update", "housekeeping", "keep_finished", "30 days -> 7 days")
    assert apply_config(conn, week, dry_run=True) == [change]
    assert stored(conn) == ("30 days", 2592000)
    assert apply_config(conn, week) == [change]
    assert stored(conn) == ("7 days", 604800)
    assert apply_config(conn, week) == []  # twice: nothing to change
    hours = load_config(write(tmp_path, with_keep("36 hours")))
    assert apply_config(conn, hours) == [
        Change("update", "housekeeping", "keep_finished", "7 days -> 36 hours")
    ]
    assert stored(conn) == ("1 day 12:00:00", 129600)
    # the file is the truth: without [housekeeping], back to the default
    assert apply_config(conn, load_config(write(tmp_path, BASE))) == [
        Change("update", "housekeeping", "keep_finished", "36 hours -> 30 days")
    ]
    assert stored(conn) == ("30 days", 2592000)


def test_the_cli_dry_run_and_housekeep_command(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKENE_")}
    env["SKENE_DATABASE_URL"] = db_url

    def skene_pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SKENE_PG, *args], capture_output=True, text=True, env=env, timeout=120
        )

    path = write(tmp_path, with_keep("14 days"))
    dry = skene_pg("apply", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would update housekeeping keep_finished: 30 days -> 14 days" in dry.stdout.splitlines()
    assert stored(conn) == ("30 days", 2592000)
    assert skene_pg("apply", str(path)).returncode == 0
    assert stored(conn) == ("14 days", 1209600)

    conn.execute("SELECT skene.enqueue('test', '{}')")
    conn.execute("SELECT skene.cancel_job(id) FROM skene.jobs")
    conn.execute("UPDATE skene.jobs SET finished_at = now() - interval '15 days'")
    ran = skene_pg("housekeep", "--json")
    assert ran.returncode == 0, ran.stderr
    assert '"jobs": 1' in ran.stdout
    assert conn.execute("SELECT count(*) FROM skene.jobs").fetchone() == (0,)
