"""examples/nextjs_freemium as its README runs it: `npm ci`, `next build`, `next start`
on a loopback port, against a fresh migrated database with the example's skene.toml;
then driven over HTTP. 100 calls pass, the 101st gets the 402 problem byte for byte as
the Python builder makes it; the middleware gates a route with no code of its own."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from psycopg import sql

from skene_pg import Skene, db, http_problem, migrations
from skene_pg.devdb import DevCluster
from skene_pg.gates import Gate
from tests.integrations.conftest import apply_toml
from tests.node.conftest import ROOT, libpq_to_url, node_tools, npm_ci

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "nextjs_freemium"
NEXT = EXAMPLE / "node_modules" / "next" / "dist" / "bin" / "next"
USER = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"  # a Clerk user id


@pytest.fixture
def example_db(pg_cluster: DevCluster, tmp_path: Path) -> Iterator[str]:
    name = f"skene_nextjs_{uuid.uuid4().hex[:12]}"
    with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_cluster.url(name)
    try:
        migrations.upgrade(url)
        apply_toml(url, tmp_path, (EXAMPLE / "skene.toml").read_text())
        yield url
    finally:
        with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def node_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "NEXT_TELEMETRY_DISABLED": "1", **extra}


@contextmanager
def next_start(node: str, database_url: str) -> Iterator[str]:
    """`next start` on a free loopback port (Next picks it: -p 0); yields its base URL
    once it says it is ready."""
    process = subprocess.Popen(
        [node, str(NEXT), "start", "-H", "127.0.0.1", "-p", "0"],
        cwd=EXAMPLE,
        env=node_env(DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    base = None
    try:
        deadline = time.monotonic() + 60
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"next start exited:\n{''.join(seen)}"
            seen.append(line)
            found = re.search(r"Local:\s+(http://127\.0\.0\.1:\d+)", line)
            base = found.group(1) if found else base
            if "Ready" in line:
                break
        assert base, "".join(seen)
        yield base
    finally:
        process.terminate()
        process.wait(30)


def test_nextjs_freemium(example_db: str) -> None:
    node, _ = node_tools()
    npm_ci(EXAMPLE)
    built = subprocess.run(
        [node, str(NEXT), "build"], cwd=EXAMPLE, env=node_env(), capture_output=True, text=True
    )
    assert built.returncode == 0, f"{built.stdout}\n{built.stderr}"
    assert "ƒ Middleware" in built.stdout or (EXAMPLE / ".next/server/middleware.js").exists()

    with (
        Skene(example_db) as skene,
        next_start(node, libpq_to_url(example_db)) as base,
        httpx.Client(base_url=base) as http,
    ):
        me = {"x-user-id": USER}
        # withGate on app/api/features/[id]/route.ts: 100 free calls
        for i in range(1, 101):
            ok = http.post(f"/api/features/f_{i}", headers=me)
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"feature": f"f_{i}", "status": "done"}
            assert ok.headers["ratelimit-limit"] == "100"
            assert ok.headers["ratelimit-remaining"] == str(100 - i)
        blocked = http.post("/api/features/f_101", headers=me)
        now = datetime.now(UTC)
        assert blocked.status_code == 402
        expected = http_problem.blocked(
            skene.check(USER, "api_calls"), gate_of(skene, "api_calls"), now
        )
        assert blocked.content == expected.content()  # the Python integrations' bytes
        assert blocked.json()["title"] == (
            "You've used your 100 free API calls this month. Upgrade to Pro for unlimited calls."
        )
        assert_headers(blocked.headers, expected.headers)

        # middleware.ts, by the `match` of exports in skene.toml: no code in the route
        for i in range(1, 6):
            ok = http.post("/api/exports", headers=me)
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"export": "queued", "by": USER}
            assert ok.headers["ratelimit-remaining"] == str(5 - i)
        blocked = http.post("/api/exports", headers=me)
        expected = http_problem.blocked(
            skene.check(USER, "exports"), gate_of(skene, "exports"), datetime.now(UTC)
        )
        assert blocked.status_code == 402
        assert blocked.content == expected.content()
        assert_headers(blocked.headers, expected.headers)
        assert http.get("/api/exports", headers=me).status_code == 405  # GET: not gated

        # one upgrade prompt per loop, queued by the first block
        with db.connect(example_db) as conn:
            loops = conn.execute(
                "SELECT loop_name FROM skene.jobs WHERE customer_id = %s ORDER BY loop_name",
                (USER,),
            ).fetchall()
        assert loops == [("exports_limit",), ("free_tier_limit",)]

        # the upgrade link: to Stripe, saying who pays
        upgrade = http.get("/billing", headers=me)
        assert upgrade.status_code == 303
        assert upgrade.headers["location"] == (
            f"https://buy.stripe.com/test_example?client_reference_id={USER}"
        )
        # what Stripe's webhook does through `skene-pg listen --http`: the user is on pro
        with db.connect(example_db) as conn:
            conn.execute("SELECT skene.set_plan(%s, 'pro', 'stripe')", (USER,))
            conn.commit()
        pro = http.post("/api/features/f_102", headers=me)
        assert pro.status_code == 200 and "ratelimit-limit" not in pro.headers  # unlimited
        # signed out: not gated (anonymous = pass)
        assert http.post("/api/features/f_1").status_code == 200


def gate_of(skene: Skene, feature: str) -> Gate:
    return next(gate for gate in skene.gates() if gate.feature == feature)


def assert_headers(got: httpx.Headers, expected: dict[str, str]) -> None:
    """The same headers; the seconds to the reset may differ by the time between."""
    resets = {"RateLimit-Reset", "Retry-After"}
    for name, value in expected.items():
        if name in resets:
            assert abs(int(got[name]) - int(value)) <= 5, (name, got[name], value)
        else:
            assert got[name] == value, name
    assert got["RateLimit-Reset"] == got["Retry-After"]


def test_example_is_small() -> None:
    """The route is gated in at most 5 lines; the README starts it in 3 commands."""
    route = (EXAMPLE / "app" / "api" / "features" / "[id]" / "route.ts").read_text()
    assert len(route.strip().splitlines()) <= 5
    readme = (EXAMPLE / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 3
