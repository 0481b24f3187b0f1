"""Send-time eligibility and strict templates: a job that must not go out, or cannot be
rendered, ends with the reason recorded and nothing sent."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import psycopg
import pytest
from jinja2.sandbox import SecurityError

from skene_pg.email.handler import EmailSettings, unsubscribe_token, verify_unsubscribe_token
from skene_pg.email.templates import TemplateFailure, TemplateRenderer
from tests.worker.conftest import (
    add_customers,
    all_in,
    block,
    drain,
    enqueue_prompts,
    jobs,
    resend_provider,
)
from tests.worker.fake_resend import FakeResend

pytestmark = pytest.mark.usefixtures("catalogue")


def only_job(conn: psycopg.Connection) -> dict:
    (job,) = jobs(conn)
    return job


def test_unsubscribed_customer_is_skipped(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    (customer,) = add_customers(conn, 1)
    block(conn, customer)
    conn.execute("SELECT skene.unsubscribe(%s)", (customer,))
    drain(db_url, resend_provider(fake_resend))
    job = only_job(conn)
    assert job["state"] == "skipped"
    assert job["last_error"].startswith("the customer unsubscribed at ")
    assert not fake_resend.received


def test_suppressed_address_is_skipped(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    (customer,) = add_customers(conn, 1)
    block(conn, customer)
    conn.execute(
        "SELECT skene.suppress(%s, 'bounce', 'resend')", (f"  {customer.upper()}@EXAMPLE.test ",)
    )
    drain(db_url, resend_provider(fake_resend))
    job = only_job(conn)
    assert job["state"] == "skipped"
    assert job["last_error"] == "the address is suppressed (bounce, resend)"
    assert not fake_resend.received


def test_customer_already_on_a_paid_plan_is_skipped(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    (customer,) = add_customers(conn, 1)
    block(conn, customer)
    conn.execute("SELECT skene.set_plan(%s, 'pro', 'stripe')", (customer,))
    drain(db_url, resend_provider(fake_resend))
    job = only_job(conn)
    assert job["state"] == "skipped"
    assert job["last_error"] == "the customer is already on the paid plan 'pro'"
    assert not fake_resend.received


def test_customer_without_email_is_skipped(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    block(conn, "cus_anonymous")
    drain(db_url, resend_provider(fake_resend))
    assert only_job(conn)["last_error"] == "the customer has no email address"
    assert not fake_resend.received


def test_a_missing_variable_fails_the_job_with_the_reason(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend, tmp_path: Path
) -> None:
    (tmp_path / "upgrade_prompt.txt").write_text(
        "Hi {{ user.name }},\n\nYour company {{ customer.attributes.company }} is over.\n"
    )
    enqueue_prompts(conn, add_customers(conn, 1))
    drain(db_url, resend_provider(fake_resend), templates=tmp_path)
    job = only_job(conn)
    assert job["state"] == "dead"
    assert job["last_error"] == (
        "template upgrade_prompt.txt, line 3: customer.attributes has no 'company' "
        "(it has: nothing)"
    )
    assert not fake_resend.received


def test_a_null_printed_without_a_default_fails_instead_of_hi_comma(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend, tmp_path: Path
) -> None:
    (tmp_path / "upgrade_prompt.txt").write_text("Hi {{ user.name }},\n")
    conn.execute("SELECT skene.identify('cus_noname', email => 'x@example.test')")
    enqueue_prompts(conn, ["cus_noname"])
    drain(db_url, resend_provider(fake_resend), templates=tmp_path)
    job = only_job(conn)
    assert job["state"] == "dead"
    assert job["last_error"].startswith(
        "template upgrade_prompt.txt, line 1: a printed value is empty (NULL)"
    )


def test_project_templates_override_part_by_part_and_keep_the_unsubscribe_link(
    tmp_path: Path,
) -> None:
    (tmp_path / "upgrade_prompt.html").write_text("<p>Hi {{ user.name }}</p>")
    (tmp_path / "welcome.subject.txt").write_text("Welcome")
    renderer = TemplateRenderer(tmp_path)
    assert renderer.names() == ["milestone", "re_engagement", "upgrade_prompt"]
    from skene_pg.email.handler import compose

    context = {
        "customer_id": "c1",
        "email": "ada@example.test",
        "name": "Ada",
        "plan": "free",
        "attributes": {},
        "last_activity_at": None,
    }
    payload = {
        "template": "upgrade_prompt",
        "feature": "api_calls",
        "plan": "free",
        "used": 3,
        "usage_limit": 3,
    }
    settings = EmailSettings(
        sender="a@b.test",
        app_url="https://x.test",
        unsubscribe_url="https://x.test/u/{customer_id}/{token}",
        unsubscribe_secret="k",
    )
    email = compose(1, "c1", "key-1", payload, context, None, renderer, settings)
    token = unsubscribe_token("k", "c1")
    assert verify_unsubscribe_token("k", "c1", token)
    assert email.html.startswith("<p>Hi Ada</p>")  # the override, not the default
    assert f'href="https://x.test/u/c1/{token}"' in email.html  # footer added
    assert "You've used 3 of 3 api_calls" in email.text  # the default text part
    assert email.headers["List-Unsubscribe"] == f"<https://x.test/u/c1/{token}>"
    with pytest.raises(TemplateFailure, match=r"has no welcome\.html"):
        renderer.render("welcome", {})


@pytest.mark.parametrize("name", ["upgrade_prompt", "re_engagement", "milestone"])
def test_default_templates_render_with_user_last_activity_at(name: str) -> None:
    from datetime import datetime

    from skene_pg.email.handler import template_variables

    settings = EmailSettings(sender="a@b.test", app_url="https://x.test")
    base = {"email": "ada@example.test", "name": "Ada", "plan": "free", "attributes": {}}
    payload = {
        "template": name,
        "feature": "api_calls",
        "plan": "free",
        "used": 100,
        "usage_limit": 100,
        "resets_at": "2026-04-01T00:00:00+00:00",
    }
    renderer = TemplateRenderer()
    for last_activity in (None, datetime(2026, 3, 1, tzinfo=UTC)):
        variables = template_variables(
            "c1", payload, base | {"last_activity_at": last_activity}, "loop", settings
        )
        rendered = renderer.render(name, variables)
        assert rendered.subject and "None" not in rendered.text + rendered.html
        assert variables["unsubscribe_url"] in rendered.text
        if name == "re_engagement" and last_activity:
            assert "since March 1, 2026" in rendered.text


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    renderer_dir = Path(__file__).parent  # any folder: the template comes from a string
    env = TemplateRenderer(renderer_dir).env
    with pytest.raises(SecurityError, match=r"access to attribute '__class__' .* is unsafe"):
        env.from_string("{{ user.__class__.__mro__ }}").render(user={"a": 1})


def test_jobs_skipped_and_dead_are_all_finished(
    conn: psycopg.Connection, db_url: str, fake_resend: FakeResend
) -> None:
    customers = add_customers(conn, 3)
    for customer in customers:
        block(conn, customer)
    conn.execute("SELECT skene.unsubscribe(%s)", (customers[0],))
    drain(db_url, resend_provider(fake_resend))
    assert all_in(conn, "succeeded", 2)
    assert len(fake_resend.deliveries) == 2
