"""Resend, through the official `resend` SDK.

The job's idempotency key goes out as Resend's Idempotency-Key, so a retry after a
crash or a timeout is recognised by Resend and never delivered twice. Emails are sent
one request each, not through the batch endpoint: a batch has one idempotency key for
the whole batch, and after a crash the retried batch would be made of different jobs,
so per-job keys are what make "never twice" hold.
"""

from __future__ import annotations

import json as json_lib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import resend
import urllib3
from resend.exceptions import ResendError
from resend.http_client import HTTPClient

from skene_pg.email.base import (
    ConfigError,
    DeferEmail,
    Email,
    PermanentEmailError,
    RateLimited,
    RateLimiter,
    TransientEmailError,
)

DEFAULT_API_URL = "https://api.resend.com"
DEFAULT_RATE_LIMIT = 2.0  # requests/s: Resend's default team limit
AUTH_RETRY_AFTER = 60.0  # a rejected key is the operator's to fix: wait, don't fail jobs


class _PooledClient(HTTPClient):
    """The SDK's HTTP client interface over one thread-safe urllib3 pool of keep-alive
    connections (the SDK's default client opens a new connection per request)."""

    def __init__(self, timeout: float, connections: int = 64):
        self._timeout = urllib3.Timeout(total=timeout)
        self._pool = urllib3.PoolManager(maxsize=connections, block=False, retries=False)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: Any = None,
        files: Any = None,
        data: Any = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if files is not None:
            raise RuntimeError("file uploads are not used by skene-pg")
        body = None
        send_headers = dict(headers)
        if data is not None:
            body = urlencode(data).encode()
            send_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json is not None:
            body = json_lib.dumps(json).encode()
            send_headers["Content-Type"] = "application/json"
        try:
            resp = self._pool.request(
                method.upper(), url, body=body, headers=send_headers, timeout=self._timeout
            )
        except urllib3.exceptions.HTTPError as exc:
            # The SDK wraps anything raised here as a "500 HttpClientError"; our own
            # exception type lets the provider tell a network failure from a real 500.
            raise NetworkFailure(_network_reason(url, exc)) from exc
        return resp.data, resp.status, dict(resp.headers)

    def clear(self) -> None:
        self._pool.clear()


class NetworkFailure(Exception):
    """The request never got an answer: refused, reset, timed out, no such host."""


def _network_reason(url: str, exc: Exception) -> str:
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        what = "connection refused" if "refused" in str(cause).lower() else "cannot connect"
    elif isinstance(cause, urllib3.exceptions.TimeoutError):
        what = "timed out"
    else:
        what = type(cause).__name__
    return f"network failure: {what} at {url}"


def _retry_after(headers: Mapping[str, str], default: float) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return default
    return default


class ResendProvider:
    name = "resend"

    def __init__(
        self,
        api_key: str | None,
        *,
        api_url: str | None = None,
        timeout: float = 10.0,
        rate_limit: float = DEFAULT_RATE_LIMIT,
    ):
        if not api_key:
            raise ConfigError(
                "RESEND_API_KEY is not set: the resend email provider needs "
                "an API key (or choose --email-provider smtp|outbox)"
            )
        self._api_key = api_key
        self._api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self._http = _PooledClient(timeout)
        self.limiter = RateLimiter(rate_limit)

    def _configure_sdk(self) -> None:
        # The SDK keeps its settings in module globals; every provider in a process
        # sets the same ones, just before each call.
        resend.api_key = self._api_key
        resend.api_url = self._api_url
        resend.default_http_client = self._http

    def send(self, email: Email) -> str | None:
        params: dict[str, Any] = {
            "from": email.sender,
            "to": [email.to],
            "subject": email.subject,
            "html": email.html,
            "text": email.text,
            "headers": dict(email.headers),
        }
        self.limiter.acquire()
        self._configure_sdk()
        try:
            sent = resend.Emails.send(
                params,  # type: ignore[arg-type]
                {"idempotency_key": email.idempotency_key},
            )
        except ResendError as exc:
            if isinstance(exc.__context__, NetworkFailure):
                raise TransientEmailError(f"resend {exc.__context__}") from exc
            error = self._classify(exc)
            if error is None:
                return None
            raise error from exc
        return str(sent.get("id")) if isinstance(sent, Mapping) else None

    def _classify(self, exc: ResendError) -> Exception | None:
        """The error to raise for a failed call; None when it means "already sent"."""
        try:
            code = int(exc.code)
        except (TypeError, ValueError):
            code = 500
        reason = f"resend {code} {exc.error_type}: {exc.message}".strip()
        if code == 429:
            wait = _retry_after(exc.headers, 1.0)
            self.limiter.pause(wait)
            return RateLimited(reason, wait)
        if code == 409 and exc.error_type == "concurrent_idempotent_requests":
            # The same key is still in flight (a crashed worker's request): ask again soon.
            return DeferEmail(reason, _retry_after(exc.headers, 1.0))
        if code == 409 and exc.error_type == "invalid_idempotent_request":
            # This key was used already: the email went out on an earlier attempt.
            return None
        if code in (401, 403):
            return DeferEmail(
                f"{reason} (check RESEND_API_KEY and the sending domain)", AUTH_RETRY_AFTER
            )
        if 400 <= code < 500:
            return PermanentEmailError(reason)
        return TransientEmailError(reason)

    def close(self) -> None:
        self._http.clear()
