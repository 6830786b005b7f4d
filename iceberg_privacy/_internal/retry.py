"""One retry policy for every compare-and-swap commit the library makes.

Iceberg commits are optimistic: a commit names the metadata it was built on, and the catalog
refuses it (``CommitFailedException``) when another writer committed first. SQLite-backed
catalogs can also answer "database is locked" (an ``OperationalError``) without committing. Both
mean "nothing happened, build the commit again on the new head"; everything else (a read-only
database file included, which is an ``OperationalError`` too) is a real error and is raised at once.

Every loop that commits — data appends and overwrites, erasure rewrites, the request journal, the
forget lists, the DP ledger, purge's expiry and scrub — uses :data:`DEFAULT_POLICY` (or a caller's
``commit_retries``) through :func:`run` or :func:`attempts`, so they back off the same way: capped
exponential delays with jitter, so that writers that collided do not collide again in lock-step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyiceberg.exceptions import CommitFailedException

from iceberg_privacy._internal import compat


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try ``n`` (n >= 2) sleep ``min(max_delay, base_delay * 2**(n-2))``
    times a jitter factor in [0.5, 1.5)."""

    attempts: int = 100
    base_delay: float = 0.005
    max_delay: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (1-based; 0 before the first)."""
        if attempt <= 1:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(attempt - 2, 16)) * random.uniform(0.5, 1.5)

    def with_retries(self, retries: int | None) -> RetryPolicy:
        """This policy with ``retries`` retries after the first try (``None`` keeps it)."""
        if retries is None:
            return self
        if isinstance(retries, bool) or not isinstance(retries, int):
            from iceberg_privacy.errors import ConfigurationError  # a ValueError too

            raise ConfigurationError(f"commit_retries must be a whole number >= 0 (or None), got {retries!r}")
        if retries < 0:
            from iceberg_privacy.errors import ConfigurationError  # a ValueError too

            raise ConfigurationError(f"commit_retries must be >= 0, got {retries}: 0 means one try and no retry")
        return RetryPolicy(retries + 1, self.base_delay, self.max_delay)


DEFAULT_POLICY = RetryPolicy()


def is_conflict(exc: BaseException) -> bool:
    """Did this commit fail without effect, so that building it again on the new head is safe?"""
    if (isinstance(exc, CommitFailedException) or compat.is_stale_sequence_number(exc) or compat.is_snapshot_gone(exc)
            or compat.is_statistics_gone(exc) or compat.is_rebase_base_gone(exc)):
        return True
    return is_transient_db_error(exc)


def is_outcome_unknown(exc: BaseException) -> bool:
    """Did the catalog fail in a way that leaves open whether the commit happened?

    A REST catalog that answers 5xx (pyiceberg: ``CommitStateUnknownException`` for 500/502/504,
    ``ServiceUnavailableError``/``ServerError`` otherwise), or whose connection broke or timed out after the
    request was sent, may have applied the commit and lost only the response. Retrying blindly would apply it
    twice (the same rows appended again); giving up blindly would report a landed write as failed. The caller
    asks the catalog whether its snapshot is there.
    """
    from pyiceberg.exceptions import CommitStateUnknownException, ServerError, ServiceUnavailableError

    if isinstance(exc, (CommitStateUnknownException, ServerError, ServiceUnavailableError)):
        return True
    return type(exc).__module__.startswith(("requests", "urllib3"))


# What a SQL catalog's database answers when it refused a transaction that it rolled back whole: SQLite's
# SQLITE_BUSY/SQLITE_LOCKED ("database is locked", "database table is locked"), PostgreSQL's serialization
# failures and deadlocks. Other OperationalErrors are not conflicts: a read-only or missing database file,
# a full or failing disk, a dropped server connection (where the commit may even have happened, so building
# it again could append the same files twice) are raised at once.
_TRANSIENT_DB = ("locked", "busy", "could not serialize access", "deadlock detected")


def is_transient_db_error(exc: BaseException) -> bool:
    """A SQL catalog's "busy, nothing happened, try again" (see ``_TRANSIENT_DB``)."""
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy ships with pyiceberg's sql extra
        return False
    if not isinstance(exc, OperationalError):
        return False
    text = f"{exc.orig} {exc}".lower()
    return any(marker in text for marker in _TRANSIENT_DB)


def attempts(policy: RetryPolicy = DEFAULT_POLICY) -> Iterator[int]:
    """Yield try numbers 1..policy.attempts, sleeping the policy's delay before each retry.

    For loops whose conflict handling is more than "try again" (cleanup, re-planning)::

        for attempt in retry.attempts(policy):
            try:
                return commit()
            except Exception as exc:
                if not retry.is_conflict(exc):
                    raise
                last = exc
        raise CommitConflictError(...)
    """
    for attempt in range(1, policy.attempts + 1):
        pause = policy.delay(attempt)
        if pause:
            time.sleep(pause)
        yield attempt


def run[T](step: Callable[[], T], *, exhausted: Callable[[int, BaseException], Exception],
        policy: RetryPolicy = DEFAULT_POLICY) -> T:
    """Call ``step`` until it returns, retrying conflicts (see :func:`is_conflict`) under ``policy``.

    ``step`` must re-read whatever it decides from on every call. When every try lost,
    ``exhausted(tries, last_conflict)`` builds the error that is raised (say what to do next).
    """
    last: BaseException | None = None
    for _ in attempts(policy):
        try:
            return step()
        except Exception as exc:
            if not is_conflict(exc):
                raise
            last = exc
    assert last is not None
    raise exhausted(policy.attempts, last) from last


@contextmanager
def vanished_is_conflict(table: Any) -> Iterator[None]:
    """Inside a retried step that reads a table's history (manifest lists, manifests): a file that is gone
    because another process expired those snapshots meanwhile (a second purge, a second queue pass) is a
    lost race, not an error. When a read fails with ``OSError`` and the table's metadata has moved since
    the step loaded it, raise ``CommitFailedException`` so :func:`run` re-reads from the new head;
    otherwise (the file is missing at an unchanged head: a damaged table) re-raise. A catalog too busy to
    answer whether the head moved (SQLite's "database is locked" under several writers) is a lost race too:
    the retry asks again, and a damaged table still fails once the catalog answers.
    """
    location = table.metadata_location
    try:
        yield
    except OSError as exc:
        try:
            moved = table.refresh().metadata_location != location
        except Exception as busy:
            if not is_conflict(busy):
                raise exc from busy
            moved = True
        if moved:
            raise CommitFailedException(f"a file vanished while reading the history of {location}: another process "
                                        "changed the table meanwhile; re-reading") from exc
        raise
