"""`skene-pg apply` schedules retention loops with pg_cron (in pg_cron's database, for
the test's own database), updates and removes the jobs; the scheduled command queues
each message once however often and however concurrently it runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from skene_pg.config import Change, apply_config, load_config
from skene_pg.devdb import DevCluster
from skene_pg.retention.schedules import run_due
from skene_pg.retention.templates import template_problems
from tests.retention.conftest import T0, customer, days, jobs, set_now

CONFIG = """\
default_plan = "free"
[plans.free]
[features.api_calls]
period = "month"
limits = { free = 100 }
[[loops]]
name = "dormant_users"
type = "retention"
schedule = "0 9 * * *"
dormant_after = "7 days"
template = "re_engagement"
holdout_percent = 0
quiet_hours = { start = "00:00", end = "00:00" }
"""


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "skene.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def cron(
    pg_cluster: DevCluster, db_url: str, conn: psycopg.Connection
) -> Iterator[psycopg.Connection]:
    """A connection to pg_cron's database; this test's jobs are removed afterwards."""
    if not pg_cluster.has_pg_cron:
        pytest.skip("pg_cron is not installed on this machine (apt-get install postgresql-15-cron)")
    database = conn.info.dbname
    with psycopg.connect(pg_cluster.url(pg_cluster.cron_database), autocommit=True) as c:
        yield c
        if c.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
            for (name,) in c.execute(
                "SELECT jobname FROM cron.job WHERE database = %s", (database,)
            ).fetchall():
                c.execute("SELECT cron.unschedule(%s)", (name,))


def _jobs(cron: psycopg.Connection, database: str) -> list[tuple[str, str, str]]:
    return cron.execute(
        "SELECT jobname, schedule, command FROM cron.job WHERE database = %s ORDER BY jobname",
        (database,),
    ).fetchall()


def test_apply_creates_updates_and_removes_pg_cron_jobs(
    cron: psycopg.Connection, conn: psycopg.Connection, tmp_path: Path
) -> None:
    database = conn.info.dbname
    name = f"skene:{database}:dormant_users"
    changes = apply_config(conn, _load(tmp_path, CONFIG))
    assert changes[-1] == Change("create", "schedule", name, f"0 9 * * * in database {database}")
    assert _jobs(cron, database) == [
        (
            name,
            "0 9 * * *",
            "SELECT skene.retention_turn(); SET LOCAL statement_timeout = 60000; "
            "SELECT skene.run_loop('dormant_users')",
        )
    ]
    assert conn.execute("SELECT cron_job FROM skene.loops").fetchall() == [(name,)]
    assert apply_config(conn, _load(tmp_path, CONFIG)) == []  # nothing to change

    moved = CONFIG.replace('"0 9 * * *"', '"30 7 * * 1-5"')
    assert apply_config(conn, _load(tmp_path, moved), dry_run=True) == [
        Change("update", "loop", "dormant_users", "changed schedule"),
        Change("update", "schedule", name, "0 9 * * * -> 30 7 * * 1-5"),
    ]
    assert _jobs(cron, database)[0][1] == "0 9 * * *"  # a dry run changes nothing
    apply_config(conn, _load(tmp_path, moved))
    assert [j[1] for j in _jobs(cron, database)] == ["30 7 * * 1-5"]

    without = CONFIG[: CONFIG.index("[[loops]]")]
    assert apply_config(conn, _load(tmp_path, without))[-1] == Change(
        "delete", "schedule", name, "loop removed or disabled"
    )
    assert _jobs(cron, database) == []


def test_the_scheduled_command_queues_once_with_pg_cron(
    cron: psycopg.Connection,
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    tmp_path: Path,
) -> None:
    apply_config(conn, _load(tmp_path, CONFIG))
    ((_, _, command),) = _jobs(cron, conn.info.dbname)
    set_now(conn, T0)
    for i in range(5):
        customer(conn, f"c{i}", T0 - days(8 + i))
    # pg_cron fires at 09:00; a retry, a second cron and a by-hand run in the same slot
    sessions = [connect() for _ in range(3)]
    for s in sessions:
        set_now(s, T0)
    threads = [
        threading.Thread(target=lambda s=s: [s.execute(command) for _ in range(3)])
        for s in sessions
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c for c, _, _ in jobs(conn, "dormant_users")) == [f"c{i}" for i in range(5)]
    assert conn.execute("SELECT count(*), min(state) FROM skene.loop_runs").fetchone() == (
        1,
        "succeeded",
    )
    # the next days: still one message per episode and step
    for day in (1, 2, 3):
        set_now(conn, T0 + days(day))
        conn.execute(command)
    assert len(jobs(conn, "dormant_users")) == 5
    # the worker leaves loops pg_cron runs alone
    assert run_due(conn, T0 + days(4)) == []


def test_apply_refuses_unknown_templates_and_variables(tmp_path: Path) -> None:
    emails = tmp_path / "emails"
    emails.mkdir()
    (emails / "custom.subject.txt").write_text("Hi {{ user.name }}")
    (emails / "custom.txt").write_text("{{ coupon_code }} {{ unsubscribe_url }}")
    (emails / "custom.html").write_text("<p>{{ unsubscribe_url }}</p>")
    config = _load(
        tmp_path,
        CONFIG.replace('template = "re_engagement"', 'template = "custom"')
        + '[[loops]]\nname = "m"\ntype = "milestone"\nevent = "x"\nthresholds = [1]\n'
        + 'template = "nope"\n',
    )
    problems = template_problems(config, emails)
    assert len(problems) == 2
    assert "custom.txt uses unknown variable(s) coupon_code" in problems[0]
    assert "loops m: template: no template 'nope'" in problems[1]
    assert template_problems(_load(tmp_path, CONFIG), None) == []
