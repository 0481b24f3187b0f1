"""The Django side of a request's gate: run it, turn its answer into a response, and
finish it once the view has answered (RateLimit headers, or a refund when the view
failed). Shared by GateMiddleware and @gate, so a request gated by both is finished
once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from skene_pg import gating, http_problem
from skene_pg.django import conf
from skene_pg.errors import SkeneError
from skene_pg.gates import Gate, GateTable
from skene_pg.gating import GateResult
from skene_pg.http_problem import HttpAnswer

ATTRIBUTE = "skene"  # request.skene: the RequestGate of the request, for views to read


@dataclass
class RequestGate:
    """Everything the gate did for one request."""

    customer: str | None
    results: list[GateResult] = field(default_factory=list)
    finished: int = 0  # results[:finished] are done with

    @property
    def decisions(self) -> list[Any]:
        return [d for r in self.results for d in r.decisions]


def attach(request: HttpRequest) -> RequestGate:
    """request.skene, made on first use: what the gate did for this request."""
    state = getattr(request, ATTRIBUTE, None)
    if not isinstance(state, RequestGate):
        state = RequestGate(None)
        setattr(request, ATTRIBUTE, state)
    return state


def to_response(answer: HttpAnswer) -> HttpResponse:
    response = HttpResponse(answer.content(), status=answer.status)
    for name, value in answer.headers.items():
        response[name] = value
    return response


def gate_table() -> GateTable | HttpAnswer | None:
    """The gates, or the answer to give when they can't be read (None: let through)."""
    try:
        return conf.client().drive(gating.read_table(conf.gate_cache()))
    except SkeneError as exc:
        return gating.failed_answer(exc, conf.settings().policy)


def run(request: HttpRequest, gates: list[Gate], amount: int) -> HttpResponse | None:
    """Gate `request`; a response to send instead of the view's, or None."""
    settings = conf.settings()
    customer = settings.customer(request)
    result = conf.client().drive(gating.gate_request(gates, customer, amount, settings.policy))
    state = attach(request)
    state.customer = customer
    state.results.append(result)
    return to_response(result.answer) if result.answer is not None else None


def finish(request: HttpRequest, response: HttpResponseBase | None) -> None:
    """After the view: give back what a failed request counted (when opted in), and put
    the RateLimit headers on an allowed response. `response` None: the view raised."""
    state = getattr(request, ATTRIBUTE, None)
    if not isinstance(state, RequestGate) or state.finished == len(state.results):
        return
    pending, state.finished = state.results[state.finished :], len(state.results)
    failed = response is None or gating.failed_response(response.status_code)
    if failed and conf.settings().policy.refund_on_error and state.customer is not None:
        counted = [item for result in pending for item in result.counted]
        if counted:
            conf.client().drive(gating.refund(state.customer, counted))
        return
    if response is None or any(r.answer is not None for r in state.results):
        return
    decision = http_problem.tightest(state.decisions)
    if decision is not None:
        for name, value in http_problem.ratelimit_headers(decision, datetime.now(UTC)).items():
            response[name] = value
