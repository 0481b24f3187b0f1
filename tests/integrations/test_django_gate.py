"""skene_pg.django with the real Django: its test client through the whole middleware
stack (sessions, CSRF, auth, GateMiddleware) against a real database."""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from skene_pg import Decision, http_problem
from skene_pg.gates import Gate
from tests.integrations.conftest import prompts, used

MESSAGE = "You've used all 100 free API calls this month. Upgrade to continue."


def signed_in(make_user: Callable[..., Any], username: str = "ada", **client_kwargs: Any) -> Any:
    from django.test import Client

    user = make_user(username)
    client = Client(**client_kwargs)
    client.force_login(user)
    return client, str(user.pk)


def settings_with(**changes: Any) -> Any:
    from django.conf import settings
    from django.test import override_settings

    return override_settings(SKENE={**settings.SKENE, **changes})


def test_exactly_100_allowed_and_20_blocked(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user)
    statuses = [client.post("/api/calls").status_code for _ in range(120)]
    assert statuses == [200] * 100 + [402] * 20
    assert used(dbconn, customer, "api_calls") == 100
    assert prompts(dbconn, customer) == [("free_tier_limit", "api_calls")]  # one prompt
    audited = dbconn.execute("SELECT count(*) FROM app_audit WHERE what = 'api_call'").fetchone()
    assert audited == (100,)  # blocked requests never reached the view


def test_exactly_100_allowed_with_50_concurrent_clients(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    from django.test import Client

    user = make_user("ada")
    clients = []
    for _ in range(50):
        client = Client()
        client.force_login(user)
        clients.append(client)

    def post(i: int) -> int:
        return int(clients[i % 50].post("/api/calls").status_code)

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = Counter(pool.map(post, range(120)))
    assert statuses == {200: 100, 402: 20}
    assert used(dbconn, str(user.pk), "api_calls") == 100
    assert len(prompts(dbconn, str(user.pk))) == 1


def test_the_402_is_a_problem_with_the_message_from_skene_toml(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, _ = signed_in(make_user)
    for _ in range(100):
        allowed = client.post("/api/calls")
    assert allowed["RateLimit-Limit"] == "100"
    assert allowed["RateLimit-Remaining"] == "0"
    blocked = client.post("/api/calls")
    before = datetime.now(UTC)
    assert blocked.status_code == 402
    assert blocked["Content-Type"] == "application/problem+json"
    body = json.loads(blocked.content)
    resets_at = datetime.fromisoformat(body["resets_at"].replace("Z", "+00:00"))
    decision = Decision(False, "limit_reached", "api_calls", "free", 100, 100, 0, resets_at)
    gate = Gate("api_calls", "API calls", (), MESSAGE, "https://app.example.com/billing")
    expected = http_problem.blocked(decision, gate, before)
    assert body == expected.body
    assert body["title"] == MESSAGE
    assert body["upgrade_url"] == "https://app.example.com/billing"
    assert resets_at == datetime(
        before.year + before.month // 12, before.month % 12 + 1, 1, tzinfo=UTC
    )
    for name in ("RateLimit-Limit", "RateLimit-Remaining"):
        assert blocked[name] == expected.headers[name]
    reset = int(blocked["RateLimit-Reset"])
    assert (
        int(expected.headers["RateLimit-Reset"]) - 2
        <= reset
        <= int(expected.headers["RateLimit-Reset"])
    )
    assert blocked["Retry-After"] == blocked["RateLimit-Reset"]


def test_not_in_plan_is_a_402_without_a_reset(
    make_user: Callable[..., Any], django_db: str
) -> None:
    client, _ = signed_in(make_user)
    response = client.get("/beta/anything")
    assert response.status_code == 402
    body = json.loads(response.content)
    assert (body["reason"], body["limit"], body["title"]) == (
        "not_in_plan",
        0,
        "Not included in your plan",
    )
    assert "Retry-After" not in response and "RateLimit-Reset" not in response


def test_unmatched_requests_are_not_gated(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user)
    response = client.get("/pages/home")
    assert response.status_code == 200 and "RateLimit-Limit" not in response
    assert client.get("/api/calls").status_code == 200  # GET: the pattern is POST only
    assert used(dbconn, customer, "api_calls") == 0


def test_a_csrf_rejected_request_is_not_counted(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user, enforce_csrf_checks=True)
    assert client.post("/api/calls").status_code == 403
    assert used(dbconn, customer, "api_calls") == 0
    token = "abcdefghijklmnopqrstuvwxyzABCDEF"  # a CSRF secret, as the cookie holds it
    client.cookies["csrftoken"] = token
    assert client.post("/api/calls", HTTP_X_CSRFTOKEN=token).status_code == 200
    assert used(dbconn, customer, "api_calls") == 1


def test_anonymous_requests_pass_uncounted_or_get_401(
    django_db: str, dbconn: psycopg.Connection
) -> None:
    from django.test import Client

    response = Client().post("/api/calls")
    assert response.status_code == 200
    assert dbconn.execute("SELECT count(*) FROM skene.usage").fetchone() == (0,)
    with settings_with(ANONYMOUS="401"):
        refused = Client().post("/api/calls")
    assert refused.status_code == 401
    assert refused["Content-Type"] == "application/problem+json"
    assert json.loads(refused.content)["feature"] == "api_calls"
    assert dbconn.execute("SELECT count(*) FROM skene.customers").fetchone() == (0,)


def test_a_view_that_raises_gives_the_count_back(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user)
    client.raise_request_exception = False
    assert client.post("/api/calls").status_code == 200
    assert client.post("/api/boom").status_code == 500  # counted, then refunded
    assert client.post("/api/fail").status_code == 502  # a 5xx answer: refunded too
    assert used(dbconn, customer, "api_calls") == 1
    with settings_with(REFUND_ON_ERROR=False):
        assert client.post("/api/boom").status_code == 500
    assert used(dbconn, customer, "api_calls") == 2  # not opted in: the count stays


def test_the_decorator_gates_counts_amounts_and_refunds(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user)
    client.raise_request_exception = False
    assert client.get("/exports?n=5").status_code == 200
    assert client.get("/exports?n=5&fail=1").status_code == 500
    assert used(dbconn, customer, "exports") == 5
    response = client.get("/exports?n=15")
    assert (response.status_code, response["RateLimit-Remaining"]) == (200, "0")
    blocked = client.get("/exports")
    assert blocked.status_code == 402
    assert json.loads(blocked.content)["title"] == "Free plans include 20 exports a month."


def test_middleware_and_decorator_on_one_view_count_once(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user)
    assert client.post("/api/gated-twice").status_code == 200
    assert used(dbconn, customer, "api_calls") == 1


def test_the_decorator_on_a_drf_view_sees_drfs_user(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    from django.test import Client

    user = make_user("grace")
    client = Client()
    for _ in range(20):
        ok = client.post("/drf/exports", HTTP_X_USER="grace")
        assert ok.status_code == 200, ok.content
    assert ok.json() == {"exported": True, "user": "grace"}
    blocked = client.post("/drf/exports", HTTP_X_USER="grace")
    assert blocked.status_code == 402
    assert used(dbconn, str(user.pk), "exports") == 20  # type: ignore[attr-defined]
    assert client.post("/drf/exports").status_code == 200  # anonymous: passes by default


def test_after_a_block_the_prompt_survives_the_requests_rollback(
    make_user: Callable[..., Any], dbconn: psycopg.Connection
) -> None:
    client, customer = signed_in(make_user)
    client.raise_request_exception = False
    assert [client.get("/reports").status_code for _ in range(4)] == [200, 200, 200, 500]
    # ATOMIC_REQUESTS rolled the blocked request's own write back ...
    assert dbconn.execute("SELECT count(*) FROM app_audit WHERE what = 'report'").fetchone() == (3,)
    # ... but not the gate's: the limit hit and the upgrade prompt were committed apart
    assert prompts(dbconn, customer) == [("reports_limit", "reports")]
    hits = dbconn.execute("SELECT feature, used FROM skene.limit_hits").fetchall()
    assert hits == [("reports", 3)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_down_gives_503_or_fails_open(
    make_user: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = signed_in(make_user)
    down = f"postgresql://postgres@127.0.0.1:{_closed_port()}/gone"
    with settings_with(DATABASE=down, POOL={"timeout": 0.5}):
        with caplog.at_level(logging.ERROR, logger="skene_pg.gate"):
            refused = client.post("/api/calls")
        assert refused.status_code == 503
        assert refused["Content-Type"] == "application/problem+json"
        assert json.loads(refused.content)["status"] == 503
        assert any("answering 503" in r.getMessage() for r in caplog.records)
        assert client.get("/exports").status_code == 503  # the decorator too
    with settings_with(DATABASE=down, POOL={"timeout": 0.5}, ON_ERROR="open"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="skene_pg.gate"):
            through = client.post("/api/calls")
        assert through.status_code == 200
        assert any("letting the request through" in r.getMessage() for r in caplog.records)


def test_the_view_reads_the_decision(make_user: Callable[..., Any], django_db: str) -> None:
    client, _ = signed_in(make_user)
    assert client.post("/api/calls").json() == {"ok": True, "remaining": [99]}


def test_system_check_warns_about_middleware_order(django_db: str) -> None:
    from django.core.checks import run_checks
    from django.test import override_settings

    def ids() -> set[str]:
        return {m.id for m in run_checks() if m.id and m.id.startswith("skene_pg")}

    assert ids() == set()
    early = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "skene_pg.django.GateMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    with override_settings(MIDDLEWARE=early):
        assert ids() == {"skene_pg.W001", "skene_pg.W002"}
    between = [early[0], early[2], early[1], early[3]]
    with override_settings(MIDDLEWARE=between):
        assert ids() == {"skene_pg.W001"}
    with settings_with(ANONYMOUS="deny"):
        assert ids() == {"skene_pg.E001"}
