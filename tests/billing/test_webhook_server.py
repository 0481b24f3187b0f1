"""The webhook server can't be knocked over: body limit, header and body deadlines, a
connection cap, a bounded database pool, bodies PostgreSQL can't store, timestamps
either way, and its own process beside the email. Real uvicorn over loopback, real
signatures, real PostgreSQL; `skene-pg listen --http` as a subprocess where the
process matters (memory, email during a flood, the port), uvicorn in a thread of the
test otherwise."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from skene_pg.http_process import bind
from skene_pg.http_server import HttpLimits, HttpServer
from skene_pg.webhooks import WebhookSettings, make_app
from tests.billing.conftest import RESEND_SECRET, STRIPE_SECRET, count
from tests.billing.http_helpers import (
    PARTIAL_BODY,
    PARTIAL_HEADERS,
    alive,
    children,
    closed_by_server,
    dumps,
    event,
    free_port,
    many,
    open_fds,
    raw_connect,
    read_response,
    resend_request,
    rss,
    stripe_request,
)
from tests.worker.conftest import (
    add_customers,
    cli_env,
    enqueue_prompts,
    listen_process,
    skene_pg,
    wait_for,
)
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")

MB = 1024 * 1024


def nothing_stored(conn: psycopg.Connection) -> bool:
    return (
        count(conn, "SELECT count(*) FROM skene.billing_events") == 0
        and count(conn, "SELECT count(*) FROM skene.jobs") == 0
        and count(conn, "SELECT count(*) FROM skene.suppressions") == 0
    )


# -- servers ---------------------------------------------------------------------------


@pytest.fixture
def serve(db_url: str) -> Iterator[Callable[..., tuple[str, HttpServer]]]:
    """uvicorn with the webhook app in a thread of this process, on a loopback port."""
    started: list[HttpServer] = []

    def start(limits: HttpLimits | None = None, url: str | None = None) -> tuple[str, HttpServer]:
        limits = limits or HttpLimits()
        settings = WebhookSettings(stripe_secret=STRIPE_SECRET, resend_secret=RESEND_SECRET)
        app = make_app(url or db_url, settings, limits)
        server = HttpServer(app, bind("127.0.0.1", 0), limits).start()
        started.append(server)
        return f"http://127.0.0.1:{server.port}", server

    yield start
    for server in started:
        server.stop()


def ready(base: str) -> bool:
    """The server answers (an unsigned POST is a 400 that stores nothing)."""
    try:
        return httpx.post(f"{base}/webhooks/stripe", content=b"{}", timeout=2).status_code == 400
    except httpx.TransportError:
        return False


@contextmanager
def webhook_process(
    db_url: str, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[Any, int, str]]:
    """`skene-pg listen --http` as a subprocess: (process, webhook server pid, base URL)."""
    port = free_port()
    env = env or cli_env()
    env.setdefault("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    env.setdefault("RESEND_WEBHOOK_SECRET", RESEND_SECRET)
    base = f"http://127.0.0.1:{port}"
    with listen_process(db_url, env, "--http", f"127.0.0.1:{port}", *options) as proc:

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return ready(base)

        wait_for(up, timeout=30, what="the webhook server")
        (child,) = children(proc.pid)
        yield proc, child, base


# -- 1. the body limit -----------------------------------------------------------------


def test_a_10_mb_body_is_a_413_and_the_server_does_not_grow(
    conn: psycopg.Connection, db_url: str
) -> None:
    with webhook_process(db_url) as (proc, child, base):
        server_before, worker_before = rss(child), rss(proc.pid)
        big = dumps({"id": "evt_big", "type": "x", "pad": "x" * (10 * MB)})

        declared = httpx.post(f"{base}/webhooks/stripe", **stripe_request(big), timeout=30)
        assert declared.status_code == 413
        assert declared.json()["error"] == f"the body is {len(big)} bytes; the limit is {MB}"

        def streamed() -> Iterator[bytes]:  # no Content-Length: chunked
            for start in range(0, len(big), 64 * 1024):
                yield big[start : start + 64 * 1024]

        kwargs = stripe_request(big)
        kwargs["content"] = streamed()
        chunked = httpx.post(f"{base}/webhooks/stripe", **kwargs, timeout=30)
        assert chunked.status_code == 413
        assert chunked.json()["error"] == f"the body is larger than the limit of {MB} bytes"

        server_growth, worker_growth = rss(child) - server_before, rss(proc.pid) - worker_before
        print(
            f"RSS growth: webhook server {server_growth / MB:.1f} MB, worker "
            f"{worker_growth / MB:.1f} MB (from {server_before / MB:.0f}, "
            f"{worker_before / MB:.0f} MB)"
        )
        assert server_growth < 50 * MB
        assert worker_growth < 5 * MB
    assert nothing_stored(conn)


def test_413_comes_before_the_body(
    conn: psycopg.Connection, serve: Callable[..., tuple[str, HttpServer]]
) -> None:
    """Announced too big: answered at once, without waiting for (or reading) a byte of
    the body. Streamed too big: answered as soon as it passes the limit, while the
    client still has the rest to send."""
    base, _server = serve()
    port = int(base.rsplit(":", 1)[1])
    with many([]) as socks:
        announced = raw_connect(
            port,
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 314572800\r\n\r\n",
        )
        socks.append(announced)
        status, answer = read_response(announced, timeout=2)
        assert status == 413, answer

        streaming = raw_connect(
            port, b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        socks.append(streaming)
        chunk = b"x" * 65536
        for _ in range(17):  # 1.06 MB, and the client would go on
            streaming.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, answer = read_response(streaming, timeout=2)
        assert status == 413, answer
        assert b"larger than the limit" in answer
    assert nothing_stored(conn)


def test_headers_over_16_kib_are_a_400(serve: Callable[..., tuple[str, HttpServer]]) -> None:
    base, _server = serve()
    port = int(base.rsplit(":", 1)[1])
    big = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    with raw_connect(port, big) as sock:
        status, answer = read_response(sock, timeout=5)
    assert status == 400, answer


# -- 2. slow clients and the connection cap --------------------------------------------


def trickle(port: int, first: bytes, byte: bytes, closed: dict[str, float], name: str) -> None:
    """A slowloris: `first`, then one byte every 0.1 s until the server closes the
    connection (its time is recorded) or 15 s pass."""
    start = time.monotonic()
    with raw_connect(port, first) as sock:
        while time.monotonic() - start < 15:
            try:
                sock.sendall(byte)
            except OSError:
                break
            if closed_by_server(sock):
                break
            time.sleep(0.1)
        else:
            return
    closed[name] = time.monotonic() - start


def test_500_slow_clients_dont_delay_a_valid_webhook_and_are_cut_off(
    conn: psycopg.Connection, db_url: str
) -> None:
    timeouts = ("--http-header-timeout", "3", "--http-body-timeout", "3")
    with webhook_process(db_url, *timeouts) as (_proc, child, base):
        port = int(base.rsplit(":", 1)[1])
        fds_before = open_fds(child)
        closed: dict[str, float] = {}
        tricklers = [
            threading.Thread(
                target=trickle, args=(port, b"POST / HTTP/1.1\r\nX: ", b"a", closed, "headers")
            ),
            threading.Thread(target=trickle, args=(port, PARTIAL_BODY, b" ", closed, "body")),
        ]
        for thread in tricklers:
            thread.start()
        slow = [raw_connect(port, PARTIAL_HEADERS if i % 2 else PARTIAL_BODY) for i in range(500)]
        with many(slow):
            wait_for(lambda: open_fds(child) >= fds_before + 500, timeout=5, what="500 connections")

            body = dumps(event("fast"))
            started = time.monotonic()
            response = httpx.post(f"{base}/webhooks/stripe", **stripe_request(body), timeout=5)
            took = time.monotonic() - started
            print(f"a valid webhook beside 500 slow clients: {took * 1000:.0f} ms")
            assert response.status_code == 200
            assert took < 1.0

            # the deadlines cut every slow client off, byte-by-byte ones included
            wait_for(
                lambda: all(closed_by_server(s) for s in slow), timeout=6, what="slow clients cut"
            )
            for thread in tricklers:
                thread.join(timeout=20)
            assert set(closed) == {"headers", "body"}, closed
            assert closed["headers"] < 3 + 1.5 and closed["body"] < 3 + 1.5, closed
            wait_for(lambda: open_fds(child) <= fds_before + 2, timeout=5, what="fds released")
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 1


def test_past_the_connection_cap_the_longest_idle_goes_and_a_webhook_gets_in(
    conn: psycopg.Connection, db_url: str
) -> None:
    options = ("--http-max-connections", "50", "--http-header-timeout", "60")
    with webhook_process(db_url, *options) as (_proc, child, base):
        port = int(base.rsplit(":", 1)[1])
        fds_before = open_fds(child)
        most = 0
        with many([]) as idle:
            for i in range(150):
                idle.append(raw_connect(port, PARTIAL_HEADERS if i % 2 else b""))
                most = max(most, open_fds(child) - fds_before)
            wait_for(
                lambda: sum(closed_by_server(s) for s in idle) == 100, timeout=5, what="evictions"
            )
            assert not any(closed_by_server(s) for s in idle[-50:])  # the newest stay
            wait_for(lambda: open_fds(child) - fds_before <= 50, timeout=5, what="50 sockets")
            body = dumps(event("in"))
            started = time.monotonic()
            response = httpx.post(f"{base}/webhooks/stripe", **stripe_request(body), timeout=5)
            took = time.monotonic() - started
            assert response.status_code == 200
            assert took < 1.0
        # What the kernel had queued is accepted at once (at most the listen backlog in
        # one turn of the event loop), then the excess is closed: a peak, not a level.
        print(
            f"150 idle connections on a cap of 50: {most} sockets at the peak, 50 after; "
            f"a webhook answered in {took * 1000:.0f} ms"
        )


def test_with_every_connection_busy_a_new_one_is_refused_with_503(
    conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    serve: Callable[..., tuple[str, HttpServer]],
) -> None:
    """Busy connections (answering) are never closed to make room: the newcomer gets a
    503 with Retry-After, and the busy ones all get their answer."""
    base, server = serve(HttpLimits(max_connections=8, pool_size=1, pool_timeout=10))
    port = int(base.rsplit(":", 1)[1])
    locker = connect(autocommit=False)
    locker.execute("LOCK TABLE skene.billing_events IN ACCESS EXCLUSIVE MODE")
    answers: list[int] = []

    def post(n: int) -> None:
        body = dumps(event(f"busy_{n}"))
        answers.append(
            httpx.post(f"{base}/webhooks/stripe", **stripe_request(body), timeout=20).status_code
        )

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        wait_for(lambda: count(conn, waiting) == 1, timeout=10, what="a request in the database")
        connections = server.server.server_state.connections
        wait_for(
            lambda: [getattr(c, "phase", None) for c in list(connections)] == ["busy"] * 8,
            timeout=10,
            what="8 connections answering",
        )
        with raw_connect(port, PARTIAL_HEADERS) as newcomer:
            status, answer = read_response(newcomer, timeout=5)
        assert status == 503, answer
        assert b"retry-after: 1" in answer.lower()
    finally:
        locker.commit()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [200] * 8
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 8


# -- 3. the database pool --------------------------------------------------------------


@contextmanager
def limited_role(
    conn: psycopg.Connection, db_url: str, limit: int = 10
) -> Iterator[tuple[str, str]]:
    """A login role with skene_worker's rights and `limit` connections: (name, URL)."""
    role = f"hooks_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {} IN ROLE skene_worker").format(
            sql.Identifier(role), sql.Literal(limit)
        )
    )
    try:
        yield role, make_conninfo(db_url, user=role)
    finally:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


class SessionWatcher:
    """The most sessions a role had at once, polled from pg_stat_activity."""

    def __init__(self, db_url: str, role: str):
        self.most = 0
        self._stop = threading.Event()
        self._conn = psycopg.connect(db_url, autocommit=True)
        self._role = role
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SessionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._conn.close()

    def _run(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
        while not self._stop.is_set():
            row = self._conn.execute(query, (self._role,)).fetchone()
            self.most = max(self.most, int(row[0]) if row else 0)
            self._stop.wait(0.005)


async def post_all(base: str, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post("/webhooks/stripe", **r) for r in requests))


@pytest.mark.parametrize(
    ("pool_size", "pool_timeout"), [(4, 2.0), (1, 0.1)], ids=["defaults", "one-session"]
)
def test_200_concurrent_webhooks_on_a_role_limited_to_10_connections(
    conn: psycopg.Connection, db_url: str, pool_size: int, pool_timeout: float
) -> None:
    """Every request is a 200 or a 503 with Retry-After, never a 500; the server never
    has more sessions than its pool; the refused events, sent again, are stored once."""
    with limited_role(conn, db_url, limit=10) as (role, role_url):
        options = (
            "--http-database-url",
            role_url,
            "--http-pool-size",
            str(pool_size),
            "--http-pool-timeout",
            str(pool_timeout),
        )
        with (
            webhook_process(db_url, *options) as (_proc, _child, base),
            SessionWatcher(db_url, role) as sessions,
        ):
            bodies = [dumps(event(i)) for i in range(100)] * 2  # each event twice
            responses = asyncio.run(post_all(base, [stripe_request(b) for b in bodies]))
            outcomes = Counter(r.status_code for r in responses)
            print(
                f"200 concurrent webhooks, pool {pool_size}: {dict(outcomes)}, "
                f"most sessions {sessions.most}"
            )
            assert set(outcomes) <= {200, 503}, outcomes
            assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
            accepted = {r.request.content for r in responses if r.status_code == 200}

            # the refused ones, sent again as Stripe would, until all are in
            pending = [b for b in set(bodies) if b not in accepted]
            for _ in range(20):
                if not pending:
                    break
                again = asyncio.run(post_all(base, [stripe_request(b) for b in pending]))
                assert {r.status_code for r in again} <= {200, 503}
                pending = [b for b, r in zip(pending, again, strict=True) if r.status_code != 200]
            assert not pending
            most = sessions.most
        assert most <= pool_size
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 100
    assert count(conn, "SELECT count(DISTINCT event_id) FROM skene.billing_events") == 100
    assert count(conn, "SELECT count(*) FROM skene.jobs WHERE kind = 'stripe_sync'") == 100


def test_a_role_at_its_connection_limit_gets_503_with_retry_after_then_recovers(
    conn: psycopg.Connection,
    db_url: str,
    serve: Callable[..., tuple[str, HttpServer]],
) -> None:
    with limited_role(conn, db_url, limit=3) as (_role, role_url):
        hogs = [psycopg.connect(role_url) for _ in range(3)]  # the role's every session
        try:
            base, _server = serve(HttpLimits(pool_timeout=0.5), url=role_url)
            body = dumps(event("busy"))
            started = time.monotonic()
            response = httpx.post(f"{base}/webhooks/stripe", **stripe_request(body), timeout=10)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert "retry" in response.json()["error"]
            assert time.monotonic() - started < 2.0
            assert count(conn, "SELECT count(*) FROM skene.billing_events") == 0
        finally:
            for hog in hogs:
                hog.close()

        def delivered() -> bool:  # as a sender retrying after Retry-After would
            r = httpx.post(f"{base}/webhooks/stripe", **stripe_request(body), timeout=10)
            assert r.status_code in (200, 503), r.text
            return r.status_code == 200

        wait_for(delivered, timeout=20, what="the pool to reconnect", interval=0.5)
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 1


# -- 4. the email during a flood -------------------------------------------------------


class Flood:
    """Webhooks as fast as 32 connections can send them (signed ones, oversized ones,
    unsigned ones), in a thread, until stopped, 30 s, or 20,000 requests."""

    def __init__(self, base: str):
        self.base = base
        self.outcomes: Counter[int | str] = Counter()
        self.running = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Flood:
        self.running = True
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=40)
        assert not self._thread.is_alive()

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    async def _run(self) -> None:
        deadline = time.monotonic() + 30
        big = b"x" * (2 * MB)
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=self.base, limits=limits, timeout=30) as client:

            async def one(n: int) -> None:
                kind = n % 10
                if kind == 0:
                    request = {"content": big}
                elif kind == 1:
                    request = {
                        "content": b'{"id": "evt_x"}',
                        "headers": {"Stripe-Signature": "t=1,v1=0"},
                    }
                else:
                    request = stripe_request(dumps(event(f"flood_{n}")))
                try:
                    response = await client.post("/webhooks/stripe", **request)
                    self.outcomes[response.status_code] += 1
                except httpx.TransportError as exc:
                    self.outcomes[type(exc).__name__] += 1

            async def sender(first: int) -> None:
                n = first
                while not self._stop.is_set() and time.monotonic() < deadline and n < 20_000:
                    await one(n)
                    n += 32

            await asyncio.gather(*(sender(i) for i in range(32)))
        self.running = False


def test_emails_keep_flowing_during_a_webhook_flood(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 40)
    env = cli_env(fake_resend)
    with webhook_process(db_url, "--poll-interval", "0.5", env=env) as (proc, child, base):
        flood = Flood(base).start()
        try:
            wait_for(lambda: flood.sent >= 200, timeout=20, what="the flood to get going")
            print(f"flood: 200 requests in {time.monotonic() - flood.started:.2f} s")
            started = time.monotonic()
            enqueue_prompts(conn, customers)
            wait_for(lambda: len(fake_resend.deliveries) == 40, timeout=20, what="40 emails")
            took = time.monotonic() - started
            assert flood.running, "the flood ended before the emails were sent"
            during = flood.sent
        finally:
            flood.stop()
        print(
            f"40 emails sent in {took:.2f} s during a flood ({during} requests by then, "
            f"{dict(flood.outcomes)} in all)"
        )
        assert proc.poll() is None and alive(child)
        assert set(flood.outcomes) <= {200, 400, 413, 503}, flood.outcomes
        assert flood.outcomes[413] > 0 and flood.outcomes[200] > 0
    assert (
        count(conn, "SELECT count(*) FROM skene.jobs WHERE kind = 'email' AND state = 'succeeded'")
        == 40
    )


# -- 5. bodies PostgreSQL can't store, and timestamps ----------------------------------

BAD_BODIES = [
    pytest.param(
        b'{"id": "evt_n", "type": "t", "data": {"name": "a\\u0000b"}}', "\\u0000", id="escaped-nul"
    ),
    pytest.param(
        b'{"id": "evt_n", "type": "t", "data": {"a\\u0000": 1}}', "\\u0000", id="nul-in-key"
    ),
    pytest.param(b'{"id": "evt_n", "type": "t\x00"}', "NUL byte", id="raw-nul"),
    pytest.param(b'{"id": "evt_n", "type": "t", "n": NaN}', "NaN is not a JSON number", id="nan"),
    pytest.param(b'{"id": "evt_n", "type": "t", "n": 1e999}', "out of range", id="infinite"),
    pytest.param(
        b'{"id": "evt_n", "type": "t", "s": "\\ud800"}', "unpaired surrogate", id="surrogate"
    ),
    pytest.param(
        b'{"id": "evt_n", "type": "t", "d": ' + b"[" * 100 + b"]" * 100 + b"}",
        "nested deeper",
        id="deep",
    ),
    pytest.param(b'{"id": "evt_n", "type": ', "not JSON: Expecting value", id="truncated"),
    pytest.param(b'{"id": "evt_n", "type": "\xff"}', "not UTF-8", id="not-utf8"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_BODIES)
def test_a_signed_body_postgresql_cant_store_is_a_400_naming_it(
    conn: psycopg.Connection,
    serve: Callable[..., tuple[str, HttpServer]],
    body: bytes,
    problem: str,
) -> None:
    base, _ = serve()
    response = httpx.post(f"{base}/webhooks/stripe", **stripe_request(body))
    assert response.status_code == 400
    assert problem in response.json()["error"]
    if problem != "not UTF-8":  # Svix signs text
        bounce = body.replace(
            b'"id": "evt_n", "type": "t"',
            b'"type": "email.bounced", "data": {"to": ["a@x.test"]}, "x": "y"',
        )
        response = httpx.post(f"{base}/webhooks/resend", **resend_request(bounce))
        assert response.status_code == 400
        assert problem in response.json()["error"]
    assert nothing_stored(conn)


def test_a_nul_in_a_resend_address_is_a_400_and_suppresses_nothing(
    conn: psycopg.Connection, serve: Callable[..., tuple[str, HttpServer]]
) -> None:
    base, _ = serve()
    body = b'{"type": "email.bounced", "data": {"to": ["ada\\u0000@example.test"]}}'
    response = httpx.post(f"{base}/webhooks/resend", **resend_request(body))
    assert response.status_code == 400
    assert "\\u0000" in response.json()["error"]
    assert nothing_stored(conn)


# +330, not +301: a future timestamp gets closer to the tolerance while the request
# travels, and a slow machine must not turn it into an accepted one.
@pytest.mark.parametrize("offset", [86_400, 330, -301, -86_400])
def test_a_timestamp_beyond_the_tolerance_either_way_is_a_400(
    conn: psycopg.Connection, serve: Callable[..., tuple[str, HttpServer]], offset: int
) -> None:
    base, _ = serve()
    at = int(time.time()) + offset
    way = "in the future" if offset > 0 else "old"
    stripe = httpx.post(f"{base}/webhooks/stripe", **stripe_request(dumps(event(1)), at=at))
    assert stripe.status_code == 400
    assert way in stripe.json()["error"] and "tolerance is 300 s" in stripe.json()["error"]
    bounce = dumps({"type": "email.bounced", "data": {"to": ["ada@example.test"]}})
    resend = httpx.post(f"{base}/webhooks/resend", **resend_request(bounce, at=at))
    assert resend.status_code == 400
    assert way in resend.json()["error"]
    assert nothing_stored(conn)


def test_a_timestamp_within_the_tolerance_either_way_is_accepted(
    conn: psycopg.Connection, serve: Callable[..., tuple[str, HttpServer]]
) -> None:
    base, _ = serve()
    for n, offset in enumerate((250, -250)):
        at = int(time.time()) + offset
        assert (
            httpx.post(
                f"{base}/webhooks/stripe", **stripe_request(dumps(event(n)), at=at)
            ).status_code
            == 200
        )
        bounce = dumps({"type": "email.bounced", "data": {"to": [f"a{n}@example.test"]}})
        assert (
            httpx.post(f"{base}/webhooks/resend", **resend_request(bounce, at=at)).status_code
            == 200
        )
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 2
    assert count(conn, "SELECT count(*) FROM skene.suppressions") == 2


def test_malformed_svix_headers_are_a_400(
    conn: psycopg.Connection, serve: Callable[..., tuple[str, HttpServer]]
) -> None:
    base, _ = serve()
    stamp = str(int(time.time()))
    for signature in ("garbage", "v1,not base64!", ""):
        headers = {"svix-id": "msg_1", "svix-timestamp": stamp, "svix-signature": signature}
        response = httpx.post(f"{base}/webhooks/resend", content=b"{}", headers=headers)
        assert response.status_code == 400, (signature, response.text)
    assert nothing_stored(conn)


# -- 6. the process --------------------------------------------------------------------


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
        result = skene_pg(
            "listen", "--database-url", db_url, "--http", f"127.0.0.1:{port}", env=env, timeout=60
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} is already in use" in lines[0]
    assert "choose another port" in lines[0]


def test_the_server_process_is_restarted_and_ends_with_the_worker(
    conn: psycopg.Connection, db_url: str
) -> None:
    with webhook_process(db_url) as (proc, child, base):
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: children(proc.pid) not in ([], [child]), timeout=15, what="a new server")
        (second,) = children(proc.pid)
        wait_for(lambda: ready(base), timeout=20, what="the new server to answer")
        body = dumps(event("after"))
        assert httpx.post(f"{base}/webhooks/stripe", **stripe_request(body)).status_code == 200
        proc.send_signal(signal.SIGKILL)  # the worker dies without a word ...
        proc.wait(timeout=10)
        wait_for(
            lambda: not alive(second), timeout=20, what="the server to follow"
        )  # ... and so does the server
    assert count(conn, "SELECT count(*) FROM skene.billing_events") == 1


def test_listen_help_shows_the_limits_with_their_defaults_and_variables() -> None:
    result = skene_pg("listen", "--help", env=cli_env())
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, variable in (
        ("--http-max-body", "SKENE_HTTP_MAX_BODY"),
        ("--http-header-timeout", "SKENE_HTTP_HEADER_TIMEOUT"),
        ("--http-body-timeout", "SKENE_HTTP_BODY_TIMEOUT"),
        ("--http-max-connections", "SKENE_HTTP_MAX_CONNECTIONS"),
        ("--http-pool-size", "SKENE_HTTP_POOL_SIZE"),
        ("--http-pool-timeout", "SKENE_HTTP_POOL_TIMEOUT"),
        ("--http-database-url", "SKENE_HTTP_DATABASE_URL"),
    ):
        assert option in text and variable in text, option
    assert "default: 1M" in text and "default: 512" in text
