"""@gate("feature"): gate one view, with or without GateMiddleware.

    @gate("exports", amount=lambda request: len(request.POST.getlist("ids")))
    def export(request): ...

Works on function views, on methods of class-based views and DRF views (it finds the
request among the arguments; on DRF it runs after DRF's authentication and CSRF
check, so token-authenticated requests have their user). The count is given back
when the view raises or answers 5xx and REFUND_ON_ERROR is on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from skene_pg.django import http
from skene_pg.gates import Gate
from skene_pg.http_problem import HttpAnswer

Amount = int | Callable[[Any], int]


def _request_of(args: tuple[Any, ...]) -> Any:
    # A function view's first argument; a method's second (DRF's Request proxies an
    # HttpRequest and has META too).
    for arg in args[:2]:
        if isinstance(arg, HttpRequest) or (hasattr(arg, "META") and hasattr(arg, "method")):
            return arg
    raise TypeError("@gate: the view was not called with a request")


def gate(feature: str, amount: Amount = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def gated(*args: Any, **kwargs: Any) -> Any:
            request = _request_of(args)
            table = http.gate_table()
            if isinstance(table, HttpAnswer):
                return http.to_response(table)
            found = table.get(feature) if table is not None else None
            # An unread table (failing open) or a feature with no row yet: gate anyway;
            # the database names an unknown feature in its error.
            target = found or Gate(feature, feature, (), None, None)
            units = amount(request) if callable(amount) else amount
            refused = http.run(request, [target], units)
            if refused is not None:
                return refused
            try:
                response = view(*args, **kwargs)
            except BaseException:
                http.finish(request, None)
                raise
            http.finish(request, response)
            return response

        gated.skene_features = frozenset(  # type: ignore[attr-defined]
            {feature, *getattr(view, "skene_features", ())}
        )
        return gated

    return decorate
