"""Clusters of their own: pg_cron in the application's own database (cron.schedule
is enough, schedule_in_database is not needed), and pg_cron configured
(cron.database_name set) but not running (not in shared_preload_libraries): the
leftover that once made every loop run nowhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skene_pg import migrations
from skene_pg.devdb import DEFAULT_DBNAME, DevCluster, find_bindir, pg_cron_available
from skene_pg.retention.schedules import run_due
from tests.deploy.managed_pg import (
    add_login_roles,
    admin,
    apply_json,
    create_deployment,
    customers,
    doctor,
    extra_cluster,
    findings,
    launcher_database,
    write_config,
)

PRELOAD = "shared_preload_libraries = 'pg_cron'   # then restart PostgreSQL"


@pytest.fixture(scope="module")
def same_database_cluster() -> Iterator[DevCluster]:
    """pg_cron preloaded, keeping its jobs in the application's database."""
    if not pg_cron_available(find_bindir()):
        pytest.skip("pg_cron is not installed on this machine (apt-get install postgresql-15-cron)")
    yield from extra_cluster("same-db", cron_database=DEFAULT_DBNAME)


@pytest.fixture(scope="module")
def not_running_cluster() -> Iterator[DevCluster]:
    """pg_cron not preloaded, but cron.database_name still set."""
    yield from extra_cluster(
        "no-cron", preload_pg_cron=False, settings={"cron.database_name": "'postgres'"}
    )


def test_pg_cron_in_the_apps_own_database(
    same_database_cluster: DevCluster, tmp_path: Path
) -> None:
    cluster = same_database_cluster
    # start() waited for the launcher to reach the database it had just created
    assert launcher_database(cluster) == DEFAULT_DBNAME
    dep = create_deployment(cluster, database=DEFAULT_DBNAME)
    migrations.upgrade(dep.owner_url)
    config = write_config(tmp_path)

    # not created yet: a dry run says apply will try, and what that needs
    planned = apply_json(config, dep.owner_url, "--dry-run")
    assert [c["name"] for c in planned["changes"] if c["kind"] == "schedule"] == [
        "skene:dormant_users"
    ]
    (warning,) = planned["warnings"]
    assert warning["message"].startswith(
        f"pg_cron's extension is not created in database {DEFAULT_DBNAME}: apply will create it"
    )
    # and the owner may not create it
    applied = apply_json(config, dep.owner_url)
    (warning,) = applied["warnings"]
    assert warning["message"].startswith(
        f"pg_cron is running but its extension is not created in database {DEFAULT_DBNAME}, "
        f"and role {dep.owner} may not create it: permission denied"
    )
    assert (warning["fix"], warning["database"]) == (["CREATE EXTENSION pg_cron;"], DEFAULT_DBNAME)
    code, report = doctor(dep.owner_url)
    assert code == 0
    assert findings(report, "pg_cron")[0]["fix"] == ["CREATE EXTENSION pg_cron;"]

    with dep.admin() as conn:
        conn.execute("CREATE EXTENSION pg_cron")
    # cron.schedule is PUBLIC's: only the schema is missing
    (warning,) = apply_json(config, dep.owner_url)["warnings"]
    assert warning["fix"] == [f"GRANT USAGE ON SCHEMA cron TO {dep.owner};"]
    assert "EXECUTE on cron.schedule)" in warning["message"]

    dep.grant_cron(f"GRANT USAGE ON SCHEMA cron TO {dep.owner}")
    applied = apply_json(config, dep.owner_url)
    assert applied["warnings"] == []
    assert [c for c in applied["changes"] if c["kind"] == "schedule"] == [
        {
            "action": "create",
            "kind": "schedule",
            "name": "skene:dormant_users",
            "detail": f"* * * * * in database {DEFAULT_DBNAME}",
        }
    ]
    assert dep.cron_jobs() == [("skene:dormant_users", DEFAULT_DBNAME, dep.owner, "* * * * *")]
    with dep.connect(dep.owner) as owner:  # scheduled without schedule_in_database
        assert owner.execute(
            "SELECT has_function_privilege("
            "'cron.schedule_in_database(text, text, text, text, text, boolean)', 'EXECUTE')"
        ).fetchone() == (False,)
        assert owner.execute(
            "SELECT cron_job FROM skene.loops WHERE type = 'retention'"
        ).fetchone() == ("skene:dormant_users",)
    assert apply_json(config, dep.owner_url)["changes"] == []
    code, report = doctor(dep.owner_url)
    assert code == 0
    (cron,) = findings(report, "pg_cron")
    assert cron["status"] == "ok"
    assert cron["message"].endswith(
        f"{dep.owner} may schedule retention loops there (cron.schedule)"
    )


def test_pg_cron_configured_but_not_running(
    not_running_cluster: DevCluster, tmp_path: Path
) -> None:
    cluster = not_running_cluster
    assert launcher_database(cluster) is None
    # before an admin made skene's roles: the owner may not create them
    dep = create_deployment(cluster, database=DEFAULT_DBNAME, schema_roles=False)
    code, report = doctor(dep.owner_url)
    assert code == 3
    assert [(f["status"], f["fix"]) for f in findings(report, "roles")] == [
        ("blocker", ["CREATE ROLE skene_app NOLOGIN;"]),
        ("blocker", ["CREATE ROLE skene_worker NOLOGIN;"]),
        ("blocker", ["CREATE ROLE skene_billing NOLOGIN;"]),
    ]
    assert findings(report, "schema")[0]["status"] == "blocker"
    assert findings(report, "privileges")[0]["status"] == "ok"  # CREATE on the database

    with admin(cluster) as conn:
        conn.execute("CREATE ROLE skene_app NOLOGIN")
        conn.execute("CREATE ROLE skene_worker NOLOGIN")
        conn.execute("CREATE ROLE skene_billing NOLOGIN")
        add_login_roles(conn, dep)
    migrations.upgrade(dep.owner_url)
    code, report = doctor(dep.owner_url)
    assert (code, report["blockers"]) == (0, 0)
    (cron,) = findings(report, "pg_cron")
    assert cron["status"] == "warning"
    assert cron["message"].startswith(
        "pg_cron is configured (cron.database_name = postgres) but not running"
    )
    assert cron["fix"] == [PRELOAD]

    config = write_config(tmp_path)
    dry = apply_json(config, dep.owner_url, "--dry-run")
    applied = apply_json(config, dep.owner_url)
    assert dry["warnings"] == applied["warnings"]
    (warning,) = applied["warnings"]
    assert warning["message"] == (
        "pg_cron is configured (cron.database_name = postgres) but not running: its launcher "
        "is not in pg_stat_activity (is pg_cron missing from shared_preload_libraries?); "
        "skene-pg listen runs retention loop dormant_users (keep it running)"
    )
    assert warning["fix"] == [PRELOAD]

    # The leftover: a loop pg_cron ran before it was taken out of the preload list.
    with dep.connect(dep.owner) as owner:
        owner.execute(
            "UPDATE skene.loops SET cron_job = 'skene:dormant_users' WHERE type = 'retention'"
        )
    code, report = doctor(dep.owner_url)
    assert code == 3
    (blocker,) = [f for f in report["findings"] if f["status"] == "blocker"]
    assert blocker == {
        "check": "schedules",
        "status": "blocker",
        "message": "pg_cron is not running, yet skene.loops says it runs dormant_users: the "
        "worker skips them, so they run nowhere",
        "fix": ["skene-pg apply skene.toml   # hands them to the worker or schedules them again"],
        "database": None,
    }
    applied = apply_json(config, dep.owner_url)  # no longer "nothing to change"
    assert applied["changes"] == [
        {
            "action": "update",
            "kind": "schedule",
            "name": "skene:dormant_users",
            "detail": "pg_cron does not run it; skene-pg listen runs loop dormant_users now",
        }
    ]
    assert [w["fix"] for w in applied["warnings"]] == [[PRELOAD]]
    code, report = doctor(dep.owner_url)
    assert code == 0

    customers(dep)
    with dep.connect(dep.worker_user) as worker:  # the worker's periodic task
        assert [(r.loop_name, r.state, r.queued) for r in run_due(worker)] == [
            ("dormant_users", "succeeded", 1)
        ]
