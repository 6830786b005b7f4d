"""A short-lived, per-catalog memo of the lake-wide ledger scan (internal).

Why: a table that no ledger commit has bound in its namespace may have moved there from another namespace,
and only reading every namespace's ledger can tell (docs/dp.md, "Table identity"). One release asks several
times (compiling DP SQL, its early checks) and the service's dataset list asks once per table, so read-only
checks share one scan for :data:`TTL_SECONDS`. Commits never use it: the commit that spends reads afresh.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

TTL_SECONDS = 2.0
"""How old a shared scan may be for a read-only check; any ledger commit of this process drops it."""

_MEMO: weakref.WeakKeyDictionary[Any, tuple[float, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def get(catalog: Any) -> Any | None:
    """The scan shared for ``catalog`` if it is younger than :data:`TTL_SECONDS`, else None."""
    with _LOCK:
        try:
            hit = _MEMO.get(catalog)
        except TypeError:  # a catalog that cannot be weakly referenced: no memo
            return None
    if hit is None or time.monotonic() - hit[0] >= TTL_SECONDS:
        return None
    return hit[1]


def put(catalog: Any, value: Any, started: float) -> None:
    """Share ``value`` (a scan that began at ``started``, :func:`time.monotonic`) for ``catalog``."""
    with _LOCK:
        try:
            _MEMO[catalog] = (started, value)
        except TypeError:
            pass


def forget(catalog: Any) -> None:
    with _LOCK:
        try:
            _MEMO.pop(catalog, None)
        except TypeError:
            pass


def now() -> float:
    return time.monotonic()
