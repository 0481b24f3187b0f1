"""Worker tests: a small catalogue, customers, the fake Resend, and workers run in a
thread of this process or as `skene-pg listen` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from skene_pg.email.base import EmailProvider
from skene_pg.email.handler import EmailHandler, EmailSettings
from skene_pg.email.resend import ResendProvider
from skene_pg.email.templates import TemplateRenderer
from skene_pg.jobs.worker import Worker, WorkerSettings
from tests.worker.fake_resend import FakeResend

SKENE_PG = str(Path(sys.executable).parent / "skene-pg")
SENDER = "Acme <hello@acme.test>"
APP_URL = "https://app.acme.test"
LIMIT = 3  # api_calls per month on free

# free is the default plan, pro is paid; the freemium loop retries twice (3 attempts).
CATALOGUE = f"""
INSERT INTO skene.plans (plan, paid, is_default) VALUES ('free', false, true), ('pro', true, false);
INSERT INTO skene.features (feature, period) VALUES ('api_calls', 'month');
INSERT INTO skene.feature_limits (feature, plan, usage_limit) VALUES
    ('api_calls', 'free', {LIMIT}), ('api_calls', 'pro', NULL);
INSERT INTO skene.loops (name, type, feature, config) VALUES
    ('free_tier_limit', 'freemium', 'api_calls',
     '{{"message": "You''ve reached your free tier limit. Upgrade to continue.",
        "upgrade_prompt": {{"channel": "email", "template": "upgrade_prompt"}},
        "recovery": {{"retries": 2}}}}');
"""


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll `condition` until it is truthy (returned) or the deadline passes (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def catalogue(conn: psycopg.Connection) -> None:
    conn.execute(CATALOGUE)


def add_customers(conn: psycopg.Connection, n: int, prefix: str = "cus") -> list[str]:
    ids = [f"{prefix}_{i}" for i in range(n)]
    conn.execute(
        "SELECT skene.identify(c, email => c || '@example.test', name => 'Name ' || c) "
        "FROM unnest(%s::text[]) AS c",
        (ids,),
    )
    return ids


def block(conn: psycopg.Connection, customer: str) -> None:
    """Call the gate until the customer is blocked: queues one upgrade prompt."""
    for _ in range(LIMIT + 1):
        conn.execute("SELECT skene.check_and_increment(%s, 'api_calls')", (customer,))


def enqueue_prompts(conn: psycopg.Connection, customers: list[str], max_attempts: int = 3) -> None:
    """Upgrade prompts shaped like the gate's, straight into the queue (fast for many)."""
    conn.execute(
        "SELECT skene.enqueue('email', jsonb_build_object("
        "  'template', 'upgrade_prompt', 'feature', 'api_calls', 'reason', 'limit_reached',"
        "  'plan', 'free', 'used', 3, 'usage_limit', 3, 'resets_at', '2030-01-01T00:00:00+00:00',"
        "  'message', 'Upgrade to continue.'), c, 'free_tier_limit', 'prompt:' || c, NULL, %s) "
        "FROM unnest(%s::text[]) AS c",
        (max_attempts, customers),
    )


def jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM skene.jobs ORDER BY id")
        return cur.fetchall()


def attempts(conn: psycopg.Connection, job_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM skene.job_attempts WHERE job_id = %s ORDER BY attempt", (job_id,)
        )
        return cur.fetchall()


def states(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT state, count(*) FROM skene.jobs GROUP BY 1").fetchall())


def all_in(conn: psycopg.Connection, state: str, n: int) -> bool:
    return states(conn).get(state, 0) == n


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with FakeResend() as fake:
        yield fake


def email_settings() -> EmailSettings:
    return EmailSettings(sender=SENDER, app_url=APP_URL, unsubscribe_secret="s3cret")


def resend_provider(fake: FakeResend, timeout: float = 5.0) -> ResendProvider:
    return ResendProvider("re_test_key", api_url=fake.url, timeout=timeout, rate_limit=0)


@contextmanager
def running_worker(
    db_url: str, provider: EmailProvider, templates: Path | None = None, **settings: Any
) -> Iterator[Worker]:
    """A worker in a thread of this process; stopped (gracefully) on exit."""
    options = {"concurrency": 4, "poll_interval": 0.5, "lease": 5.0, "retry_base": 0.05, **settings}
    worker = Worker(
        db_url,
        [EmailHandler(provider, TemplateRenderer(templates), email_settings())],
        WorkerSettings(**options),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop"
        assert not errors, errors


def drain(
    db_url: str, provider: EmailProvider, templates: Path | None = None, **settings: Any
) -> Worker:
    options = {
        "concurrency": 4,
        "poll_interval": 0.5,
        "lease": 5.0,
        "retry_base": 0.05,
        "drain": True,
        **settings,
    }
    worker = Worker(
        db_url,
        [EmailHandler(provider, TemplateRenderer(templates), email_settings())],
        WorkerSettings(**options),
    )
    worker.run()
    return worker


def cli_env(fake: FakeResend | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKENE_", "RESEND_"))}
    env.update(
        {"SKENE_EMAIL_FROM": SENDER, "SKENE_APP_URL": APP_URL, "SKENE_UNSUBSCRIBE_SECRET": "s3cret"}
    )
    if fake is not None:
        env.update(
            {
                "SKENE_EMAIL_PROVIDER": "resend",
                "RESEND_API_KEY": "re_test_key",
                "RESEND_API_URL": fake.url,
                "SKENE_EMAIL_RATE_LIMIT": "0",
            }
        )
    env.update(extra)
    return env


def skene_pg(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKENE_PG, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@contextmanager
def listen_process(db_url: str, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """`skene-pg listen` as a subprocess; SIGKILLed on exit if still running."""
    proc = subprocess.Popen(
        [SKENE_PG, "listen", "--database-url", db_url, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
