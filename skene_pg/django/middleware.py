"""GateMiddleware: gates every request that matches a feature's `match` patterns.

It gates in process_view, which runs after every earlier middleware's process_request
and process_view: AuthenticationMiddleware has set request.user, and
CsrfViewMiddleware has refused forged requests before they could be counted. Put it
after both in MIDDLEWARE (a system check warns otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from skene_pg.django import http
from skene_pg.http_problem import HttpAnswer


class GateMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        http.attach(request)  # request.skene exists in every view, gated or not
        response = self.get_response(request)
        http.finish(request, response)
        return response

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        table = http.gate_table()
        if table is None:  # the gates could not be read and the policy fails open
            return None
        if isinstance(table, HttpAnswer):
            return http.to_response(table)
        # A view decorated with @gate counts its own features: never twice.
        own: frozenset[str] = getattr(view_func, "skene_features", frozenset())
        gates = [
            gate
            for gate in table.matching(request.method or "GET", request.path_info)
            if gate.feature not in own
        ]
        if not gates:
            return None
        return http.run(request, gates, 1)
