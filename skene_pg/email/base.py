"""What every email provider shares: the message, the provider protocol, the errors the
worker maps to job outcomes, and a client-side rate limiter. No SQL, no environment."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol


@dataclass(frozen=True)
class Email:
    """One rendered email. `idempotency_key` is the job's: stable across attempts, so a
    retry after a crash is recognised as the same email."""

    sender: str
    to: str
    subject: str
    html: str
    text: str
    idempotency_key: str
    headers: dict[str, str] = field(default_factory=dict)


class EmailProvider(Protocol):
    """Sends one email; raises one of the errors below when it could not."""

    name: str

    def send(self, email: Email) -> str | None:
        """Deliver `email`; returns the provider's message id when it has one."""
        ...

    def close(self) -> None: ...


class EmailError(Exception):
    """Base of provider errors; `reason` is what gets recorded on the job."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TransientEmailError(EmailError):
    """May work later (5xx, timeout, connection refused): retried with backoff and
    counted against the job's max_attempts."""


class DeferEmail(EmailError):
    """Not the email's fault and not a failure (rate limited, the provider still busy
    with this idempotency key, a rejected API key): tried again after `retry_after`
    seconds without using up an attempt."""

    def __init__(self, reason: str, retry_after: float):
        super().__init__(reason)
        self.retry_after = retry_after


class RateLimited(DeferEmail):
    """429: the provider said when to come back (Retry-After)."""


class PermanentEmailError(EmailError):
    """Will never work as it is (validation error, bad address): the job goes to dead
    with the reason."""


class ConfigError(ValueError):
    """A provider cannot start: a setting is missing or wrong; the message names it."""


class RateLimiter:
    """Spaces requests to at most `per_second` (0 = no limit), shared by all sender
    threads; `pause(seconds)` holds everyone back after a 429."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.interval == 0.0 and self._next <= now:
                return
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


_HEADER_SAFE = re.compile(r"[\r\n]+")


def one_line(value: str) -> str:
    """Header values never carry line breaks (no header injection from data)."""
    return _HEADER_SAFE.sub(" ", value).strip()


def message_id(idempotency_key: str, sender: str) -> str:
    """A Message-ID derived from the idempotency key: the same email always has the
    same id, so receiving systems can recognise a re-send."""
    domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else "skene-pg.invalid"
    local = re.sub(r"[^A-Za-z0-9._-]", "-", idempotency_key)
    return f"<{local}@{domain}>"


def to_mime(email: Email) -> EmailMessage:
    """The email as a MIME message (text, with an HTML alternative)."""
    msg = EmailMessage()
    msg["From"] = one_line(email.sender)
    msg["To"] = one_line(email.to)
    msg["Subject"] = one_line(email.subject)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(email.idempotency_key, email.sender)
    for name, value in email.headers.items():
        msg[name] = one_line(value)
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return msg
