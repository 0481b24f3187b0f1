"""The upgrade prompt reads right when one request asks for more than the plan allows
(8 on a plan of 5, nothing used yet), as well as when usage reached the limit; prompts
queued before the gate recorded the requested amount still render."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import psycopg
import pytest

from skene_pg.email.handler import EmailSettings, template_variables
from skene_pg.email.outbox import OutboxProvider
from skene_pg.email.templates import Rendered, TemplateRenderer
from tests.worker.conftest import LIMIT, add_customers, drain, jobs

PROMPT = {
    "template": "upgrade_prompt",
    "message": None,
    "feature": "exports",
    "reason": "limit_reached",
    "plan": "free",
    "usage_limit": 5,
    "resets_at": "2026-04-01T00:00:00Z",
}


def render(**payload: Any) -> Rendered:
    context = {"email": "ada@example.test", "name": "Ada", "plan": "free", "attributes": {}}
    settings = EmailSettings(sender="a@b.test", app_url="https://x.test")
    variables = template_variables("c1", PROMPT | payload, context, "limits", settings)
    return TemplateRenderer().render("upgrade_prompt", variables)


def test_a_request_above_the_whole_limit_says_what_it_needs() -> None:
    rendered = render(used=0, requested=8)
    assert rendered.subject == "Your plan allows 5 exports"
    assert "This request needs 8 exports; your free plan allows 5." in rendered.text
    assert "That is more than your plan allows." in rendered.text
    assert "This request needs <strong>8</strong> exports; your free plan allows" in rendered.html
    assert "used" not in rendered.text + rendered.html


def test_a_request_above_what_is_left_says_what_was_used_too() -> None:
    rendered = render(used=3, requested=4)
    assert "This request needs 4 exports; you've used 3 of the 5 your free plan allows." in (
        rendered.text
    )


@pytest.mark.parametrize("payload", [{"used": 5, "requested": 1}, {"used": 5}])
def test_a_reached_limit_and_an_old_prompt_say_used_of_limit(payload: dict[str, int]) -> None:
    """{"used": 5} is a prompt queued before `requested` was recorded."""
    rendered = render(**payload)
    assert rendered.subject == "You've reached your exports limit"
    assert "You've reached the limit of your plan." in rendered.text
    assert "You've used 5 of 5 exports on the free plan." in rendered.text
    assert "This request" not in rendered.text + rendered.html


def test_a_feature_not_in_the_plan_says_so() -> None:
    rendered = render(reason="not_in_plan", used=0, usage_limit=0, requested=2)
    assert rendered.subject == "Your plan doesn't include exports"
    assert "exports is not part of the free plan." in rendered.text
    assert "resets" not in rendered.text


@pytest.mark.usefixtures("catalogue")
def test_through_the_gate_the_prompt_names_the_requested_amount(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    (customer,) = add_customers(conn, 1)
    blocked = conn.execute(
        "SELECT allowed, used FROM skene.check_and_increment(%s, 'api_calls', %s)",
        (customer, LIMIT + 5),
    ).fetchone()
    assert blocked == (False, 0)
    (job,) = jobs(conn)
    assert (job["payload"]["used"], job["payload"]["requested"]) == (0, LIMIT + 5)
    drain(db_url, OutboxProvider(tmp_path / "out"))
    (eml,) = (tmp_path / "out").iterdir()
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == f"Your plan allows {LIMIT} api_calls"
    text = message.get_body(("plain",)).get_content()
    assert f"This request needs {LIMIT + 5} api_calls; your free plan allows {LIMIT}." in text
    assert "You've used" not in text
