"""Finding and probing a table's exact indexes for one lookup (the planner's exact half).

The *base* lives in the compacted sidecar (``privacy.sidecar.compacted``) and records the snapshot
it covers; the *deltas* live in the per-commit sidecars. Deltas of the covered snapshot and of its
ancestors are not opened: the base already holds their files (or those files were not live when it
was built, and are then "not indexed": scanned or Bloom-probed). An index that cannot be opened or
probed is left out with a warning, so its files count as not indexed: never skipped.
"""

from __future__ import annotations

import functools
import gc
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.expressions.literals import Literal
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import PrimitiveType

from iceberg_privacy._internal.arrow import plain_type
from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index import exact
from iceberg_privacy.index.exact import ExactFile, ExactIndex
from iceberg_privacy.index.hash64 import hash64_array, hash64_value
from iceberg_privacy.index.registry import SidecarRef, sidecar_refs, warn

_VECTORIZE_FROM = 64  # below this many values the scalar reference path is as fast
_gc_lock = threading.Lock()
_gc_pausers = 0  # threads inside paused_gc()
_gc_was_enabled = False  # the collector's state when the first of them entered


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a plan allocates its per-file objects.

    A 100,000-key plan creates a few hundred thousand small objects (file-table rows, DataFiles, scan tasks)
    and none of them is garbage; each allocation burst triggers collections that traverse every live object
    of the process (the cached file tables and manifests included), which measured as half of such a plan's
    time. Reference counting still frees everything at once; cycles created meanwhile are collected after
    the last concurrent plan resumes the collector (left off if it was off before)."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


@dataclass
class Source:
    ref: SidecarRef
    index: ExactIndex
    bytes_before: int  # reader bytes already counted by an earlier plan (0 when opened now)
    requests_before: int


@dataclass
class ExactSources:
    base: Source | None = None
    deltas: list[Source] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def indexes(self) -> list[Source]:
        return ([self.base] if self.base is not None else []) + self.deltas


def _open(io: FileIO, ref: SidecarRef, notes: list[str]) -> Source | None:
    try:
        idx, opened_now = exact.CACHE.get(io, ref.location, ref.size)
    except SidecarError as exc:
        notes.append(warn(f"ignoring index file ({ref.source}) {ref.location}: {exc}; the files it covers are "
                          "Bloom-probed or scanned"))
        return None
    if idx is None:
        return None
    before = (0, 0) if opened_now else (idx.reader.bytes_read, idx.reader.requests)
    return Source(ref, idx, *before)


def _ancestors(metadata: TableMetadata, snapshot_id: int) -> set[int]:
    parents = {s.snapshot_id: s.parent_snapshot_id for s in metadata.snapshots}
    out: set[int] = set()
    sid: int | None = snapshot_id
    while sid is not None and sid in parents and sid not in out:
        out.add(sid)
        sid = parents[sid]
    return out


class _PerMetadata:
    """What planning derives from one (immutable) ``TableMetadata`` object and reuses for every lookup against
    it: the sidecar references and the ancestors of a covered snapshot. Both walk every snapshot (about a
    millisecond at 100 snapshots, more than a warm probe); a serving process plans many lookups against the
    same metadata. Keyed by the object's identity, held weakly: a refreshed table's new metadata is a new key."""

    def __init__(self) -> None:
        # id(metadata) -> (weak reference to it, values); the reference's callback drops the entry, and the
        # identity check below guards against an id reused before that
        self._items: dict[int, tuple[weakref.ref[TableMetadata], dict[Any, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, metadata: TableMetadata, key: Any, compute: Any) -> Any:
        ident = id(metadata)
        with self._lock:
            slot = self._items.get(ident)
            if slot is not None and slot[0]() is metadata and key in slot[1]:
                return slot[1][key]
        value = compute()
        with self._lock:
            slot = self._items.get(ident)
            if slot is None or slot[0]() is not metadata:
                slot = (weakref.ref(metadata, functools.partial(self._forget, ident)), {})
                self._items[ident] = slot
            slot[1][key] = value
        return value

    def _forget(self, ident: int, _ref: Any = None) -> None:
        with self._lock:
            slot = self._items.get(ident)
            if slot is not None and slot[0]() is None:
                del self._items[ident]


_PER_METADATA = _PerMetadata()


def exact_sources(io: FileIO, metadata: TableMetadata, field_id: int | None = None) -> ExactSources:
    """The base (if any, and usable) and the deltas newer than it, holding ``field_id`` (None: any column)."""
    out = ExactSources()
    refs = list(_PER_METADATA.get(metadata, "refs", lambda: tuple(sidecar_refs(metadata))))
    covered: frozenset[int] = frozenset()
    if refs and refs[0].source == "property":
        src = _open(io, refs[0], out.warnings)
        if src is not None and src.index.covered_snapshot_id is not None:
            out.base = src
            sid = src.index.covered_snapshot_id
            covered = _PER_METADATA.get(metadata, ("ancestors", sid), lambda: frozenset(_ancestors(metadata, sid)))
        elif src is not None:
            out.deltas.append(src)  # a compacted sidecar without a covered snapshot: its files still count
        refs = refs[1:]
    for ref in refs:
        if ref.snapshot_id is not None and ref.snapshot_id in covered:
            continue
        src = _open(io, ref, out.warnings)
        if src is not None:
            out.deltas.append(src)
    if field_id is not None:
        if out.base is not None and field_id not in out.base.index.columns:
            out.base = None
        out.deltas = [d for d in out.deltas if field_id in d.index.columns]
    return out


def literal_hashes(literals: list[Literal[Any]], leaf: PrimitiveType) -> np.ndarray:
    """IPH64 of coerced lookup literals: vectorized for batches (the same bytes as the write path)."""
    values = [lit.value for lit in literals]
    if len(values) >= _VECTORIZE_FROM:
        try:
            arr = pa.array(values, type=plain_type(schema_to_pyarrow(leaf)))
            return hash64_array(arr)
        except (pa.ArrowException, TypeError, ValueError):
            pass  # the scalar reference path below takes any literal value
    return np.fromiter((hash64_value(v, leaf) for v in values), dtype=np.uint64, count=len(values))


@dataclass
class ExactProbe:
    """Candidates of a probe over the usable indexes: path -> manifest at the base ("" when unknown)."""

    candidates: dict[str, str] = field(default_factory=dict)
    row_groups: dict[str, tuple[int, ...]] = field(default_factory=dict)  # sorted row-group ordinals
    stored: dict[str, ExactFile] = field(default_factory=dict)  # base rows carrying their scan task's fields
    records: dict[str, ExactFile] = field(default_factory=dict)  # every candidate's file-table row (first index)
    usable: list[ExactIndex] = field(default_factory=list)  # the base first when it is usable
    probed: int = 0
    bytes_read: int = 0
    requests: int = 0
    warnings: list[str] = field(default_factory=list)


def _hits(idx: ExactIndex, field_id: int, keys: np.ndarray) -> tuple[list[ExactFile], list[tuple[int, ...]]]:
    """The file-table rows with hits and, per row, its sorted row groups (one vectorized grouping: a batch's
    keys hit the same (file, row group) pairs many times)."""
    hits = idx.probe(field_id, keys)
    pairs = np.unique((hits.files.astype(np.uint64) << np.uint64(32)) | hits.row_groups.astype(np.uint64))
    if len(pairs) == 0:
        return [], []
    files = (pairs >> np.uint64(32)).astype(np.int64)
    rgs = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64).tolist()
    _, rows = idx.rows(files)  # distinct ordinals ascending, as the pairs are sorted
    bounds = [0, *(np.flatnonzero(np.diff(files)) + 1).tolist(), len(rgs)]
    return rows, [tuple(rgs[bounds[i]:bounds[i + 1]]) for i in range(len(rows))]


def describes(ef: ExactFile, record_count: int, file_size_in_bytes: int) -> bool:
    """Does an index's file-table row describe these bytes? A row whose record count or byte size differs from
    the live file's was written for other bytes at a reused path: stale. A row whose size is unknown (an old
    short row whose sidecar could not tell it) describes nothing: its file is Bloom-probed or scanned, because
    a reused path with an equal record count would otherwise be pruned by the old file's keys."""
    return ef.record_count == record_count and ef.file_size_in_bytes == file_size_in_bytes


def probe_exact(sources: ExactSources, field_id: int, keys: np.ndarray) -> ExactProbe:
    out = ExactProbe()
    keys = np.unique(keys.astype(np.uint64))
    for src in sources.indexes:
        idx = src.index
        try:
            rows, groups = _hits(idx, field_id, keys)
        except SidecarError as exc:
            out.warnings.append(warn(
                f"exact index {idx.location} unusable: {exc}; the {idx.num_files} file(s) it covers are Bloom-probed "
                "or scanned, never skipped (compact_sidecars or backfill rebuilds it)"))
            continue
        finally:
            out.probed += 1
            out.bytes_read += idx.reader.bytes_read - src.bytes_before
            out.requests += idx.reader.requests - src.requests_before
            src.bytes_before, src.requests_before = idx.reader.bytes_read, idx.reader.requests
        out.usable.append(idx)
        manifests = idx.manifests
        for ef, rg in zip(rows, groups, strict=True):
            path = ef.path
            manifest = manifests[ef.manifest] if ef.manifest >= 0 else ""
            if path not in out.candidates:
                out.candidates[path] = manifest
                out.row_groups[path] = rg
                out.records[path] = ef
            else:
                if not out.candidates[path]:
                    out.candidates[path] = manifest
                out.row_groups[path] = tuple(sorted(set(out.row_groups[path]) | set(rg)))
            if ef.task is not None and ef.manifest >= 0 and path not in out.stored:
                out.stored[path] = ef
    return out
