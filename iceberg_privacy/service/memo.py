"""The service's answer cache: repeated questions answered in milliseconds, still logged on the ledger.

Why: ``dp_sql``'s memo is correct but slow for an interactive service: finding the earlier release scans
the namespace's ledger events, and logging the ``memoized`` event is an Iceberg commit (together a few
hundred milliseconds on a local SQLite catalog, growing with the ledger). The service keeps, per process,
the answers it has served, keyed by everything ``dp_sql``'s memo keys on plus the principal:
``(principal, table, normalized-SQL hash, source snapshot id, budget)``. A released answer is immutable
(it is one snapshot of the release table), so serving it again is exactly what the memo would do; the
key's source snapshot id is read afresh on every request, so new data is never answered from the cache.

The ``memoized`` ledger event (who asked again, when, which release answered) is still written, by one
background thread in arrival order, so the answer does not wait for the commit. :meth:`MemoLog.flush`
waits for it: the releases and budget endpoints call it, so a principal always reads their own events; the
service drains it on shutdown. If the process is killed first, those audit events are lost (the answers
were free and already released); failures to write them are logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import OrderedDict
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy.dp.ledger import Ledger

log = logging.getLogger("iceberg_privacy.service")

Key = tuple[str, str, str, int, str]


class AnswerCache:
    """A bounded LRU map from a question's key to the ``SqlRelease`` that answered it (thread-safe)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Key, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Key, release: Any) -> None:
        with self._lock:
            self._items[key] = release
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


class MemoLog:
    """Writes ``memoized`` ledger events in the background, in order; :meth:`flush` waits for them."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="iceberg-privacy-memo-log", daemon=True)
        self._thread.start()

    def record(self, release: Any, principal: str, source_snapshot_id: int) -> str:
        """Queue the event of answering ``principal`` from ``release``; returns the event's id."""
        memo_id = uuid.uuid4().hex
        self._queue.put({"memo_id": memo_id, "release": release, "principal": principal,
                         "source_snapshot_id": source_snapshot_id})
        return memo_id

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                release = item["release"]
                source = tuple(release.table.split("."))
                Ledger(self.catalog, source[:-1]).record(
                    "memoized", item["memo_id"], item["principal"], source=source,
                    source_snapshot_id=item["source_snapshot_id"], query_hash=release.provenance.query_hash,
                    output_table=release.output, output_snapshot_id=release.provenance.snapshot_id,
                    detail={"memo_of": release.release_id, "spent": "nothing", "served_by": "service cache"})
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
