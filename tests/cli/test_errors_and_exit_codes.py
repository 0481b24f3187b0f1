"""The CLI says what went wrong: a skene error with its hint, a deadlock or a timeout,
or (only when connecting failed) "cannot reach the database"; its exit codes are
documented and the same with --json; every environment variable shows in --help."""

from __future__ import annotations

import json
from datetime import datetime

import click
import psycopg
import pytest

from skene_pg.cli import main
from skene_pg.cli.common import (
    FAILED,
    NO,
    OK,
    TRY_AGAIN,
    UNREACHABLE,
    USAGE,
    database_error,
)
from tests.cli.test_cli import all_commands, run

CATALOGUE = """
INSERT INTO skene.plans (plan, paid, is_default) VALUES ('free', false, true);
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'month');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES ('api_calls', 'free', 1);
"""


def test_exit_codes_are_documented_in_the_main_help() -> None:
    result = run("--help")
    for code, words in (
        (OK, "done"),
        (FAILED, "failed"),
        (USAGE, "wrong options"),
        (NO, "check blocked"),
        (UNREACHABLE, "cannot reach the database"),
        (TRY_AGAIN, "deadlock"),
    ):
        assert any(
            line.strip().startswith(f"{code}  ") and words in line
            for line in result.stdout.splitlines()
        ), f"exit code {code} ({words}) is not in skene-pg --help"


def test_check_exits_3_when_blocked_with_or_without_json(
    conn: psycopg.Connection, db_url: str
) -> None:
    conn.execute(CATALOGUE)
    allowed = run("check", "cus_1", "api_calls", "--increment", "--database-url", db_url)
    assert allowed.returncode == OK, allowed.stderr
    plain = run("check", "cus_1", "api_calls", "--increment", "--database-url", db_url)
    assert plain.returncode == NO
    as_json = run("check", "cus_1", "api_calls", "--json", "--database-url", db_url)
    assert as_json.returncode == NO
    decision = json.loads(as_json.stdout)
    assert decision["allowed"] is False and decision["reason"] == "limit_reached"
    assert decision["used"] == 1 and decision["usage_limit"] == 1
    # ISO 8601 with the offset, not Python's str() of a datetime
    assert "T" in decision["resets_at"]
    assert datetime.fromisoformat(decision["resets_at"]).utcoffset() is not None


def test_a_skene_error_is_reported_as_itself_not_as_a_connection_failure(
    conn: psycopg.Connection, db_url: str
) -> None:
    conn.execute(
        "INSERT INTO skene.jobs (kind, payload, idempotency_key, state, finished_at) "
        "VALUES ('email', '{}', 'k1', 'succeeded', now())"
    )
    (job_id,) = conn.execute("SELECT id FROM skene.jobs").fetchone() or (None,)
    result = run("jobs", "retry", str(job_id), "--database-url", db_url)
    assert result.returncode == FAILED
    assert f"job {job_id} is succeeded and cannot be retried" in result.stderr
    assert "cannot reach" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_gate_argument_shows_the_message_and_the_hint(
    conn: psycopg.Connection, db_url: str
) -> None:
    conn.execute(CATALOGUE)
    result = run("check", "cus_1", "no_such_feature", "--database-url", db_url)
    assert result.returncode == FAILED
    assert "no_such_feature" in result.stderr
    assert "hint: " in result.stderr and "api_calls" in result.stderr


@pytest.mark.parametrize(
    ("sqlstate", "code", "words"),
    [
        ("40P01", TRY_AGAIN, "deadlock"),
        ("40001", TRY_AGAIN, "serialization failure"),
        ("57014", TRY_AGAIN, "timed out"),
        ("55P03", TRY_AGAIN, "timed out"),
        ("55000", FAILED, "raised on purpose"),
        ("22023", FAILED, "raised on purpose"),
    ],
)
def test_database_errors_are_classified_by_what_they_are(
    conn: psycopg.Connection, sqlstate: str, code: int, words: str
) -> None:
    # Real errors from the real server, each with its SQLSTATE.
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'raised on purpose' "
            f"USING ERRCODE = '{sqlstate}', HINT = 'the hint'; END $$"
        )
    error = database_error(raised.value)
    assert error.exit_code == code
    assert words in error.message
    assert "cannot reach" not in error.message


def test_a_lock_timeout_is_a_timeout(connect: object, db_url: str) -> None:
    holder = psycopg.connect(db_url)
    waiter = psycopg.connect(db_url, autocommit=True)
    try:
        holder.execute("LOCK TABLE skene.plans IN ACCESS EXCLUSIVE MODE")
        waiter.execute("SET lock_timeout = '50ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable) as raised:
            waiter.execute("SELECT count(*) FROM skene.plans")
        error = database_error(raised.value)
        assert error.exit_code == TRY_AGAIN and "timed out" in error.message
    finally:
        holder.close()
        waiter.close()


def test_only_a_failed_connection_is_unreachable() -> None:
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    error = database_error(raised.value)
    assert error.exit_code == UNREACHABLE
    assert error.message.startswith("cannot reach the database")


def _options_with_envvar() -> list[tuple[tuple[str, ...], click.Option]]:
    found = []
    for path in all_commands(main):
        command: click.Command = main
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                found.append((path, param))
    return found


def test_every_environment_variable_of_an_option_shows_in_its_help() -> None:
    options = _options_with_envvar()
    assert len(options) > 15
    names = {param.envvar for _, param in options}
    for expected in (
        "SKENE_WORKER_CONCURRENCY",
        "SKENE_POLL_INTERVAL",
        "SKENE_LEASE",
        "SKENE_RETRY_BASE",
        "SKENE_LOG_LEVEL",
    ):
        assert expected in names
    for path, param in options:
        assert param.show_envvar, f"{' '.join(path)} {param.opts[0]} hides ${param.envvar}"
    listen_help = run("listen", "--help").stdout
    for _, param in options:
        if param.envvar in ("SKENE_WORKER_CONCURRENCY", "SKENE_LEASE", "SKENE_LOG_LEVEL"):
            assert str(param.envvar) in listen_help
