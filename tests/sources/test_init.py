"""`skene-pg init` on real schemas, each followed by apply and a working gate and loop:
a Django project with dj-stripe migrated, a Prisma schema, a FastAPI app and a Next.js
app (their code written here), a Rails-style users table; and the ways it says no."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors

from skene_pg.cli import main
from skene_pg.cli.common import FAILED, UNREACHABLE
from skene_pg.config import apply_config, load_config
from tests.sources.conftest import DJANGO_PROJECT, scalar
from tests.sources.test_prisma_sources import PRISMA_SCHEMA


def init(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["init", "--database-url", db_url, *args])


def init_and_apply(
    conn: psycopg.Connection, db_url: str, tmp_path: Path, *args: str
) -> dict[str, Any]:
    """init → skene.toml → apply; the file as TOML."""
    path = tmp_path / "skene.toml"
    result = init(db_url, "--output", str(path), *args)
    assert result.exit_code == 0, result.output
    apply_config(conn, load_config(path))
    return tomllib.loads(path.read_text())


def gate(conn: psycopg.Connection, customer: str, feature: str, amount: int = 1) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT allowed, reason, plan FROM skene.check_and_increment(%s, %s, %s)",
        (customer, feature, amount),
    ).fetchone()
    assert row is not None
    return row


def prompts(conn: psycopg.Connection, customer: str) -> int:
    return scalar(
        conn,
        "SELECT count(*) FROM skene.jobs WHERE loop_name = 'free_tier_limit' AND customer_id = %s",
        (customer,),
    )


def run_retention(conn: psycopg.Connection) -> list[str]:
    row = conn.execute("SELECT state, error FROM skene.run_loop('dormant_users')").fetchone()
    assert row is not None and row[0] == "succeeded", row
    return [
        r[0]
        for r in conn.execute(
            "SELECT customer_id FROM skene.loop_sends WHERE loop_name = 'dormant_users' "
            "ORDER BY customer_id"
        )
    ]


def test_django_with_dj_stripe(django_db: str, tmp_path: Path) -> None:
    conn = psycopg.connect(django_db, autocommit=True)
    try:
        conn.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined, last_login) VALUES "
            "('!', false, 'ada', 'Ada', 'Lovelace', 'ada@example.com', false, true, now(), now()), "
            "('!', false, 'bob', '', '', 'bob@example.com', false, true, now(), "
            " now() - interval '8 days')"
        )
        conn.execute(
            "INSERT INTO djstripe_customer (djstripe_created, djstripe_updated, stripe_data, id, "
            "email, subscriber_id) SELECT now(), now(), '{}', 'cus_' || username, email, id "
            "FROM auth_user"
        )
        conn.execute(
            "INSERT INTO djstripe_subscription (djstripe_created, djstripe_updated, stripe_data, "
            "id, customer_id) VALUES (now(), now(), %s, 'sub_ada', 'cus_ada')",
            (
                json.dumps(
                    {
                        "status": "active",
                        "items": {"data": [{"price": {"id": "price_pro_monthly"}}]},
                    }
                ),
            ),
        )
        proposal = init_and_apply(conn, django_db, tmp_path, "--app-dir", str(DJANGO_PROJECT))
        assert proposal["plans"]["pro_monthly"] == {
            "paid": True,
            "stripe_prices": ["price_pro_monthly"],
        }
        assert proposal["sources"]["customers"]["table"] == "auth_user"
        assert proposal["sources"]["subscriptions"]["table"] == "djstripe_subscription"
        assert proposal["features"]["projects"]["match"] == [
            {"method": "*", "path": "/api/projects/"}
        ]
        assert proposal["features"]["reports_export"]["match"] == [
            {"method": "*", "path": "/api/reports/*/export"}
        ]
        # the plan came from dj-stripe's subscription; the gate sees it
        assert gate(conn, "1", "projects") == (True, "ok", "pro_monthly")
        assert scalar(conn, "SELECT name FROM skene.customers WHERE customer_id = '1'") == (
            "Ada Lovelace"
        )
        # the freemium loop: bob's first block queues one prompt
        assert gate(conn, "2", "projects", 100) == (True, "ok", "free")
        assert gate(conn, "2", "projects") == (False, "limit_reached", "free")
        assert prompts(conn, "2") == 1
        # the retention loop: the app's own query finds bob, a week after his last login
        assert run_retention(conn) == ["2"]
        # a cancelled subscription puts ada back on the default plan
        conn.execute(
            "UPDATE djstripe_subscription SET stripe_data = stripe_data || "
            '\'{"status": "canceled"}\''
        )
        assert gate(conn, "1", "projects")[2] == "free"
    finally:
        conn.close()


def test_prisma_schema(conn: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    conn.execute(PRISMA_SCHEMA)
    conn.execute(
        'CREATE TABLE "Project" ("id" TEXT NOT NULL PRIMARY KEY, "ownerId" TEXT NOT NULL '
        'REFERENCES "User"("id"), "name" TEXT NOT NULL)'
    )
    conn.execute(
        'INSERT INTO "User" (id, email, "lastActiveAt") VALUES '
        "('u_ada', 'ada@example.com', now()), "
        "('u_bob', 'bob@example.com', now() - interval '9 days')"
    )
    conn.execute(
        'INSERT INTO "Subscription" (id, "userId", "priceId", status) VALUES '
        "('s_1', 'u_ada', 'price_team_yearly', 'active')"
    )
    proposal = init_and_apply(conn, db_url, tmp_path)
    assert proposal["features"]["projects"]["count"] == {"table": "Project", "customer": "ownerId"}
    assert proposal["features"]["projects"]["limits"] == {"free": 3, "team_yearly": 50}
    assert set(proposal["sources"]) == {"customers", "subscriptions", "events", "activity"}
    assert proposal["loops"][1]["query"] == (
        'SELECT * FROM "User" WHERE "lastActiveAt" < NOW() - INTERVAL \'7 days\''
    )
    assert scalar(conn, "SELECT plan FROM skene.customers WHERE customer_id = 'u_ada'") == (
        "team_yearly"
    )
    for n in range(3):
        conn.execute(
            "INSERT INTO \"Project\" (id, \"ownerId\", name) VALUES (%s, 'u_bob', 'p')", (f"p{n}",)
        )
    assert prompts(conn, "u_bob") == 1  # the last slot taken
    with pytest.raises(errors.CheckViolation):
        conn.execute("INSERT INTO \"Project\" (id, \"ownerId\", name) VALUES ('p9', 'u_bob', 'p')")
    assert run_retention(conn) == ["u_bob"]


FASTAPI_MAIN = """\
from fastapi import APIRouter, FastAPI

app = FastAPI()
router = APIRouter(prefix="/api/v1")


@app.post("/api/documents")
def create_document(): ...


@router.post("/reports/{report_id}/export")
def export_report(report_id: int): ...


@app.get("/health")
def health(): ...


@app.post("/webhooks/stripe")
def stripe_webhook(): ...

app.include_router(router)
"""


def rails_schema(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TABLE users (id bigserial PRIMARY KEY, email varchar NOT NULL, name varchar, "
        "time_zone varchar, created_at timestamp(6) NOT NULL DEFAULT now(), "
        "updated_at timestamp(6) NOT NULL DEFAULT now())"
    )
    conn.execute(
        "CREATE TABLE documents (id bigserial PRIMARY KEY, user_id bigint NOT NULL, "
        "title varchar, created_at timestamp(6) NOT NULL DEFAULT now())"
    )
    conn.execute(
        "INSERT INTO users (email, name, time_zone) VALUES ('ada@example.com', 'Ada', "
        "'Europe/London')"
    )


def test_fastapi_app_on_a_rails_style_database(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    rails_schema(conn)
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(FASTAPI_MAIN)
    proposal = init_and_apply(conn, db_url, tmp_path, "--app-dir", str(app))
    assert proposal["features"]["documents"]["count"] == {
        "table": "documents",
        "customer": "user_id",
    }
    assert proposal["features"]["documents_calls"]["match"] == [
        {"method": "POST", "path": "/api/documents"}
    ]
    assert proposal["features"]["reports_export"]["match"] == [
        {"method": "POST", "path": "/api/v1/reports/*/export"}
    ]
    assert "health" not in proposal["features"] and "webhooks_stripe" not in proposal["features"]
    assert proposal["sources"]["customers"] == {
        "table": "users",
        "id": "id",
        "email": "email",
        "name": "name",
        "timezone": "time_zone",
    }
    assert gate(conn, "1", "reports_export") == (True, "ok", "free")
    conn.execute("INSERT INTO documents (user_id) SELECT 1 FROM generate_series(1, 3)")
    with pytest.raises(errors.CheckViolation):
        conn.execute("INSERT INTO documents (user_id) VALUES (1)")
    assert prompts(conn, "1") == 1
    assert scalar(conn, "SELECT timezone FROM skene.customers WHERE customer_id = '1'") == (
        "Europe/London"
    )


def test_nextjs_app_routes(conn: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    conn.execute(PRISMA_SCHEMA)
    app = tmp_path / "web"
    routes = {
        "app/api/projects/route.ts": "export async function GET() {}\n"
        "export async function POST(req: Request) {}\n",
        "app/api/projects/[id]/export/route.ts": "export const POST = async () => {}\n",
        "src/app/(dashboard)/api/ai/generate/route.ts": "export async function POST() {}\n",
        "app/api/auth/[...nextauth]/route.ts": "export { handler as GET, handler as POST }\n",
        "node_modules/pkg/app/api/x/route.ts": "export async function POST() {}\n",
    }
    for name, text in routes.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    proposal = init_and_apply(conn, db_url, tmp_path, "--app-dir", str(app))
    matches = {name: f.get("match") for name, f in proposal["features"].items()}
    assert matches == {
        "projects": [
            {"method": "POST", "path": "/api/projects"},
            {"method": "GET", "path": "/api/projects"},
        ],
        "projects_export": [{"method": "POST", "path": "/api/projects/*/export"}],
        "ai_generate": [{"method": "POST", "path": "/api/ai/generate"}],
    }
    assert proposal["loops"][0]["feature"] == "projects_export"
    conn.execute("INSERT INTO \"User\" (id, email) VALUES ('u_1', 'ada@example.com')")
    assert gate(conn, "u_1", "ai_generate") == (True, "ok", "free")


def test_init_prints_to_stdout_and_never_overwrites_without_force(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    rails_schema(conn)
    printed = init(db_url)
    assert printed.exit_code == 0
    assert "[sources.customers]" in printed.output
    assert "# users with an email column: a Rails-style users table." in printed.output
    existing = tmp_path / "skene.toml"
    existing.write_text("mine\n")
    refused = init(db_url, "--output", str(existing))
    assert refused.exit_code == FAILED
    assert "exists: pass --force to overwrite it" in refused.output
    assert existing.read_text() == "mine\n"
    assert init(db_url, "--output", str(existing), "--force").exit_code == 0
    assert existing.read_text() == printed.output
    as_json = json.loads(init(db_url, "--json").output)
    assert as_json["recognised"]["sources"] == {"customers": "users"}
    assert as_json["recognised"]["counted"] == {"documents": "documents"}


def test_an_empty_or_unreachable_database_is_said_so(
    db_url: str, connect: Callable[..., psycopg.Connection]
) -> None:
    empty = init(db_url)
    assert empty.exit_code == FAILED
    assert "has no tables besides PostgreSQL's and skene's own" in empty.output
    gone = init("postgresql://nobody@127.0.0.1:1/none")
    assert gone.exit_code == UNREACHABLE
    assert "cannot reach the database" in gone.output
