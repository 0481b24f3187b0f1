"""Views of the test project. /api/** is gated by GateMiddleware (the api_calls
feature's match pattern); the others by @gate or by a call to the client."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.authentication import BaseAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from skene_pg.django import client, gate


def audit(request: HttpRequest, what: str) -> None:
    """A row in the app's own table, inside the request's transaction (ATOMIC_REQUESTS)."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO app_audit (what) VALUES (%s)", [what])


def api_call(request: HttpRequest) -> HttpResponse:
    audit(request, "api_call")
    remaining = [d.remaining for d in request.skene.decisions]  # type: ignore[attr-defined]
    return JsonResponse({"ok": True, "remaining": remaining})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed after the gate let it through")


def fail(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": False}, status=502)


@gate("api_calls")
def gated_twice(request: HttpRequest) -> HttpResponse:
    """Matched by the middleware and decorated: counted once."""
    return JsonResponse({"ok": True})


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("not gated")


def beta(request: HttpRequest, rest: str) -> HttpResponse:
    return HttpResponse("beta")


@gate("exports", amount=lambda request: int(request.GET.get("n", "1")))
def export(request: HttpRequest) -> HttpResponse:
    if request.GET.get("fail"):
        raise RuntimeError("export failed")
    return JsonResponse({"exported": True})


class PaymentRequired(Exception):
    pass


def atomic_report(request: HttpRequest) -> HttpResponse:
    """Writes to the app's table, then asks the gate itself; a block raises, so the
    request's transaction rolls back. The gate's own writes must survive that."""
    audit(request, "report")
    decision = client().check_and_increment(str(request.user.pk), "reports")
    if not decision.allowed:
        raise PaymentRequired(decision.reason)
    return JsonResponse({"used": decision.used})


class HeaderAuthentication(BaseAuthentication):
    """DRF authentication by an X-User header (as a token would be): Django's
    middleware never sees this user, only DRF does."""

    def authenticate(self, request: Any) -> tuple[Any, None] | None:
        username = request.META.get("HTTP_X_USER")
        if not username:
            return None
        return get_user_model().objects.get(username=username), None


class DrfExports(APIView):
    authentication_classes = [HeaderAuthentication]  # noqa: RUF012
    permission_classes: list[Any] = []  # noqa: RUF012

    @gate("exports")
    def post(self, request: Any) -> Response:
        return Response({"exported": True, "user": getattr(request.user, "username", None)})
