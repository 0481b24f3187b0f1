"""skene_pg.fastapi with the real FastAPI, served by uvicorn on loopback and driven
with httpx, against a real database."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI

from skene_pg import AsyncSkene, Decision, http_problem
from skene_pg.fastapi import GateBlocked, gate, problem_response
from skene_pg.gates import Gate
from tests.integrations.conftest import APP_TABLE, apply_toml, prompts, used
from tests.integrations.fastapi_site import make_app
from tests.integrations.serve import serve

MESSAGE = "You've used all 100 free API calls this month. Upgrade to continue."
ADA = {"X-Customer": "cus_ada"}


@pytest.fixture
def app_db(db_url: str, conn: psycopg.Connection, tmp_path: Path) -> str:
    apply_toml(db_url, tmp_path)
    conn.execute(APP_TABLE)
    return db_url


@pytest.fixture
def base(app_db: str) -> Iterator[str]:
    with serve(make_app(app_db, refund_on_error=True, gates_ttl=0)) as url:
        yield url


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base) as client:
        yield client


def test_exactly_100_allowed_and_20_blocked(http: httpx.Client, conn: psycopg.Connection) -> None:
    statuses = [http.post("/api/calls", headers=ADA).status_code for _ in range(120)]
    assert statuses == [200] * 100 + [402] * 20
    assert used(conn, "cus_ada", "api_calls") == 100
    assert prompts(conn, "cus_ada") == [("free_tier_limit", "api_calls")]


def test_exactly_100_allowed_with_50_concurrent_requests(
    base: str, conn: psycopg.Connection
) -> None:
    async def hammer() -> Counter[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=base, limits=limits) as client:
            gate_open = asyncio.Semaphore(50)

            async def post() -> int:
                async with gate_open:
                    return (await client.post("/api/calls", headers=ADA)).status_code

            return Counter(await asyncio.gather(*(post() for _ in range(120))))

    assert asyncio.run(hammer()) == {200: 100, 402: 20}
    assert used(conn, "cus_ada", "api_calls") == 100
    assert len(prompts(conn, "cus_ada")) == 1


def test_the_402_body_and_headers(http: httpx.Client) -> None:
    for _ in range(100):
        allowed = http.post("/api/calls", headers=ADA)
    assert (allowed.headers["RateLimit-Limit"], allowed.headers["RateLimit-Remaining"]) == (
        "100",
        "0",
    )
    before = datetime.now(UTC)
    blocked = http.post("/api/calls", headers=ADA)
    assert blocked.status_code == 402
    assert blocked.headers["content-type"] == "application/problem+json"
    body = blocked.json()
    resets_at = datetime.fromisoformat(body["resets_at"].replace("Z", "+00:00"))
    decision = Decision(False, "limit_reached", "api_calls", "free", 100, 100, 0, resets_at)
    gate_row = Gate("api_calls", "API calls", (), MESSAGE, "https://app.example.com/billing")
    expected = http_problem.blocked(decision, gate_row, before)
    assert body == expected.body
    assert body["title"] == MESSAGE  # from skene.toml
    for name in ("RateLimit-Limit", "RateLimit-Remaining"):
        assert blocked.headers[name] == expected.headers[name]
    reset = int(expected.headers["RateLimit-Reset"])
    assert reset - 2 <= int(blocked.headers["RateLimit-Reset"]) <= reset
    assert blocked.headers["Retry-After"] == blocked.headers["RateLimit-Reset"]


def test_not_in_plan_and_unmatched(http: httpx.Client, conn: psycopg.Connection) -> None:
    beta = http.get("/beta/x", headers=ADA)
    assert (beta.status_code, beta.json()["reason"]) == (402, "not_in_plan")
    home = http.get("/pages/home", headers=ADA)
    assert home.status_code == 200 and "ratelimit-limit" not in home.headers
    assert used(conn, "cus_ada", "api_calls") == 0


def test_anonymous_requests_pass_uncounted_or_get_401(
    app_db: str, http: httpx.Client, conn: psycopg.Connection
) -> None:
    assert http.post("/api/calls").status_code == 200
    assert conn.execute("SELECT count(*) FROM skene.customers").fetchone() == (0,)
    with serve(make_app(app_db, anonymous="401")) as base, httpx.Client(base_url=base) as strict:
        refused = strict.post("/api/calls")
    assert refused.status_code == 401
    assert refused.json()["feature"] == "api_calls"
    assert conn.execute("SELECT count(*) FROM skene.customers").fetchone() == (0,)


def test_a_route_that_fails_gives_the_count_back(
    app_db: str, http: httpx.Client, conn: psycopg.Connection
) -> None:
    # uvicorn closes a connection whose request raised: don't reuse it
    last = {**ADA, "Connection": "close"}
    assert http.post("/api/calls", headers=ADA).status_code == 200
    assert http.post("/api/boom", headers=last).status_code == 500
    assert http.post("/api/fail", headers=ADA).status_code == 502
    assert used(conn, "cus_ada", "api_calls") == 1
    with serve(make_app(app_db)) as base, httpx.Client(base_url=base) as keeps:
        assert keeps.post("/api/boom", headers=last).status_code == 500
    assert used(conn, "cus_ada", "api_calls") == 2  # not opted in: the count stays


def test_the_dependency_gates_one_route(http: httpx.Client, conn: psycopg.Connection) -> None:
    results = [http.post("/exports", headers=ADA) for _ in range(21)]
    assert [r.status_code for r in results] == [200] * 20 + [402]
    assert results[19].json() == {"exported": True, "used": 20}
    assert results[19].headers["RateLimit-Remaining"] == "0"
    assert results[20].json()["title"] == "Free plans include 20 exports a month."
    assert used(conn, "cus_ada", "exports") == 20


def test_middleware_and_dependency_on_one_route_count_once(
    http: httpx.Client, conn: psycopg.Connection
) -> None:
    assert http.post("/api/exports", headers=ADA).status_code == 200
    assert used(conn, "cus_ada", "api_calls") == 1


def test_after_a_block_the_prompt_survives_the_routes_rollback(
    http: httpx.Client, conn: psycopg.Connection
) -> None:
    statuses = [http.get("/reports", headers=ADA).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 500]
    assert conn.execute("SELECT count(*) FROM app_audit").fetchone() == (3,)  # rolled back
    assert prompts(conn, "cus_ada") == [("reports_limit", "reports")]  # committed apart


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_down_gives_503_or_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    down = f"postgresql://postgres@127.0.0.1:{_closed_port()}/gone"
    with caplog.at_level(logging.WARNING, logger="skene_pg.gate"):
        with (
            serve(make_app(down, pool={"timeout": 0.5})) as base,
            httpx.Client(base_url=base) as client,
        ):
            refused = client.post("/api/calls", headers=ADA)
            assert client.post("/exports", headers=ADA).status_code == 503
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 503
        assert any("answering 503" in r.getMessage() for r in caplog.records)
        caplog.clear()
        with (
            serve(make_app(down, pool={"timeout": 0.5}, on_error="open")) as base,
            httpx.Client(base_url=base) as client,
        ):
            assert client.post("/api/calls", headers=ADA).status_code == 200
        assert any("letting the request through" in r.getMessage() for r in caplog.records)


def test_gate_without_the_middleware(app_db: str, conn: psycopg.Connection) -> None:
    skene = AsyncSkene(app_db)
    app = FastAPI()
    app.add_exception_handler(GateBlocked, problem_response)

    @app.post(
        "/exports",
        dependencies=[
            Depends(
                gate("exports", amount=10, skene=skene, customer=lambda r: r.headers["x-customer"])
            )
        ],
    )
    async def export() -> dict[str, Any]:
        return {"ok": True}

    with serve(app) as base, httpx.Client(base_url=base) as client:
        statuses = [client.post("/exports", headers=ADA).status_code for _ in range(3)]
        blocked = client.post("/exports", headers=ADA)
    assert statuses == [200, 200, 402]
    assert json.loads(blocked.content)["used"] == 20
    assert used(conn, "cus_ada", "exports") == 20
