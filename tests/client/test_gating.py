"""gating.py driven by the real client: a request matched by several features, the
failure policy, and refunds (what both framework integrations run)."""

from __future__ import annotations

import psycopg
import pytest

from skene_pg import Skene
from skene_pg.errors import DatabaseError
from skene_pg.gates import Gate
from skene_pg.gating import Counted, Policy, gate_request, refund


def gates(*features: str) -> list[Gate]:
    return [Gate(f, f, (), None, None) for f in features]


def used(conn: psycopg.Connection, feature: str) -> int:
    row = conn.execute("SELECT used FROM skene.check('acme', %s)", (feature,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_block_on_a_later_feature_gives_the_earlier_counts_back(
    skene: Skene, conn: psycopg.Connection
) -> None:
    # api_calls is counted first (name order), then sso blocks: not in the free plan
    result = skene.drive(gate_request(gates("api_calls", "sso"), "acme", 1, Policy()))
    assert result.answer is not None and result.answer.status == 402
    assert result.answer.body is not None and result.answer.body["feature"] == "sso"
    assert result.counted == []
    assert used(conn, "api_calls") == 0
    assert conn.execute("SELECT count(*) FROM skene.idempotency_keys").fetchone() == (0,)


def test_both_allowed_are_counted_and_refundable(skene: Skene, conn: psycopg.Connection) -> None:
    result = skene.drive(gate_request(gates("api_calls", "daily"), "acme", 2, Policy()))
    assert result.answer is None
    assert [c.feature for c in result.counted] == ["api_calls", "daily"]
    assert (used(conn, "api_calls"), used(conn, "daily")) == (2, 2)
    assert result.headers()["RateLimit-Remaining"] == "3"  # daily: 5 - 2, the tightest
    skene.drive(refund("acme", result.counted))
    assert (used(conn, "api_calls"), used(conn, "daily")) == (0, 0)


def test_one_feature_without_refunds_uses_no_key(skene: Skene, conn: psycopg.Connection) -> None:
    result = skene.drive(gate_request(gates("api_calls"), "acme", 1, Policy()))
    assert result.counted == [] and used(conn, "api_calls") == 1
    keyed = skene.drive(gate_request(gates("api_calls"), "acme", 1, Policy(refund_on_error=True)))
    assert [c.feature for c in keyed.counted] == ["api_calls"]


def test_anonymous_policy(skene: Skene) -> None:
    assert skene.drive(gate_request(gates("api_calls"), None, 1, Policy())).answer is None
    refused = skene.drive(gate_request(gates("api_calls"), None, 1, Policy(anonymous="401")))
    assert refused.answer is not None and refused.answer.status == 401


def test_a_failure_answers_503_or_fails_open(skene: Skene) -> None:
    # an unknown feature is an error the database raises: the same path as any failure
    failed = skene.drive(gate_request(gates("nope"), "acme", 1, Policy()))
    assert failed.answer is not None and failed.answer.status == 503
    opened = skene.drive(gate_request(gates("nope"), "acme", 1, Policy(on_error="open")))
    assert opened.answer is None


def test_a_failed_refund_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    steps = refund("acme", [Counted("api_calls", "req:1", 1)])
    next(steps)  # the refund call
    with pytest.raises(StopIteration):
        steps.throw(DatabaseError("boom"))
    assert "refund of api_calls for acme failed" in caplog.text


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="anonymous"):
        Policy(anonymous="deny")
    with pytest.raises(ValueError, match="on_error"):
        Policy(on_error="500")
