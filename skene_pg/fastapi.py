"""FastAPI and Starlette: usage limits in a few lines.

    app.add_middleware(SkeneGate, database_url=DATABASE_URL, customer=customer_of)

    @app.post("/exports", dependencies=[Depends(gate("exports"))])
    async def export(): ...

SkeneGate is plain ASGI middleware: it gates every request that matches a feature's
`match` patterns, answers a blocked one with the 402 problem every skene_pg
integration gives (http_problem.py), adds RateLimit headers to allowed responses,
and, when asked, gives the count back when the app raises or answers 5xx.
`Depends(gate("feature"))` gates one route; with SkeneGate installed it shares its
client, customer function and policy, and its 402 is rendered by the middleware.
Without the middleware, pass `skene=` and `customer=` to gate() and register
`app.add_exception_handler(GateBlocked, problem_response)`.

`customer(request)` returns the customer id or None (sync or async). It runs before
the route and must not read the request body.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skene_pg import db, gating, http_problem
from skene_pg.calls import Decision
from skene_pg.client import AsyncSkene
from skene_pg.errors import SkeneError
from skene_pg.gates import Gate, GateCache, GateTable
from skene_pg.gating import GateResult, Policy
from skene_pg.http_problem import HttpAnswer

CustomerOf = Callable[[Request], "str | Awaitable[str | None] | None"]
SCOPE_KEY = "skene"  # scope["skene"]: the RequestGate of the request


class GateBlocked(Exception):
    """Raised by a gate() dependency to answer the request with `answer` (a 402,
    401 or 503); SkeneGate or `problem_response` turns it into the response."""

    def __init__(self, answer: HttpAnswer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def to_response(answer: HttpAnswer) -> Response:
    headers = {k: v for k, v in answer.headers.items() if k != "Content-Type"}
    return Response(
        answer.content(),
        status_code=answer.status,
        headers=headers,
        media_type=answer.headers.get("Content-Type"),
    )


async def problem_response(request: Request, exc: Exception) -> Response:
    """Exception handler for GateBlocked, for apps that use gate() without SkeneGate."""
    assert isinstance(exc, GateBlocked)
    return to_response(exc.answer)


@dataclass
class Gatekeeper:
    """What gating needs, shared by SkeneGate and gate(): client, customer, policy and
    the gates' cache."""

    skene: AsyncSkene
    customer: CustomerOf
    policy: Policy
    cache: GateCache

    async def customer_of(self, request: Request) -> str | None:
        found = self.customer(request)
        return await found if inspect.isawaitable(found) else found

    async def table(self) -> GateTable | HttpAnswer | None:
        """The gates, or the answer when they can't be read (None: let through)."""
        try:
            return await self.skene.drive(gating.read_table(self.cache))
        except SkeneError as exc:
            return gating.failed_answer(exc, self.policy)

    async def run(
        self, request: Request, state: RequestGate, gates: list[Gate], amount: int
    ) -> GateResult:
        customer = await self.customer_of(request)
        result = await self.skene.drive(gating.gate_request(gates, customer, amount, self.policy))
        state.customer = customer
        state.results.append(result)
        return result

    async def finish(self, state: RequestGate, failed: bool) -> None:
        """Give back what a failed request counted, when the policy says so."""
        pending, state.finished = state.results[state.finished :], len(state.results)
        if failed and self.policy.refund_on_error and state.customer is not None:
            counted = [item for result in pending for item in result.counted]
            if counted:
                await self.skene.drive(gating.refund(state.customer, counted))


@dataclass
class RequestGate:
    """What the gate did for one request (request.scope["skene"])."""

    keeper: Gatekeeper
    customer: str | None = None
    results: list[GateResult] = field(default_factory=list)
    finished: int = 0

    @property
    def decisions(self) -> list[Decision]:
        return [d for r in self.results for d in r.decisions]

    def headers(self) -> list[tuple[bytes, bytes]]:
        if any(r.answer is not None for r in self.results):
            return []
        decision = http_problem.tightest(self.decisions)
        if decision is None:
            return []
        found = http_problem.ratelimit_headers(decision, datetime.now(UTC))
        return [(k.lower().encode(), v.encode()) for k, v in found.items()]


def _signed_in(request: Request) -> str | None:
    # the default customer: an authenticated user's identity (AuthenticationMiddleware)
    user = request.scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.identity)
    return None


class SkeneGate:
    """ASGI middleware: `app.add_middleware(SkeneGate, database_url=..., customer=...)`.

    database_url or skene (an AsyncSkene of yours); customer: request -> id or None;
    anonymous "pass" | "401"; on_error "503" | "open"; refund_on_error: give the count
    back when the app raises or answers 5xx; gates_ttl: seconds skene.gates() is
    cached; pool: min_size, max_size, timeout of the pool made for database_url."""

    def __init__(
        self,
        app: ASGIApp,
        database_url: str | None = None,
        *,
        skene: AsyncSkene | None = None,
        customer: CustomerOf = _signed_in,
        anonymous: str = "pass",
        on_error: str = "503",
        refund_on_error: bool = False,
        gates_ttl: float = 10.0,
        pool: dict[str, Any] | None = None,
    ) -> None:
        self._owns_client = skene is None
        if skene is None:
            settings = {"timeout": db.POOL_TIMEOUT, **(pool or {})}
            skene = AsyncSkene(db.require_url(database_url), **settings)
        self.app = app
        self.keeper = Gatekeeper(
            skene, customer, Policy(anonymous, on_error, refund_on_error), GateCache(gates_ttl)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = RequestGate(self.keeper)
        scope[SCOPE_KEY] = state
        table = await self.keeper.table()
        if isinstance(table, HttpAnswer):
            await to_response(table)(scope, receive, send)
            return
        gates = table.matching(scope["method"], scope["path"]) if table is not None else []
        if gates:
            result = await self.keeper.run(Request(scope), state, gates, 1)
            if result.answer is not None:
                await to_response(result.answer)(scope, receive, send)
                return

        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                failed = gating.failed_response(status)
                if failed:
                    # before the client sees the 5xx: by then its count is back
                    await self.keeper.finish(state, failed=True)
                else:
                    message["headers"] = [*message.get("headers", []), *state.headers()]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except GateBlocked as blocked:
            if status:  # the response has begun: nothing can replace it
                raise
            await to_response(blocked.answer)(scope, receive, send)
            return
        except BaseException:
            await self.keeper.finish(state, failed=True)
            raise
        await self.keeper.finish(state, failed=gating.failed_response(status))

    def _closing(self, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self._owns_client:
                await self.keeper.skene.close()
            await send(message)

        return send_closing


def gate(
    feature: str,
    amount: int | Callable[[Request], int] = 1,
    *,
    skene: AsyncSkene | None = None,
    customer: CustomerOf | None = None,
    policy: Policy | None = None,
) -> Callable[[Request], Awaitable[Decision | None]]:
    """A dependency that gates one route: `Depends(gate("exports"))`. It returns the
    decision (None when the request was let through uncounted)."""
    own: Gatekeeper | None = None
    if skene is not None:
        own = Gatekeeper(skene, customer or _signed_in, policy or Policy(), GateCache())

    async def dependency(request: Request) -> Decision | None:
        state = request.scope.get(SCOPE_KEY)
        keeper = own or (state.keeper if isinstance(state, RequestGate) else None)
        if keeper is None:
            raise RuntimeError(
                f"gate({feature!r}) needs the SkeneGate middleware, or skene= and customer="
            )
        if not isinstance(state, RequestGate):
            state = RequestGate(keeper)
            request.scope[SCOPE_KEY] = state
        counted = next((d for d in state.decisions if d.feature == feature), None)
        if counted is not None:
            return counted  # the middleware's match counted this request already: once
        table = await keeper.table()
        if isinstance(table, HttpAnswer):
            raise GateBlocked(table)
        target = (table.get(feature) if table is not None else None) or Gate(
            feature, feature, (), None, None
        )
        units = amount(request) if callable(amount) else amount
        result = await keeper.run(request, state, [target], units)
        if result.answer is not None:
            raise GateBlocked(result.answer)
        return result.decisions[0] if result.decisions else None

    return dependency


__all__ = ["GateBlocked", "RequestGate", "SkeneGate", "gate", "problem_response", "to_response"]
