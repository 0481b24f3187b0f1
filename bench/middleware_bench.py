"""Middleware benchmark: what skene_pg.django.GateMiddleware and skene_pg.fastapi.SkeneGate
add to a request, as a ratio over the same app without them, measured in the same run.

- Django, in process through its WSGI handler (the test client: no network), a view
  answering JSON at once, and a view that makes one query of its own (the shape of a
  real view); gated ÷ ungated time per request, and the gate's absolute cost in µs.
- FastAPI, served by uvicorn on loopback and driven with httpx (keep-alive): 1 client
  in sequence, and 16 concurrent clients (requests/s).

Rounds alternate gated and ungated so drift hits both; the figure is the median of
the rounds. Customers are picked from 1,000 at random, on a feature with a limit no
one reaches (every request is counted; none is blocked). It starts its own durable
cluster (fsync on) in a fresh folder under /tmp.

    python -m bench.middleware_bench            # about 3 minutes on 2 cores
    python -m bench.middleware_bench --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from psycopg.conninfo import conninfo_to_dict

from skene_pg import db, migrations
from skene_pg.config import apply_config, load_config
from skene_pg.devdb import DevCluster

DBNAME = "skene_middleware_bench"
CUSTOMERS = 1_000
SKENE_TOML = """\
default_plan = "free"
[plans.free]
[features.api_calls]
period = "month"
limits = { free = 1000000000 }
match = [{ path = "/api/**" }]
"""


def customer_header() -> str:
    return f"cus_{random.randrange(CUSTOMERS)}"


def median_ratio(gated: list[float], plain: list[float]) -> tuple[float, float, float]:
    """(median gated, median plain, their ratio)."""
    g, p = statistics.median(gated), statistics.median(plain)
    return g, p, g / p


# -- Django ---------------------------------------------------------------------------


def django_setup(url: str) -> None:
    import django
    from django.conf import settings

    params = conninfo_to_dict(url)
    settings.configure(
        SECRET_KEY="bench",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "skene_pg.django"],
        MIDDLEWARE=[],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": params["dbname"],
                "USER": params.get("user", ""),
                "HOST": params.get("host", ""),
                "PORT": params.get("port", ""),
                "CONN_MAX_AGE": None,
            }
        },
        SKENE={
            "CUSTOMER": lambda request: request.headers.get("X-Customer"),
            "SYNC_USERS": False,
        },
    )
    django.setup()
    global urlpatterns
    urlpatterns = _views()


def _views() -> list[Any]:
    from django.db import connection
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def hello(request: HttpRequest) -> HttpResponse:
        return JsonResponse({"ok": True})

    @csrf_exempt
    def query(request: HttpRequest) -> HttpResponse:
        with connection.cursor() as cursor:  # the view's own work: one query
            cursor.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relkind = 'r'")
            (tables,) = cursor.fetchone()
        return JsonResponse({"tables": tables})

    return [path("api/hello", hello), path("api/query", query)]


urlpatterns: list[Any] = []


def django_client(gated: bool) -> Any:
    """A test client whose handler loaded the middleware as it is now."""
    from django.test import Client, override_settings

    middleware = ["skene_pg.django.GateMiddleware"] if gated else []
    client = Client()
    with override_settings(MIDDLEWARE=middleware):
        client.get("/api/hello", HTTP_X_CUSTOMER="cus_warmup")  # loads the chain
    return client


def django_round(client: Any, path: str, requests: int) -> float:
    """Seconds per request."""
    started = time.perf_counter()
    for _ in range(requests):
        response = client.get(path, HTTP_X_CUSTOMER=customer_header())
        assert response.status_code == 200, response.status_code
    return (time.perf_counter() - started) / requests


def django_reconnect() -> None:
    """New connections for Django and the gate's pool (they read database settings)."""
    from django.db import connections

    from skene_pg.django import conf

    connections.close_all()
    conf.reset()


def bench_django(rounds: int, requests: int) -> list[tuple[str, float, float, float]]:
    gated, plain = django_client(True), django_client(False)
    for client in (gated, plain):  # warm every customer's counter past its slow path
        for i in range(CUSTOMERS):
            client.get("/api/hello", HTTP_X_CUSTOMER=f"cus_{i}")
    rows = []
    for path in ("/api/hello", "/api/query"):
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for on, client in ((True, gated), (False, plain)):
                times[on].append(django_round(client, path, requests))
        g, p, ratio = median_ratio(times[True], times[False])
        rows.append((f"Django {path}", g, p, ratio))
    return rows


# -- FastAPI --------------------------------------------------------------------------


def fastapi_app(url: str | None) -> FastAPI:
    from skene_pg.fastapi import SkeneGate

    app = FastAPI()
    if url is not None:
        app.add_middleware(
            SkeneGate, database_url=url, customer=lambda r: r.headers.get("x-customer")
        )

    @app.get("/api/hello")
    async def hello(request: Request) -> dict[str, bool]:
        return {"ok": True}

    return app


async def sequential(client: httpx.AsyncClient, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        response = await client.get("/api/hello", headers={"X-Customer": customer_header()})
        assert response.status_code == 200, response.status_code
    return (time.perf_counter() - started) / requests


async def concurrent(client: httpx.AsyncClient, requests: int, clients: int) -> float:
    """Seconds per request with `clients` in flight (the inverse of requests/s)."""
    per_client = requests // clients

    async def one() -> None:
        for _ in range(per_client):
            response = await client.get("/api/hello", headers={"X-Customer": customer_header()})
            assert response.status_code == 200, response.status_code

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return (time.perf_counter() - started) / (per_client * clients)


def gated_app() -> FastAPI:
    """uvicorn's factory for the gated app (the database from the environment)."""
    return fastapi_app(os.environ["SKENE_BENCH_DATABASE_URL"])


def plain_app() -> FastAPI:
    return fastapi_app(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_process(factory: str, url: str) -> Iterator[str]:
    """uvicorn in a process of its own (client and server must not share a GIL),
    ready once it says so on stderr."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"bench.middleware_bench:{factory}",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env={**os.environ, "SKENE_BENCH_DATABASE_URL": url},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    try:
        for line in server.stderr:
            if "Uvicorn running on" in line:
                break
        else:
            raise RuntimeError(f"uvicorn {factory} did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)


def bench_fastapi(url: str, rounds: int, requests: int) -> list[tuple[str, float, float, float]]:
    rows = []
    with (
        uvicorn_process("gated_app", url) as gated_base,
        uvicorn_process("plain_app", url) as plain_base,
    ):

        async def run() -> None:
            limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
            async with (
                httpx.AsyncClient(base_url=gated_base, limits=limits) as gated,
                httpx.AsyncClient(base_url=plain_base, limits=limits) as plain,
            ):
                for client in (gated, plain):
                    for i in range(CUSTOMERS):
                        await client.get("/api/hello", headers={"X-Customer": f"cus_{i}"})
                measures: list[tuple[str, Callable[[httpx.AsyncClient], Any]]] = [
                    ("FastAPI, 1 client", lambda c: sequential(c, requests)),
                    ("FastAPI, 16 concurrent clients", lambda c: concurrent(c, requests, 16)),
                ]
                for name, measure in measures:
                    times: dict[bool, list[float]] = {True: [], False: []}
                    for _ in range(rounds):
                        times[True].append(await measure(gated))
                        times[False].append(await measure(plain))
                    rows.append((name, *median_ratio(times[True], times[False])))

        asyncio.run(run())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    args = parser.parse_args()
    rounds, requests = (3, 300) if args.quick else (7, 1500)
    directory = Path(tempfile.mkdtemp(prefix="skene-middleware-bench-"))
    directory.chmod(0o755)
    cluster = DevCluster(directory / "cluster")
    cluster.start()
    results: dict[str, list[tuple[str, float, float, float]]] = {}
    try:
        with db.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DBNAME}")
        url = cluster.url(DBNAME)
        migrations.upgrade(url)
        config = directory / "skene.toml"
        config.write_text(SKENE_TOML)
        with db.connect(url, autocommit=True) as conn:
            apply_config(conn, load_config(config))
        django_setup(url)
        for mode in ("durable commits", "synchronous_commit=off"):
            if mode != "durable commits":
                # the gate's own cost without waiting for the WAL flush of its commit
                with db.connect(url, autocommit=True) as conn:
                    conn.execute(f"ALTER DATABASE {DBNAME} SET synchronous_commit = off")
                django_reconnect()
            results[mode] = bench_django(rounds, requests) + bench_fastapi(url, rounds, requests)
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    for mode, rows in results.items():
        print(f"\n{mode}: median of {rounds} rounds of {requests} requests")
        print(f"{'':34} {'gated µs':>10} {'plain µs':>10} {'+µs':>8} {'ratio':>7}")
        for name, gated, plain, ratio in rows:
            extra = (gated - plain) * 1e6
            print(f"{name:34} {gated * 1e6:10.0f} {plain * 1e6:10.0f} {extra:8.0f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
