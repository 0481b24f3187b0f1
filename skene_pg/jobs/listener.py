"""The listener thread: holds the one LISTEN connection (TCP keepalives, reconnect
with backoff) and only wakes the main thread. It gives LISTEN up, once and saying so,
when the connection turns out to be a transaction pooler."""

from __future__ import annotations

import logging

import psycopg

from skene_pg import db
from skene_pg.jobs import protocol as q
from skene_pg.jobs.runtime import CONNECTION_ERRORS, Backoff, WorkerCore
from skene_pg.logs import scrub

log = logging.getLogger("skene_pg.jobs.worker")


class Listening(WorkerCore):
    def _listener(self) -> None:
        backoff = Backoff(cap=self.settings.reconnect_max)
        checked = False  # whether the LISTEN connection was checked for a pooler
        while not self._stopping.is_set():
            conn: psycopg.Connection | None = None
            try:
                conn = self._connect("listen", self.listen_url)
                if not checked:
                    checked = True
                    if not self._may_listen(conn):
                        self.polling_only.set()
                        return
                conn.execute(f"LISTEN {q.CHANNEL}")
                self.listening.set()
                backoff.reset()
                self._notified()  # notifications may have been missed while away
                while not self._stopping.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        self._notified()
            except CONNECTION_ERRORS as exc:
                self.listening.clear()
                delay = backoff.next()
                log.warning(
                    "LISTEN connection lost (%s): reconnecting in %.1fs",
                    scrub(str(exc).strip()),
                    delay,
                )
                self._stopping.wait(delay)
            finally:
                self.listening.clear()
                self._close(conn)

    def _may_listen(self, conn: psycopg.Connection) -> bool:
        """False when LISTEN would go through a pooler nobody vouched for: in
        transaction mode the LISTEN lands on a server process that serves other
        clients next, and notifications never reach us (PgBouncer drops them)."""
        if not db.through_pooler(conn):
            return True
        if self.listen_url is not None:
            log.warning(
                "the LISTEN database URL (SKENE_LISTEN_DATABASE_URL) goes through a "
                "connection pooler: notifications arrive only if it runs in session mode; "
                "new jobs are picked up by polling every %.1fs otherwise",
                self.settings.poll_interval,
            )
            return True
        log.warning(
            "the database URL goes through a connection pooler (PgBouncer or similar), "
            "where LISTEN hears no notifications: not listening, polling every %.1fs "
            "instead. Set SKENE_LISTEN_DATABASE_URL (--listen-database-url) to a direct "
            "connection to pick up new jobs at once",
            self.settings.poll_interval,
        )
        return False

    def _notified(self) -> None:
        self._signals += 1
        self._more = True
        self._wake.set()
