"""A loopback stand-in for the Stripe API, for the real `stripe` SDK pointed at it with
`StripeClient(base_addresses={"api": fake.url})`. Nothing leaves the machine.

- GET /v1/subscriptions?customer=...: the customer's subscriptions as set by the test
  (the truth "now" that the worker re-fetches);
- POST /v1/billing/meter_events: records meter events. Like Stripe it replays the
  first answer for a repeated Idempotency-Key, and refuses a second event with the
  same identifier.

It can be told to fail the next requests with 500 or 429 (`then`).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    status: int = 0


class FakeStripe:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscriptions: dict[str, list[dict[str, Any]]] = {}
        self.meter_events: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.script: deque[str] = deque()
        self._replies: dict[str, tuple[int, dict[str, Any]]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                query = url.query if method == "GET" else body
                params = {k: v[-1] for k, v in parse_qs(query).items()}
                status, answer = fake._handle(
                    method, url.path, params, self.headers.get("Idempotency-Key")
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeStripe:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- control ---------------------------------------------------------------------
    def then(self, action: str) -> FakeStripe:
        """Answer the next request with `action`: "500" or "429"."""
        with self.lock:
            self.script.append(action)
        return self

    def set_subscription(
        self,
        customer: str,
        sub_id: str,
        status: str,
        price: str = "price_pro",
        created: int = 1_700_000_000,
        period: tuple[int, int] = (1_700_000_000, 1_702_592_000),
    ) -> dict[str, Any]:
        """Put (or replace) a subscription of `customer`; returns it."""
        sub = {
            "id": sub_id,
            "object": "subscription",
            "customer": customer,
            "status": status,
            "created": created,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{sub_id}",
                        "object": "subscription_item",
                        "price": {"id": price, "object": "price"},
                        "current_period_start": period[0],
                        "current_period_end": period[1],
                    }
                ],
            },
        }
        with self.lock:
            subs = [s for s in self.subscriptions.get(customer, []) if s["id"] != sub_id]
            self.subscriptions[customer] = [*subs, sub]
        return sub

    def sent(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    # -- the API ---------------------------------------------------------------------
    def _handle(
        self, method: str, path: str, params: dict[str, str], key: str | None
    ) -> tuple[int, dict[str, Any]]:
        request = Request(method, path, params, key)
        with self.lock:
            self.requests.append(request)
            action = self.script.popleft() if self.script else "ok"
        if action == "500":
            request.status = 500
            return 500, _error("api_error", "Internal error")
        if action == "429":
            request.status = 429
            return 429, _error("rate_limit_error", "Too many requests")
        if method == "GET" and path == "/v1/subscriptions":
            with self.lock:
                data = list(self.subscriptions.get(params.get("customer", ""), []))
            if params.get("status") != "all":
                data = [s for s in data if s["status"] not in ("canceled", "incomplete_expired")]
            request.status = 200
            return 200, {"object": "list", "data": data, "has_more": False, "url": path}
        if method == "POST" and path == "/v1/billing/meter_events":
            with self.lock:
                if key is not None and key in self._replies:
                    request.status, answer = self._replies[key]
                    return request.status, answer
                identifier = params.get("identifier", "")
                if any(e["identifier"] == identifier for e in self.meter_events):
                    reply = (
                        400,
                        _error(
                            "invalid_request_error",
                            f"An event with identifier {identifier} already exists.",
                        ),
                    )
                else:
                    event = {
                        "object": "billing.meter_event",
                        "event_name": params.get("event_name"),
                        "identifier": identifier,
                        "timestamp": int(params.get("timestamp", "0")),
                        "payload": {
                            "stripe_customer_id": params.get("payload[stripe_customer_id]"),
                            "value": params.get("payload[value]"),
                        },
                    }
                    self.meter_events.append(event)
                    reply = (200, event)
                if key is not None:
                    self._replies[key] = reply
            request.status = reply[0]
            return reply
        request.status = 404
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path})")


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}
