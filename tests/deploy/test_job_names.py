"""pg_cron job names are a `name` (63 bytes): two loops whose job names once shared
their first 63 bytes became one job. Names are now unique and short enough for any
loop and database name; jobs made under the old naming are found and replaced."""

from __future__ import annotations

from pathlib import Path

import psycopg

from skene_pg import migrations
from skene_pg.retention.schedules import command, job_name
from tests.deploy.managed_pg import (
    CONFIG,
    Deployment,
    apply_json,
    doctor,
    findings,
    write_config,
)

PREFIX = "reactivate_customers_who_went_quiet_after_their_trial_"  # 55 characters
FIRST, SECOND = PREFIX + "emea_v1", PREFIX + "apac_v1"  # 62 characters each


def test_short_names_stay_as_they_were() -> None:
    assert job_name("dormant_users", "app", "app") == "skene:dormant_users"
    assert job_name("dormant_users", "app", "postgres") == "skene:app:dormant_users"


def test_long_names_are_unique_and_fit() -> None:
    database = "d" * 63
    names = {
        job_name(loop, db, cron)
        for loop in (FIRST, SECOND, "x" * 63)
        for db, cron in ((database, "postgres"), ("app", "app"), ("app", "postgres"))
    }
    assert len(names) == 9
    assert all(len(n.encode()) <= 63 and n.startswith("skene:") for n in names)
    assert job_name(FIRST, "app", "postgres") == job_name(FIRST, "app", "postgres")
    # a database name in any script is cut at a character boundary
    cut = job_name(FIRST, "données_clients_" * 3, "postgres")
    assert len(cut.encode()) <= 63
    assert cut.startswith("skene:données_clients_")
    assert cut[-11] == "~"


def test_two_long_loop_names_get_two_jobs_and_old_jobs_are_replaced(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    schedule_in_database = "cron.schedule_in_database(text, text, text, text, text, boolean)"
    dep.grant_cron(
        f"GRANT USAGE ON SCHEMA cron TO {dep.owner}",
        f"GRANT EXECUTE ON FUNCTION {schedule_in_database} TO {dep.owner}",
    )
    migrations.upgrade(dep.owner_url)
    loops = "".join(
        CONFIG[CONFIG.index('[[loops]]\nname = "dormant_users"') :].replace("dormant_users", name)
        for name in (FIRST, SECOND)
    )
    config = write_config(tmp_path, CONFIG + loops)
    first, second = (job_name(n, dep.database, dep.cluster.cron_database) for n in (FIRST, SECOND))
    assert first != second

    applied = apply_json(config, dep.owner_url)
    assert sorted(c["name"] for c in applied["changes"] if c["kind"] == "schedule") == sorted(
        [first, second, f"skene:{dep.database}:dormant_users"]
    )
    assert [j[0] for j in dep.cron_jobs() if j[0] != f"skene:{dep.database}:dormant_users"] == (
        sorted([first, second])
    )
    assert apply_json(config, dep.owner_url)["changes"] == []  # applying twice changes nothing

    # As the naming before this one left it: both loops' jobs cut to the same 63 bytes,
    # the second schedule overwriting the first, and skene.loops claiming both.
    cron_db = dep.cluster.cron_database
    with (
        dep.connect(dep.owner) as owner,
        psycopg.connect(dep.url(dep.owner, cron_db), autocommit=True) as owner_in_cron,
    ):
        owner_in_cron.execute(
            "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s AND jobname <> %s",
            (dep.database, f"skene:{dep.database}:dormant_users"),
        )
        old_names = [f"skene:{dep.database}:{loop}" for loop in (FIRST, SECOND)]
        for loop, old in zip((FIRST, SECOND), old_names, strict=True):
            owner_in_cron.execute(
                "SELECT cron.schedule_in_database(%s, '0 9 * * *', %s, %s)",
                (old, command(loop, None), dep.database),
            )
            owner.execute("UPDATE skene.loops SET cron_job = %s WHERE name = %s", (old, loop))
    (legacy,) = [j for j in dep.cron_jobs() if j[0] != f"skene:{dep.database}:dormant_users"]
    assert legacy[0] == old_names[0].encode()[:63].decode()  # one job for two loops

    code, report = doctor(dep.owner_url)
    assert code == 3
    (nowhere,) = [f for f in findings(report, "schedules") if f["status"] == "blocker"]
    assert nowhere["message"] == (
        f"skene.loops says pg_cron runs {SECOND}, {FIRST}, but pg_cron has no such job "
        f"for database {dep.database}: the worker skips them, so they run nowhere"
    )

    applied = apply_json(config, dep.owner_url)
    assert sorted(
        (c["action"], c["name"]) for c in applied["changes"] if c["kind"] == "schedule"
    ) == sorted([("create", first), ("create", second), ("delete", legacy[0])])
    assert sorted(j[0] for j in dep.cron_jobs()) == sorted(
        [first, second, f"skene:{dep.database}:dormant_users"]
    )
    with dep.connect(dep.owner) as owner:
        assert dict(
            owner.execute("SELECT name, cron_job FROM skene.loops WHERE name LIKE 'reactivate%'")
        ) == {FIRST: first, SECOND: second}
    assert apply_json(config, dep.owner_url)["changes"] == []
    code, report = doctor(dep.owner_url)
    assert code == 0
    assert {f["status"] for f in findings(report, "schedules")} == {"ok"}
