"""The service's audit writer for memoized answers: repeats answered in milliseconds, still logged on the ledger.

Why: a repeated question is answered by the library's memo (``dp_sql``: one read of the ledger's properties
and of the release table, no Spark, no tmlt, no scan of the ledger's events), but logging its ``memoized``
ledger event is an Iceberg commit, which would double an interactive repeat's latency. The service hands that
event to :class:`MemoLog` (``dp_sql(..., memo_log=...)``), which writes the events from one background thread
in arrival order, so the answer does not wait for the commit. Earlier versions kept a second, per-process
answer cache beside the library's memo; the memo is now cheap enough to be the only one.

:meth:`MemoLog.flush` waits for the queued events: the releases and budget endpoints call it, so a principal
always reads their own events; the service drains it on shutdown. If the process is killed first, those audit
events are lost (the answers were free and already released, nothing is charged for them); failures to write
them are logged.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy.dp.ledger import Ledger

log = logging.getLogger("iceberg_privacy.service")


class MemoLog:
    """Writes ``memoized`` ledger events in the background, in order; :meth:`flush` waits for them.

    An instance is a ``memo_log`` for :func:`~iceberg_privacy.dp_sql`: calling it queues one event (the
    arguments of :meth:`Ledger.record` after the event name)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._queue: queue.Queue[tuple[tuple[Any, ...], dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="iceberg-privacy-memo-log", daemon=True)
        self._thread.start()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        detail = {**(kwargs.get("detail") or {}), "served_by": "service"}
        self._queue.put((args, {**kwargs, "detail": detail}))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                args, kwargs = item
                source = tuple(kwargs["source"])
                Ledger(self.catalog, source[:-1]).record("memoized", *args, **kwargs)
            except Exception:  # noqa: BLE001 - an audit event failed: say so in the service's log, keep serving
                log.exception("could not log a memoized answer on the ledger")
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued event is written (or failed and was logged)."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)
