"""A loopback stand-in for the Resend API (POST /emails), for the real `resend` SDK
pointed at it with `resend.api_url` / RESEND_API_URL. Nothing leaves the machine.

Like Resend it dedupes by Idempotency-Key: the same key and payload again replays the
first answer without a second delivery; the same key while the first request is still
being processed is a 409 concurrent_idempotent_requests; the same key with another
payload is a 409 invalid_idempotent_request. It can be told to delay, to fail with
500, to answer 429 with Retry-After, to answer 422, and to hang past the client's
timeout. Tests in this process use the Python API; other processes (the benchmark)
can read the state at GET /_test/state and script it with POST /_test/script.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    at: float  # time.time() when the request arrived
    key: str | None  # Idempotency-Key header
    to: list[str]
    subject: str | None
    status: int = 0  # what we answered (0 while processing)


@dataclass
class Delivery:
    at: float
    key: str | None
    id: str
    to: list[str]
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    sender: str = ""


class FakeResend:
    def __init__(self, delay: float = 0.0):
        self.delay = delay  # seconds each accepted email takes to process
        self.lock = threading.Lock()
        self.script: deque[tuple[str, float]] = deque()  # (action, seconds) per request
        self.received: list[Received] = []
        self.deliveries: list[Delivery] = []
        self.api_keys: set[str] = set()
        self._done: dict[str, tuple[str, str]] = {}  # key -> (payload json, email id)
        self._in_progress: set[str] = set()
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeResend:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeResend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def then(self, action: str, seconds: float = 0.0) -> FakeResend:
        """Answer the next unscripted request with `action`: "500", "422", "429"
        (Retry-After: seconds), "timeout" (hang `seconds`, deliver nothing) or "ok"."""
        with self.lock:
            self.script.append((action, seconds))
        return self

    def delivered_keys(self) -> list[str | None]:
        with self.lock:
            return [d.key for d in self.deliveries]

    def state(self, since: int = 0) -> dict[str, Any]:
        """Requests and deliveries from number `since` on (both lists count from 0)."""
        with self.lock:
            return {
                "received": [asdict(r) for r in self.received[since:]],
                "deliveries": [
                    {"at": d.at, "key": d.key, "to": d.to} for d in self.deliveries[since:]
                ],
            }

    # -- the API ---------------------------------------------------------------------
    def _handle_email(
        self, key: str | None, body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        payload = json.loads(body or b"{}")
        record = Received(
            at=time.time(),
            key=key,
            to=list(payload.get("to") or []),
            subject=payload.get("subject"),
        )
        with self.lock:
            self.received.append(record)
            action, seconds = self.script.popleft() if self.script else ("ok", 0.0)
        status, answer, headers = self._answer(action, seconds, key, payload, body)
        record.status = status
        return status, answer, headers

    def _answer(
        self, action: str, seconds: float, key: str | None, payload: dict[str, Any], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if action == "500":
            return 500, _error(500, "application_error", "Internal server error"), {}
        if action == "422":
            return (
                422,
                _error(
                    422,
                    "validation_error",
                    "Invalid `to` field. The email address needs to follow the "
                    "`email@example.com` format.",
                ),
                {},
            )
        if action == "429":
            return (
                429,
                _error(429, "rate_limit_exceeded", "Too many requests"),
                {"Retry-After": f"{seconds:g}"},
            )
        if action == "timeout":
            time.sleep(seconds)
            return 504, _error(504, "timeout", "gateway timeout"), {}
        if not payload.get("from") or not payload.get("to") or not payload.get("subject"):
            return (
                422,
                _error(422, "missing_required_field", "Missing `from`, `to` or `subject`"),
                {},
            )
        canonical = json.dumps(payload, sort_keys=True)
        with self.lock:
            if key is not None and key in self._in_progress:
                return (
                    409,
                    _error(
                        409,
                        "concurrent_idempotent_requests",
                        "Same idempotency key used while original request is still in progress.",
                    ),
                    {},
                )
            if key is not None and key in self._done:
                done_payload, email_id = self._done[key]
                if done_payload != canonical:
                    return (
                        409,
                        _error(
                            409,
                            "invalid_idempotent_request",
                            "Same idempotency key used with a different request payload.",
                        ),
                        {},
                    )
                return 200, {"id": email_id}, {}
            if key is not None:
                self._in_progress.add(key)
        if self.delay:
            time.sleep(self.delay)
        email_id = str(uuid.uuid4())
        with self.lock:
            self.deliveries.append(
                Delivery(
                    at=time.time(),
                    key=key,
                    id=email_id,
                    to=list(payload["to"]),
                    subject=payload["subject"],
                    html=payload.get("html") or "",
                    text=payload.get("text") or "",
                    headers=dict(payload.get("headers") or {}),
                    sender=payload["from"],
                )
            )
            if key is not None:
                self._in_progress.discard(key)
                self._done[key] = (canonical, email_id)
        return 200, {"id": email_id}, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's session expects
            disable_nagle_algorithm = True  # headers and body are separate small writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                # the client may have given up (a timeout test)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.end_headers()
                    self.wfile.write(data)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/_test/state":
                    since = int(query.removeprefix("since=") or 0) if query else 0
                    self._reply(200, fake.state(since))
                else:
                    self._reply(404, _error(404, "not_found", "no such route"))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/_test/script":
                    for action, seconds in json.loads(body):
                        fake.then(action, seconds)
                    self._reply(200, {})
                    return
                if self.path != "/emails":
                    self._reply(404, _error(404, "not_found", "no such route"))
                    return
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
                    self._reply(401, _error(401, "missing_api_key", "Missing API key"))
                    return
                with fake.lock:
                    fake.api_keys.add(auth.removeprefix("Bearer "))
                status, answer, headers = fake._handle_email(
                    self.headers.get("Idempotency-Key"), body
                )
                self._reply(status, answer, headers)

        return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many workers connect at once; the default 5 resets some
    daemon_threads = True


def _error(status: int, name: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "name": name, "message": message}


def main() -> None:  # pragma: no cover - `python -m tests.worker.fake_resend` for the bench
    import sys

    fake = FakeResend(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0).start()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
