"""The examples run as their READMEs say (migrate, apply, serve), each on a fresh
database, so they never rot. Django examples run in processes of their own (their
settings); the FastAPI one is served by uvicorn and driven with httpx."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from psycopg import sql

from skene_pg import db, migrations
from skene_pg.devdb import DevCluster
from tests.integrations.conftest import apply_toml
from tests.integrations.serve import serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def fresh_db(pg_cluster: DevCluster) -> Iterator[str]:
    name = f"skene_example_{uuid.uuid4().hex[:12]}"
    with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_cluster.url(name)
    finally:
        if pg_cluster.has_pg_cron:  # apply scheduled the retention loop there
            with db.connect(pg_cluster.url(pg_cluster.cron_database), autocommit=True) as cron:
                if cron.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
                    cron.execute(
                        "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s", (name,)
                    )
        with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def run(example: str, url: str, *args: str) -> str:
    """A command in the example's folder, as its README runs it."""
    # the example's own settings (manage.py), not the test project's this process uses
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=url, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, *args], cwd=EXAMPLES / example, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def shell(example: str, url: str, code: str) -> str:
    return run(example, url, "manage.py", "shell", "-c", textwrap.dedent(code))


def test_django_freemium(fresh_db: str) -> None:
    run("django_freemium", fresh_db, "manage.py", "migrate", "--verbosity", "0")
    run("django_freemium", fresh_db, "manage.py", "skene_apply")
    run("django_freemium", fresh_db, "manage.py", "check", "--fail-level", "WARNING")
    out = shell(
        "django_freemium",
        fresh_db,
        """
        import json
        from django.test import Client
        client = Client()
        codes = [client.post("/api/search", HTTP_X_API_KEY="acme").status_code for _ in range(21)]
        blocked = client.post("/api/search", HTTP_X_API_KEY="acme")
        upgrade = client.get("/upgrade", {"customer": "acme"})
        print(json.dumps({"codes": codes, "blocked": json.loads(blocked.content),
                          "upgrade": upgrade["Location"]}))
        """,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["codes"] == [200] * 20 + [402]
    assert result["blocked"]["title"] == (
        "You've used your 20 free API requests this month. Upgrade to Pro for unlimited requests."
    )
    assert result["blocked"]["upgrade_url"] == "/upgrade"
    assert result["upgrade"] == "https://buy.stripe.com/test_example?client_reference_id=acme"
    with db.connect(fresh_db) as conn:
        assert conn.execute(
            "SELECT loop_name FROM skene.jobs WHERE customer_id = 'acme'"
        ).fetchall() == [("free_api_limit",)]
        # what Stripe's webhook does through `skene_listen --http`: acme is on pro now
        conn.execute("SELECT skene.set_plan('acme', 'pro', 'stripe')")
        conn.commit()
    out = shell(
        "django_freemium",
        fresh_db,
        """
        from django.test import Client
        print(Client().post("/api/search", HTTP_X_API_KEY="acme").status_code)
        """,
    )
    assert out.strip().splitlines()[-1] == "200"


def test_fastapi_freemium(fresh_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    migrations.upgrade(fresh_db)
    apply_toml(fresh_db, tmp_path, (EXAMPLES / "fastapi_freemium" / "skene.toml").read_text())
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    spec = importlib.util.spec_from_file_location(
        "fastapi_freemium_app", EXAMPLES / "fastapi_freemium" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with serve(module.app) as base, httpx.Client(base_url=base) as client:
        codes = [
            client.post("/v1/summarize", headers={"X-Api-Key": "acme"}).status_code
            for _ in range(100)
        ]
        blocked = client.post("/v1/summarize", headers={"X-Api-Key": "acme"})
        health = client.get("/health", headers={"X-Api-Key": "acme"})
    assert codes == [200] * 100
    assert blocked.status_code == 402
    assert (
        blocked.json()["title"]
        == "You've used your 100 free calls this month. Upgrade to continue."
    )
    assert health.status_code == 200 and "ratelimit-limit" not in health.headers


def _midday_zone() -> str:
    """A fixed-offset zone where it is about noon now, so quiet hours (21:00-08:00 in
    the customer's zone) never hold the email back, whenever the test runs."""
    offset = 12 - datetime.now(UTC).hour
    offset = offset - 24 if offset > 14 else offset + 24 if offset < -12 else offset
    return f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-3 is UTC+3


def test_django_retention(fresh_db: str, tmp_path: Path) -> None:
    run("django_retention", fresh_db, "manage.py", "migrate", "--verbosity", "0")
    run("django_retention", fresh_db, "manage.py", "skene_apply")
    shell(
        "django_retention",
        fresh_db,
        f"""
        from datetime import timedelta
        from django.contrib.auth.models import User
        from django.utils import timezone
        from projects.models import Event, Project
        from skene_pg.django import client
        ada = User.objects.create_user("ada", email="ada@example.com", first_name="Ada")
        client().identify(str(ada.pk), timezone={_midday_zone()!r})
        Project.objects.create(owner=ada, name="Apollo")
        Event.objects.create(customer_id=str(ada.pk), kind="project_updated",
                             created_at=timezone.now() - timedelta(days=8))
        User.objects.create_user("bob", email="bob@example.com", first_name="Bob")
        """,
    )
    with db.connect(fresh_db) as conn:  # the watched table recorded Ada's activity
        last = conn.execute(
            "SELECT last_activity_at FROM skene.customers WHERE email = 'ada@example.com'"
        )
        assert (datetime.now(UTC) - last.fetchone()[0]).days == 8  # type: ignore[index]
    run(
        "django_retention",
        fresh_db,
        "-c",
        "from skene_pg.cli import main; main()",
        "loops",
        "run",
        "dormant_users",
        "--database-url",
        fresh_db,
    )
    outbox = tmp_path / "outbox"
    run(
        "django_retention",
        fresh_db,
        "manage.py",
        "skene_listen",
        "--drain",
        "--templates",
        "templates",
        "--outbox-dir",
        str(outbox),
    )
    (sent,) = outbox.glob("*.eml")  # Ada only: Bob was never active, nor in the segment
    text = sent.read_text()
    assert "Subject: Apollo misses you, Ada" in text
    assert "Your project Apollo hasn't moved since" in text
    with db.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM skene.jobs WHERE kind = 'email'").fetchone() == (
            1,
        )


def test_examples_have_three_command_readmes() -> None:
    for example in ("django_freemium", "fastapi_freemium", "django_retention"):
        readme = (EXAMPLES / example / "README.md").read_text()
        block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
        assert len(block.strip().splitlines()) == 3, example
