"""`skene-pg doctor` on the connection path (a forwarder in front of the server) and
on the settings `skene-pg listen` would run with: what blocks, what only warns, and
that no secret is ever printed."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import click
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from skene_pg.cli.doctor import doctor_command
from skene_pg.cli.listen import listen_command
from tests.deploy.managed_pg import clean_env, doctor, findings, in_process


class Forwarder:
    """A TCP forwarder on another port, as a proxy or a port mapping puts one in
    front of PostgreSQL: each client connection gets its own server connection."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture
def forwarded(db_url: str) -> Iterator[str]:
    params: dict[str, Any] = conninfo_to_dict(db_url)
    forwarder = Forwarder(int(params["port"]))
    yield make_conninfo(db_url, port=forwarder.port)
    forwarder.close()


def test_direct_connection(db_url: str) -> None:
    code, report = doctor(db_url)
    assert code == 0
    (pooler,) = findings(report, "pooler")
    port = conninfo_to_dict(db_url)["port"]
    assert pooler["message"] == (
        f"direct connection (server port {port}; the same backend across transactions)"
    )


def test_something_in_front_asks_for_a_direct_url_for_listen(db_url: str, forwarded: str) -> None:
    code, report = doctor(forwarded)
    assert code == 0
    (pooler,) = findings(report, "pooler")
    assert pooler["status"] == "warning"
    assert pooler["message"].startswith(
        f"something forwards connections: the URL's port is {conninfo_to_dict(forwarded)['port']}"
    )
    assert pooler["fix"][0].startswith("SKENE_LISTEN_DATABASE_URL=")

    env = clean_env(SKENE_LISTEN_DATABASE_URL=db_url)
    code, report = doctor(forwarded, env=env)
    (pooler,) = findings(report, "pooler")
    assert pooler["status"] == "ok"
    assert "skene-pg listen connects directly (SKENE_LISTEN_DATABASE_URL" in pooler["message"]

    code, report = doctor(forwarded, env=clean_env(SKENE_LISTEN_DATABASE_URL=forwarded))
    assert [f["status"] for f in findings(report, "pooler")] == ["warning", "warning"]
    assert findings(report, "pooler")[1]["message"] == (
        "SKENE_LISTEN_DATABASE_URL does not look direct either"
    )


def _email(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["status"], f["message"]) for f in findings(report, "email")]


def test_email_settings_as_listen_reads_them_and_no_secret_printed(db_url: str) -> None:
    code, report = doctor(db_url, env=clean_env(SKENE_EMAIL_PROVIDER="resend"))
    assert code == 3
    (blocker,) = findings(report, "email")
    assert blocker["status"] == "blocker"
    assert blocker["message"].startswith(
        "skene-pg listen would not start: RESEND_API_KEY is not set"
    )

    secrets = {
        "RESEND_API_KEY": "re_very_secret_key",
        "SKENE_EMAIL_FROM": "Acme <hello@acme.test>",
        "SKENE_APP_URL": "https://app.acme.test",
    }
    result = in_process(
        "doctor",
        "--json",
        "--database-url",
        db_url,
        "--email-provider",
        "resend",
        env=clean_env(**secrets),
    )
    assert result.exit_code == 0
    assert "re_very_secret_key" not in result.output
    report = json.loads(result.stdout)
    assert [s for s, _ in _email(report)] == ["ok", "warning", "warning"]
    assert _email(report)[0][1] == (
        "provider resend (RESEND_API_KEY set); sender Acme <hello@acme.test>; "
        "app URL https://app.acme.test"
    )
    assert _email(report)[1][1].startswith("SKENE_UNSUBSCRIBE_SECRET is not set")
    assert _email(report)[2][1].startswith("RESEND_WEBHOOK_SECRET is not set")

    smtp = clean_env(
        SKENE_EMAIL_PROVIDER="smtp",
        SKENE_SMTP_URL="smtp://mailer:pa55word@mail.acme.test:2525",
        SKENE_APP_URL="https://app.acme.test",
        SKENE_UNSUBSCRIBE_SECRET="another_secret",
    )
    code, report = doctor(db_url, env=smtp)
    assert code == 3  # no sender
    assert _email(report) == [
        (
            "blocker",
            "skene-pg listen would not start: SKENE_EMAIL_FROM is not set: the smtp provider "
            "needs a sender (--email-from or SKENE_EMAIL_FROM), e.g. 'Acme <hello@acme.com>'",
        )
    ]
    result = in_process(
        "doctor", "--database-url", db_url, "--email-from", "ops@acme.test", env=smtp
    )
    assert result.exit_code == 0
    assert "ok      email: provider smtp (mail.acme.test:2525, with a login)" in result.stdout
    assert "pa55word" not in result.output and "another_secret" not in result.output
    assert result.stdout.splitlines()[-1].startswith("0 blockers, ")


def test_stripe_settings(db_url: str, conn: psycopg.Connection) -> None:
    code, report = doctor(db_url)
    assert [f["status"] for f in findings(report, "stripe")] == ["ok"]
    conn.execute("INSERT INTO skene.plans (plan, paid, is_default) VALUES ('pro', true, false)")
    conn.execute("INSERT INTO skene.plan_prices (price_id, plan) VALUES ('price_pro', 'pro')")
    code, report = doctor(db_url)
    (stripe,) = findings(report, "stripe")
    assert (code, stripe["status"]) == (0, "warning")
    assert stripe["message"].startswith(
        "STRIPE_API_KEY is not set, yet the catalogue has 1 Stripe price(s) mapped to plans"
    )
    result = in_process(
        "doctor", "--json", "--database-url", db_url, env=clean_env(STRIPE_API_KEY="sk_live_x1")
    )
    assert "sk_live_x1" not in result.output
    (stripe,) = findings(json.loads(result.stdout), "stripe")
    assert stripe["status"] == "warning"
    assert stripe["message"].startswith("STRIPE_API_KEY is set but STRIPE_WEBHOOK_SECRET is not")
    code, report = doctor(
        db_url, env=clean_env(STRIPE_API_KEY="sk_live_x1", STRIPE_WEBHOOK_SECRET="whsec_x2")
    )
    assert findings(report, "stripe")[0]["status"] == "ok"


def test_doctor_reads_the_settings_listen_reads() -> None:
    """The same option names, environment variables, choices and defaults."""

    def options(command: click.Command) -> dict[str, tuple[Any, ...]]:
        return {
            p.name: (p.envvar, p.default, getattr(p.type, "choices", None))
            for p in command.params
            if isinstance(p, click.Option) and p.name
        }

    listen, ours = options(listen_command), options(doctor_command)
    shared = {
        "database_url",
        "email_provider",
        "email_from",
        "app_url",
        "upgrade_url",
        "unsubscribe_url",
        "outbox_dir",
    }
    assert shared <= set(listen) and shared <= set(ours)
    assert {k: ours[k] for k in shared} == {k: listen[k] for k in shared}
