"""The outbox: one .eml file per email in a folder, for local runs, the demo and
tests. Files are named by the idempotency key and written atomically (a temporary file
renamed into place), so a re-send overwrites its file rather than adding another."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from skene_pg.email.base import ConfigError, Email, TransientEmailError, to_mime


def file_name(idempotency_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", idempotency_key) + ".eml"


class OutboxProvider:
    name = "outbox"

    def __init__(self, directory: str | Path | None):
        if not directory:
            raise ConfigError(
                "SKENE_OUTBOX_DIR is not set: the outbox email provider needs "
                "a folder to write .eml files to"
            )
        self.directory = Path(directory)

    def send(self, email: Email) -> str | None:
        message = to_mime(email)
        target = self.directory / file_name(email.idempotency_key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(message.as_bytes())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise TransientEmailError(f"outbox: cannot write {target}: {exc}") from exc
        return str(message["Message-ID"])

    def close(self) -> None:
        pass
