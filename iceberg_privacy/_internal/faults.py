"""Crash-injection checkpoints: one registry instead of a hook variable per module.

Long operations call :func:`checkpoint` at each point where a crash would leave a distinct state
(after journaling a request, between writing files and committing them, after reserving budget...).
In normal use no hook is installed and a checkpoint costs one dict lookup. Tests install one with
:func:`injected`, crash the operation at a precise point (by raising), and check that running it
again finishes it with the table at the old or the new snapshot and nothing done twice.

Checkpoint names are ``<area>.<stage>`` and listed in :data:`CHECKPOINTS`; installing a hook on a
name nobody calls is an error, so a renamed checkpoint cannot silently turn a crash test into a
test that never crashes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CHECKPOINTS: frozenset[str] = frozenset({
    # subject rights (iceberg_privacy.rights)
    "erasure.after_link", "erasure.after_submit", "erasure.after_forget", "erasure.staging", "erasure.before_commit",
    "erasure.after_commit",
    "erasure.after_table",
    "queue.after_enqueue", "queue.after_read", "queue.after_claim", "queue.after_batch", "queue.after_erase", "queue.before_outcomes",
    "queue.before_exported", "queue.before_shred", "queue.before_shred_delete", "queue.after_shred_delete",
    "history.after_write", "history.after_compact", "history.expired_not_deleted", "history.after_expire",
    "purge.dangling_staged", "purge.after_dangling_commit", "purge.after_expire", "purge.after_delete", "purge.after_metadata_trim", "purge.before_complete",
    # the commit path and index maintenance (iceberg_privacy.write, iceberg_privacy.index.maintenance)
    "write.before_commit", "write.after_commit", "index.before_build", "index.before_commit", "index.after_commit",
    # differential privacy (iceberg_privacy.dp.release)
    "dp.before_reserve", "dp.between_ledgers", "dp.after_reserve", "dp.before_evaluate", "dp.after_evaluate",
    # DP synthetic data (iceberg_privacy.dp.synth)
    "synth.after_reserve", "synth.after_evaluate",
})

Hook = Callable[[str], None]

_lock = threading.Lock()
_hooks: dict[str, list[Hook]] = {}


def checkpoint(name: str) -> None:
    """Run the hooks installed on ``name`` (they may raise to simulate a crash there)."""
    if not _hooks:
        return
    with _lock:
        hooks = list(_hooks.get(name, ()))
    for hook in hooks:
        hook(name)


@contextmanager
def injected(names: str | list[str] | tuple[str, ...], hook: Hook) -> Iterator[None]:
    """Install ``hook`` on the named checkpoints (``"erasure.*"`` means every erasure checkpoint)."""
    wanted: list[str] = []
    for name in [names] if isinstance(names, str) else list(names):
        if name.endswith(".*"):
            area = name[:-1]
            matched = sorted(c for c in CHECKPOINTS if c.startswith(area))
            if not matched:
                raise ValueError(f"no checkpoints under {name!r}; known: {sorted(CHECKPOINTS)}")
            wanted += matched
        elif name in CHECKPOINTS:
            wanted.append(name)
        else:
            raise ValueError(f"unknown checkpoint {name!r}; known: {sorted(CHECKPOINTS)}")
    with _lock:
        for name in wanted:
            _hooks.setdefault(name, []).append(hook)
    try:
        yield
    finally:
        with _lock:
            for name in wanted:
                _hooks[name].remove(hook)
                if not _hooks[name]:
                    del _hooks[name]


class InjectedCrash(RuntimeError):
    """What :func:`crash_at` raises: a simulated process death at a checkpoint."""


@contextmanager
def crash_at(name: str) -> Iterator[None]:
    """Raise :class:`InjectedCrash` when the operation reaches checkpoint ``name``."""

    def die(reached: str) -> None:
        raise InjectedCrash(f"injected crash at {reached}")

    with injected(name, die):
        yield
