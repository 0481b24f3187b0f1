"""A small FastAPI app for tests/integrations: /api/** is gated by SkeneGate (the
api_calls feature's match), /exports by Depends(gate("exports")), /reports asks the
client itself inside the app's own transaction. The customer is the X-Customer
header, as an API key would name it."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from skene_pg import Decision
from skene_pg.fastapi import SkeneGate, gate


def customer_of(request: Request) -> str | None:
    return request.headers.get("x-customer")


class PaymentRequired(Exception):
    pass


def make_app(database_url: str, **gate_options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SkeneGate, database_url=database_url, customer=customer_of, **gate_options)

    @app.post("/api/calls")
    async def api_call(request: Request) -> dict[str, Any]:
        return {"ok": True, "remaining": [d.remaining for d in request.scope["skene"].decisions]}

    @app.post("/api/boom")
    async def boom() -> None:
        raise RuntimeError("the route failed after the gate let it through")

    @app.post("/api/fail")
    async def fail() -> JSONResponse:
        return JSONResponse({"ok": False}, status_code=502)

    @app.get("/pages/home")
    async def home() -> PlainTextResponse:
        return PlainTextResponse("not gated")

    @app.get("/beta/{rest:path}")
    async def beta(rest: str) -> PlainTextResponse:
        return PlainTextResponse("beta")

    @app.post("/exports")
    async def export(
        decision: Annotated[Decision | None, Depends(gate("exports"))],
    ) -> dict[str, Any]:
        return {"exported": True, "used": decision.used if decision else None}

    @app.post("/api/exports", dependencies=[Depends(gate("api_calls"))])
    async def counted_once() -> dict[str, Any]:
        return {"ok": True}  # matched by the middleware and depending on the gate

    @app.get("/reports")
    async def report(request: Request) -> dict[str, Any]:
        # The app's own transaction writes, then the gate is asked; a block raises and
        # the transaction rolls back. The gate's own writes must survive that.
        async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
            await conn.execute("INSERT INTO app_audit (what) VALUES ('report')")
            skene = request.scope["skene"].keeper.skene
            decision = await skene.check_and_increment(customer_of(request), "reports")
            if not decision.allowed:
                raise PaymentRequired(decision.reason)
        return {"used": decision.used}

    return app
