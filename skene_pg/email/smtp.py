"""SMTP: any mail server or relay, from a URL such as
smtp://user:password@mail.example.com:587 (STARTTLS when the server offers it) or
smtps://user:password@mail.example.com:465 (TLS from the start).

SMTP has no idempotency keys; the Message-ID is derived from the job's key, so a
re-send after a crash carries the same Message-ID and mail clients show it once.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from skene_pg.email.base import (
    ConfigError,
    Email,
    PermanentEmailError,
    RateLimiter,
    TransientEmailError,
    to_mime,
)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    implicit_tls: bool
    starttls: str  # "auto" (when offered), "require", "off"
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str | None) -> SmtpSettings:
        if not url:
            raise ConfigError(
                "SKENE_SMTP_URL is not set: the smtp email provider needs it, "
                "e.g. smtp://user:password@mail.example.com:587"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                f"SKENE_SMTP_URL must look like smtp://[user:password@]host[:port] "
                f"or smtps://..., got scheme {parts.scheme!r}"
            )
        implicit = parts.scheme == "smtps"
        query = parse_qs(parts.query)
        starttls = (query.get("starttls") or ["auto"])[0]
        if starttls not in ("auto", "require", "off"):
            raise ConfigError(
                f"SKENE_SMTP_URL: starttls must be auto, require or off, got {starttls!r}"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            implicit_tls=implicit,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpProvider:
    name = "smtp"

    def __init__(self, url: str | None, *, timeout: float = 10.0, rate_limit: float = 0.0):
        self.settings = SmtpSettings.from_url(url)
        self.timeout = timeout
        self.limiter = RateLimiter(rate_limit)
        self._local = threading.local()  # one open SMTP session per sender thread
        self._opened: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if s.implicit_tls:
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=self.timeout)
            client.ehlo()
            if s.starttls == "require" or (s.starttls == "auto" and client.has_extn("starttls")):
                client.starttls(context=context)
                client.ehlo()
        if s.username:
            client.login(s.username, s.password or "")
        with self._lock:
            self._opened.append(client)
        return client

    def _client(self) -> smtplib.SMTP:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()

    def send(self, email: Email) -> str | None:
        message = to_mime(email)
        self.limiter.acquire()
        for attempt in (1, 2):  # a kept-open session may have been closed by the server
            try:
                self._client().send_message(message)
                return str(message["Message-ID"])
            except smtplib.SMTPServerDisconnected as exc:
                self._drop_client()
                if attempt == 2:
                    raise TransientEmailError(f"smtp: server disconnected: {exc}") from exc
            except smtplib.SMTPRecipientsRefused as exc:
                self._drop_client()
                code, reply = next(iter(exc.recipients.values()))
                raise _classify(code, reply, "recipient refused") from exc
            except smtplib.SMTPResponseException as exc:
                self._drop_client()
                raise _classify(exc.smtp_code, exc.smtp_error, "rejected") from exc
            except (OSError, smtplib.SMTPException) as exc:
                self._drop_client()
                raise TransientEmailError(f"smtp: {type(exc).__name__}: {exc}") from exc
        return None  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for client in opened:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()


def _classify(code: int, reply: bytes | str, what: str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    reason = f"smtp {code} {what}: {text}".strip()
    # 5xx is a permanent refusal (no such mailbox, policy); 4xx is "try again later".
    if 500 <= code < 600:
        return PermanentEmailError(reason)
    return TransientEmailError(reason)
