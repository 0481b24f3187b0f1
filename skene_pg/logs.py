"""Logging for long-running commands: one line per event with the job's fields
(job_id, kind, attempt, outcome, duration_ms), as text or JSON; never payloads,
keys or email addresses (`scrub`)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

FIELDS = ("job_id", "kind", "attempt", "outcome", "duration_ms")
_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


def scrub(text: str | None, limit: int = 300) -> str:
    """An error reason as it may appear in logs: no email addresses, bounded length."""
    if not text:
        return ""
    text = _ADDRESS.sub("<address>", text)
    return text if len(text) <= limit else text[:limit] + "…"


def first_line(exc: BaseException) -> str:
    """An error's first line, or its class when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(
            f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None
        )
        return f"{line} {extra}" if extra else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None})
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if as_json
        else _KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("skene_pg")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
