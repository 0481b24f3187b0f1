"""The whole path on managed PostgreSQL, as its non-superuser owner: migrate, apply
(with a retention loop), the gate, the worker, and doctor, with pg_cron in another
database, first without the grants pg_cron needs (apply still succeeds, warns with the
GRANTs, and the worker runs the loop), then with them (the loop is a pg_cron job in
pg_cron's database, running in the app's)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from skene_pg import migrations
from skene_pg.devdb import DevCluster
from skene_pg.retention import schedules
from tests.deploy.managed_pg import (
    Deployment,
    apply_json,
    clean_env,
    create_deployment,
    customers,
    doctor,
    drop_deployment,
    findings,
    skene_pg,
    statuses,
    write_config,
)

SCHEDULE_IN_DATABASE = (
    "cron.schedule_in_database(text, text, text, text, text, boolean)"  # pg_cron 1.4
)


def _drain(dep: Deployment, outbox: Path) -> None:
    """`skene-pg listen --drain` as the worker's own login role."""
    result = skene_pg(
        "listen",
        "--drain",
        "--database-url",
        dep.url(dep.worker_user),
        "--outbox-dir",
        str(outbox),
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr


def _sent(dep: Deployment) -> list[tuple[str | None, str, str]]:
    with dep.connect(dep.owner) as owner:
        return owner.execute(
            "SELECT customer_id, payload ->> 'template', state FROM skene.jobs "
            "WHERE kind = 'email' ORDER BY customer_id"
        ).fetchall()


def test_without_the_grants_apply_warns_and_the_worker_runs_the_loop(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    cron_db = dep.cluster.cron_database
    migrations.upgrade(dep.owner_url)
    config = write_config(tmp_path)

    # A dry run works, and says the same as the apply will.
    planned = apply_json(config, dep.owner_url, "--dry-run")
    assert planned["dry_run"] is True
    assert [w["fix"] for w in planned["warnings"]] == [
        [
            f"GRANT USAGE ON SCHEMA cron TO {dep.owner};",
            f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {dep.owner};",
        ]
    ]

    applied = apply_json(config, dep.owner_url)
    # the catalogue is applied, no schedule made
    assert {(c["kind"], c["name"]) for c in applied["changes"] if c["kind"] == "loop"} == {
        ("loop", "dormant_users"),
        ("loop", "free_tier_limit"),
    }
    assert [c for c in applied["changes"] if c["kind"] == "schedule"] == []
    (warning,) = applied["warnings"]
    assert warning == {**planned["warnings"][0]}
    assert warning["database"] == cron_db
    assert warning["message"].startswith(
        f"role {dep.owner} may not schedule jobs with pg_cron in database {cron_db}"
    )
    assert "skene-pg listen runs retention loop dormant_users" in warning["message"]
    # people see it too, on stderr, ready to copy
    text = skene_pg("apply", str(config), "--database-url", dep.owner_url)
    assert text.returncode == 0
    assert "nothing to change" in text.stdout
    assert f"  fix, in database {cron_db}:" in text.stderr
    assert f"    GRANT USAGE ON SCHEMA cron TO {dep.owner};" in text.stderr.splitlines()

    assert dep.cron_jobs() == []
    with dep.connect(dep.owner) as owner:
        assert owner.execute("SELECT name, cron_job FROM skene.loops ORDER BY name").fetchall() == [
            ("dormant_users", None),
            ("free_tier_limit", None),
        ]

    customers(dep)
    _drain(dep, tmp_path / "outbox")
    assert _sent(dep) == [
        ("cus_away", "re_engagement", "succeeded"),
        ("cus_gate", "upgrade_prompt", "succeeded"),
    ]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    with dep.connect(dep.owner) as owner:
        assert owner.execute("SELECT loop_name, state, queued FROM skene.loop_runs").fetchall() == [
            ("dormant_users", "succeeded", 1)
        ]

    code, report = doctor(dep.owner_url)
    assert code == 0
    assert report["blockers"] == 0
    (cron,) = findings(report, "pg_cron")
    assert cron["status"] == "warning"
    assert cron["database"] == cron_db
    assert cron["fix"] == warning["fix"]
    assert [f["message"] for f in findings(report, "schedules")] == [
        "skene-pg listen runs dormant_users"
    ]
    assert [f["message"] for f in findings(report, "roles")] == [
        f"role skene_app exists (not granted to {dep.owner}); login roles granted it: "
        f"{dep.app_user}",
        f"role skene_worker exists (not granted to {dep.owner}); login roles granted it: "
        f"{dep.worker_user}",
        f"role skene_billing exists (not granted to {dep.owner})",
    ]
    (privileges,) = findings(report, "privileges")
    assert privileges["status"] == "ok"
    assert privileges["message"].startswith(f"{dep.owner} owns schema skene")
    assert statuses(report)["schema"] == {"ok"}
    assert statuses(report)["pooler"] == {"ok"}


def test_with_the_grants_apply_schedules_in_pg_crons_database(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    cron_db = dep.cluster.cron_database
    dep.grant_cron(
        f"GRANT USAGE ON SCHEMA cron TO {dep.owner}",
        f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {dep.owner}",
    )
    migrations.upgrade(dep.owner_url)
    config = write_config(tmp_path)
    job = f"skene:{dep.database}:dormant_users"

    planned = apply_json(config, dep.owner_url, "--dry-run")
    assert planned["warnings"] == []
    assert planned["changes"][-1] == {
        "action": "create",
        "kind": "schedule",
        "name": job,
        "detail": f"* * * * * in database {dep.database}",
    }
    assert dep.cron_jobs() == []

    applied = apply_json(config, dep.owner_url)
    assert applied["warnings"] == []
    assert applied["changes"][-1] == planned["changes"][-1]
    # in pg_cron's database, running in the app's, as the owner
    assert dep.cron_jobs() == [(job, dep.database, dep.owner, "* * * * *")]
    again = apply_json(config, dep.owner_url)
    assert again == {"file": str(config), "dry_run": False, "changes": [], "warnings": []}

    customers(dep)
    with dep.connect(dep.owner) as owner:
        assert owner.execute(
            "SELECT cron_job FROM skene.loops WHERE name = 'dormant_users'"
        ).fetchone() == (job,)
        # what pg_cron runs, as the role it runs it as (the job's owner)
        with dep.cron_admin() as cron:
            ((command,),) = cron.execute(
                "SELECT command FROM cron.job WHERE jobname = %s", (job,)
            ).fetchall()
        assert command == schedules.command("dormant_users", None)
        owner.execute(command)
    _drain(dep, tmp_path / "outbox")  # sends both; does not run the loop itself
    assert _sent(dep) == [
        ("cus_away", "re_engagement", "succeeded"),
        ("cus_gate", "upgrade_prompt", "succeeded"),
    ]
    with dep.connect(dep.owner) as owner:
        assert owner.execute("SELECT count(*) FROM skene.loop_runs").fetchone() == (1,)

    code, report = doctor(dep.owner_url)
    assert code == 0
    with dep.cron_admin() as cron_conn:
        version = cron_conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"
        ).fetchone()
    assert version is not None
    (found,) = findings(report, "pg_cron")
    assert found == {
        "check": "pg_cron",
        "status": "ok",
        "message": f"pg_cron {version[0]} is running in database {cron_db}; {dep.owner} may "
        "schedule retention loops there (cron.schedule_in_database)",
        "fix": [],
        "database": None,
    }
    assert [f["message"] for f in findings(report, "schedules")] == [
        f"pg_cron runs dormant_users (in database {dep.database})"
    ]


def test_grants_revoked_after_scheduling_hand_the_loop_back_to_the_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    grants = (
        f"GRANT USAGE ON SCHEMA cron TO {dep.owner}",
        f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {dep.owner}",
    )
    dep.grant_cron(*grants)
    migrations.upgrade(dep.owner_url)
    config = write_config(tmp_path)
    apply_json(config, dep.owner_url)
    job = f"skene:{dep.database}:dormant_users"
    dep.grant_cron(*(g.replace("GRANT", "REVOKE").replace(" TO ", " FROM ") for g in grants))

    applied = apply_json(config, dep.owner_url)
    assert applied["changes"] == [
        {
            "action": "update",
            "kind": "schedule",
            "name": job,
            "detail": "pg_cron does not run it; skene-pg listen runs loop dormant_users now",
        }
    ]
    cannot, leftover = applied["warnings"]
    assert "may not schedule jobs with pg_cron" in cannot["message"]
    # the job this role can no longer see or remove: harmless, and the admin's to drop
    assert leftover["fix"] == [
        f"SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = '{job}' "
        f"AND database = '{dep.database}';"
    ]
    with dep.connect(dep.owner) as owner:
        assert owner.execute(
            "SELECT cron_job FROM skene.loops WHERE name = 'dormant_users'"
        ).fetchone() == (None,)


def test_doctor_as_the_worker_role(deployment: Deployment) -> None:
    """Pointed at the worker's URL: not the schema's owner (a warning), the schema's
    revision still readable."""
    dep = deployment
    migrations.upgrade(dep.owner_url)
    code, report = doctor(dep.url(dep.worker_user))
    assert code == 0
    (privileges,) = findings(report, "privileges")
    assert privileges["status"] == "warning"
    assert privileges["message"] == (
        f"{dep.worker_user} is not the owner of schema skene ({dep.owner} is): run "
        f"`skene-pg migrate` and `skene-pg apply` as {dep.owner}"
    )
    assert statuses(report)["schema"] == {"ok"}
    assert [f["message"] for f in findings(report, "roles")][1].startswith(
        f"role skene_worker exists (granted to {dep.worker_user})"
    )


def test_an_owner_without_create_on_the_database_is_a_blocker(cron_cluster: DevCluster) -> None:
    dep = create_deployment(cron_cluster, grant_create=False)
    try:
        # as an operator runs it: the installed command's exit code
        result = skene_pg("doctor", "--json", "--database-url", dep.owner_url)
        assert result.returncode == 3, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is False
        (schema,) = findings(report, "schema")
        assert schema == {
            "check": "schema",
            "status": "blocker",
            "message": "the skene schema is not installed in this database",
            "fix": ["skene-pg migrate"],
            "database": None,
        }
        (privileges,) = findings(report, "privileges")
        assert privileges["status"] == "blocker"
        assert privileges["fix"] == [f"GRANT CREATE ON DATABASE {dep.database} TO {dep.owner};"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # and indeed it cannot
            migrations.upgrade(dep.owner_url)
    finally:
        drop_deployment(dep)
