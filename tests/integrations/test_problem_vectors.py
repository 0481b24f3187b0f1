"""problem_vectors.json: the shared builder (skene_pg/http_problem.py) makes exactly
the 402s, RateLimit headers, 401 and 503 the file pins. The Django and FastAPI tests
check that what they serve is this builder's output; clients in other languages
check themselves against the same file."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from skene_pg import Decision, http_problem
from skene_pg.gates import Gate

VECTORS = json.loads((Path(__file__).parent / "problem_vectors.json").read_text())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def decision(d: dict[str, Any]) -> Decision:
    resets = at(d["resets_at"]) if d["resets_at"] else None
    return Decision(
        d["allowed"],
        d["reason"],
        d["feature"],
        d["plan"],
        d["used"],
        d["usage_limit"],
        d["remaining"],
        resets,
    )


def gate(g: dict[str, Any] | None) -> Gate | None:
    return Gate(g["feature"], g["name"], (), g["message"], g["upgrade_url"]) if g else None


@pytest.mark.parametrize("case", VECTORS["blocked"], ids=lambda c: c["name"])
def test_blocked(case: dict[str, Any]) -> None:
    answer = http_problem.blocked(decision(case["decision"]), gate(case["gate"]), at(case["now"]))
    assert (answer.status, answer.headers, answer.body) == (
        case["status"],
        case["headers"],
        case["body"],
    )
    assert json.loads(answer.content()) == case["body"]


@pytest.mark.parametrize("case", VECTORS["allowed"], ids=lambda c: c["name"])
def test_allowed_headers(case: dict[str, Any]) -> None:
    headers = http_problem.ratelimit_headers(decision(case["decision"]), at(case["now"]))
    assert headers == case["headers"]


def test_anonymous_and_unavailable() -> None:
    anonymous = http_problem.anonymous(gate(VECTORS["anonymous"]["gate"]))  # type: ignore[arg-type]
    assert (anonymous.status, anonymous.headers, anonymous.body) == (
        VECTORS["anonymous"]["status"],
        VECTORS["anonymous"]["headers"],
        VECTORS["anonymous"]["body"],
    )
    unavailable = http_problem.unavailable()
    assert (unavailable.status, unavailable.headers, unavailable.body) == (
        VECTORS["unavailable"]["status"],
        VECTORS["unavailable"]["headers"],
        VECTORS["unavailable"]["body"],
    )


def test_every_kind_of_answer_is_covered() -> None:
    reasons = {c["decision"]["reason"] for c in VECTORS["blocked"]}
    assert reasons == {"limit_reached", "not_in_plan"}
    assert {c["decision"]["reason"] for c in VECTORS["allowed"]} == {"ok", "over_soft_limit"}
