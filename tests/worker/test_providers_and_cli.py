"""The outbox and SMTP providers deliver; the CLI's start-up errors name the missing
setting; `skene-pg jobs` and `skene-pg templates preview` work as documented."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiosmtpd.controller import Controller

from skene_pg.devdb import free_port
from skene_pg.email.base import Email, message_id
from skene_pg.email.outbox import OutboxProvider, file_name
from skene_pg.email.resend import ResendProvider
from skene_pg.email.smtp import SmtpProvider
from tests.worker.conftest import (
    add_customers,
    all_in,
    block,
    cli_env,
    drain,
    enqueue_prompts,
    jobs,
    skene_pg,
)

pytestmark = pytest.mark.usefixtures("catalogue")


def test_outbox_writes_one_eml_per_email_named_by_the_key(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    customers = add_customers(conn, 2)
    for customer in customers:
        block(conn, customer)
    env = cli_env(SKENE_EMAIL_PROVIDER="outbox", SKENE_OUTBOX_DIR=str(tmp_path / "out"))
    result = skene_pg("listen", "--drain", "--database-url", db_url, env=env)
    assert result.returncode == 0, result.stderr
    keys = [j["idempotency_key"] for j in jobs(conn)]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(file_name(k) for k in keys)
    message = email.message_from_bytes(
        (tmp_path / "out" / file_name(keys[0])).read_bytes(), policy=email.policy.default
    )
    assert message["Message-ID"] == message_id(keys[0], "hello@acme.test")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_body(("plain",)).get_content().startswith("Hi Name cus_")

    # a re-send (a retry after a crash) overwrites its file instead of adding one
    again = Email(
        sender="a@b.test",
        to="c@d.test",
        subject="again",
        html="<p>x</p>",
        text="x",
        idempotency_key=keys[0],
    )
    OutboxProvider(tmp_path / "out").send(again)
    assert len(list((tmp_path / "out").iterdir())) == 2
    assert b"Subject: again" in (tmp_path / "out" / file_name(keys[0])).read_bytes()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_RCPT(
        self,
        server: object,
        session: object,
        envelope: object,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("bounce"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        raw = envelope.content  # type: ignore[attr-defined]
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def test_smtp_delivers_to_a_loopback_server(
    conn: psycopg.Connection, db_url: str, smtp_server: tuple[Controller, _Inbox]
) -> None:
    controller, inbox = smtp_server
    port = controller.port
    enqueue_prompts(conn, add_customers(conn, 3))
    provider = SmtpProvider(f"smtp://127.0.0.1:{port}", timeout=5)
    drain(db_url, provider)
    assert all_in(conn, "succeeded", 3)
    assert len(inbox.messages) == 3
    keys = {j["idempotency_key"] for j in jobs(conn)}
    assert {m["Message-ID"] for m in inbox.messages} == {
        message_id(k, "hello@acme.test") for k in keys
    }
    assert all(
        m["List-Unsubscribe"].startswith("<https://app.acme.test/unsubscribe")
        for m in inbox.messages
    )


def test_smtp_refusal_5xx_is_dead_and_connection_refused_is_retried(
    conn: psycopg.Connection, db_url: str, smtp_server: tuple[Controller, _Inbox]
) -> None:
    controller, inbox = smtp_server
    conn.execute("SELECT skene.identify('cus_b', email => 'bounce@example.test')")
    enqueue_prompts(conn, ["cus_b"], max_attempts=5)
    drain(db_url, SmtpProvider(f"smtp://127.0.0.1:{controller.port}", timeout=5))
    (job,) = jobs(conn)
    assert job["state"] == "dead"
    assert job["last_error"].startswith("smtp 550 recipient refused: 5.1.1 mailbox unavailable")
    assert not inbox.messages

    conn.execute("SELECT skene.retry_job(%s)", (job["id"],))
    drain(db_url, SmtpProvider("smtp://127.0.0.1:1", timeout=2))  # nothing listens there
    (job,) = jobs(conn)
    assert job["state"] == "retryable" and job["last_error"].startswith("smtp: ")


def test_a_refused_connection_to_resend_is_a_network_failure_not_a_500(
    conn: psycopg.Connection, db_url: str
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=5)
    port = free_port()  # nothing listens there
    provider = ResendProvider("re_test", api_url=f"http://127.0.0.1:{port}", timeout=2)
    drain(db_url, provider)
    (job,) = jobs(conn)
    assert job["state"] == "retryable"
    assert job["last_error"] == (
        f"resend network failure: connection refused at http://127.0.0.1:{port}/emails"
    )
    assert "500" not in job["last_error"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SKENE_EMAIL_PROVIDER": "resend"}, "RESEND_API_KEY is not set"),
        ({"SKENE_EMAIL_PROVIDER": "smtp"}, "SKENE_SMTP_URL is not set"),
        (
            {"SKENE_EMAIL_PROVIDER": "smtp", "SKENE_SMTP_URL": "smtp://h", "SKENE_EMAIL_FROM": ""},
            "SKENE_EMAIL_FROM is not set",
        ),
        (
            {"SKENE_EMAIL_PROVIDER": "resend", "RESEND_API_KEY": "k", "SKENE_APP_URL": ""},
            "SKENE_APP_URL is not set",
        ),
    ],
)
def test_a_missing_setting_is_a_clear_startup_error(
    db_url: str, env: dict[str, str], message: str
) -> None:
    result = skene_pg("listen", "--drain", "--database-url", db_url, env=cli_env(**env))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_list_show_retry_cancel(conn: psycopg.Connection, db_url: str) -> None:
    customers = add_customers(conn, 2)
    enqueue_prompts(conn, customers)
    env = cli_env(SKENE_DATABASE_URL=db_url)
    first, second = (j["id"] for j in jobs(conn))

    cancelled = skene_pg("jobs", "cancel", str(second), env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {second} cancelled" in cancelled.stdout

    listed = skene_pg("jobs", "list", "--state", "available", "--kind", "email", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [first]
    table = skene_pg("jobs", "list", env=env).stdout
    assert "cancelled" in table and "available" in table

    shown = skene_pg("jobs", "show", str(second), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "cancelled" in shown.stdout and "no attempts yet" in shown.stdout

    retried = skene_pg("jobs", "retry", str(second), env=env)
    assert retried.returncode == 0, retried.stderr
    assert jobs(conn)[1]["state"] == "available"

    done = skene_pg("jobs", "cancel", "424242", env=env)
    assert done.returncode == 1 and "no job 424242" in done.stderr
    assert "hint: List jobs with `skene-pg jobs list`" in done.stderr


def test_jobs_show_lists_every_attempt_with_its_error(
    conn: psycopg.Connection, db_url: str
) -> None:
    enqueue_prompts(conn, add_customers(conn, 1), max_attempts=5)
    drain(db_url, _Failing())
    (job,) = jobs(conn)
    shown = skene_pg(
        "jobs", "show", str(job["id"]), "--json", env=cli_env(SKENE_DATABASE_URL=db_url)
    )
    data = json.loads(shown.stdout)
    assert [(a["attempt"], a["outcome"], a["error"]) for a in data["attempts"]] == [
        (1, "failed", "provider down")
    ]


class _Failing:
    name = "failing"

    def send(self, email: object) -> str | None:
        from skene_pg.email.base import TransientEmailError

        raise TransientEmailError("provider down")

    def close(self) -> None:
        pass


def test_templates_preview_renders_for_a_customer(conn: psycopg.Connection, db_url: str) -> None:
    (customer,) = add_customers(conn, 1)
    env = cli_env(SKENE_DATABASE_URL=db_url)
    sample = skene_pg("templates", "preview", "upgrade_prompt", "--customer", customer, env=env)
    assert sample.returncode == 0, sample.stderr
    assert "sample usage" in sample.stderr
    assert "Subject: You've reached your api_calls limit" in sample.stdout
    assert f"Hi Name {customer}," in sample.stdout

    block(conn, customer)
    real = skene_pg(
        "templates", "preview", "upgrade_prompt", "--customer", customer, "--html", env=env
    )
    assert real.returncode == 0, real.stderr
    assert "(job " in real.stderr and "<html>" in real.stdout

    missing = skene_pg("templates", "preview", "nope", "--customer", customer, env=env)
    assert missing.returncode == 1 and "template 'nope' has no nope.subject.txt" in missing.stderr

    listed = skene_pg("templates", "list", env=env)
    assert listed.stdout.split() == ["milestone", "re_engagement", "upgrade_prompt"]


def test_outbox_provider_needs_a_folder() -> None:
    from skene_pg.email.base import ConfigError

    with pytest.raises(ConfigError, match="SKENE_OUTBOX_DIR"):
        OutboxProvider(None)


def test_drain_to_outbox_is_the_demo_in_one_call(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    from skene_pg.email.handler import drain_to_outbox
    from skene_pg.email.templates import PACKAGE_TEMPLATES

    assert PACKAGE_TEMPLATES.parent.parent.name == "skene_pg"  # shipped inside the package
    (customer,) = add_customers(conn, 1)
    block(conn, customer)
    counts = drain_to_outbox(db_url, str(tmp_path))
    assert counts["succeeded"] == 1
    (eml,) = tmp_path.glob("*.eml")
    assert b"You've reached your api_calls limit" in eml.read_bytes()


def test_a_malformed_listen_url_is_a_usage_error_at_start(db_url: str) -> None:
    env = cli_env(SKENE_LISTEN_DATABASE_URL="host=127.0.0.1 no_such_option=1")
    result = skene_pg("listen", "--database-url", db_url, env=env)
    assert result.returncode == 2
    assert "--listen-database-url" in result.stderr and "no_such_option" in result.stderr
    assert "Traceback" not in result.stderr
