"""Which of an index's candidate files are live in a snapshot, without decoding every manifest.

pyiceberg's ``plan_files`` decodes every manifest of a snapshot on every scan, so planning a one-key
lookup costs time linear in the table's file count. An identity index already knows, for the snapshot it
covers, which manifest listed each indexed file. Manifests and manifest lists are immutable (their names
carry a UUID and they are never rewritten in place), so:

* a candidate whose recorded manifest is still in the target snapshot's manifest list is live there
  (an entry that is ADDED/EXISTING in an immutable manifest stays so in every snapshot listing it);
* every data manifest of the target that the covered snapshot did not have is decoded, and its live
  entries decide the rest: candidates moved by a manifest rewrite or merge, and files added since (those
  the index does not cover are returned as ``not_indexed``: scanned or Bloom-probed, never skipped);
* a candidate found in neither was deleted (or is not yet added, for an older target): not live.

The rule holds for any target snapshot, older or newer than the covered one (time travel included).

Decoded manifests are cached per process by path, in a least-recently-used cache bounded by the number of
manifest entries it holds (:data:`DEFAULT_CACHE_ENTRIES`, changeable with :func:`set_cache_capacity`), so
a warm process decodes only the manifests written since it last looked. A candidate's scan task needs its
``DataFile`` and data sequence number (to match delete files): a base written by this version keeps those
fields in its file table (docs/exact-index.md 3.3), so a candidate of a covered manifest costs no manifest
at all; for rows without them (older bases) the candidate's own manifest is decoded once, which costs the
manifests holding hits, never the whole table.

Delete files are matched to data files exactly as pyiceberg's planning does: position deletes (and
deletion vectors) by pyiceberg's ``DeleteFileIndex`` (data sequence numbers, partition, referenced file
path); equality deletes are refused, as pyiceberg 0.12 refuses them. The same row filter prunes entries as
pyiceberg would (partition summaries, partition values, column metrics), through
:class:`iceberg_privacy._internal.compat.ScanPruning`.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.conversions import from_bytes, to_bytes
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.manifest import (
    INITIAL_SEQUENCE_NUMBER,
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestFile,
    read_manifest_list,
)
from pyiceberg.table import FileScanTask
from pyiceberg.table.delete_file_index import DeleteFileIndex
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.typedef import Record
from pyiceberg.types import UUIDType

from iceberg_privacy._internal.compat import ScanPruning, data_file_factory
from iceberg_privacy.errors import IcebergPrivacyError
from iceberg_privacy.index.exact import ExactFile, StoredTask

ALWAYS_TRUE: BooleanExpression = AlwaysTrue()

DEFAULT_CACHE_ENTRIES = 200_000
"""Cap of the per-process manifest cache, counted in manifest entries (one per data or delete file, plus
one per cached manifest and per manifest-list entry). A decoded entry with its column statistics takes
about 1-3 KB of Python objects, so the default bounds the cache near 200-600 MB."""


class _LRU:
    """A thread-safe least-recently-used map whose capacity is a total weight, not a count."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: str, value: Any, weight: int) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            if weight > self.capacity:
                return  # larger than the whole cache: serve it uncached
            self._items[key] = (value, weight)
            self.weight += weight
            while self.weight > self.capacity:
                _, (_, w) = self._items.popitem(last=False)
                self.weight -= w

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = capacity
            while self.weight > self.capacity:
                _, (_, w) = self._items.popitem(last=False)
                self.weight -= w

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0

    def __len__(self) -> int:
        return len(self._items)


# One budget for both kinds of object: manifest lists (path -> tuple[ManifestFile]) and decoded manifests
# (path -> {file path: live ManifestEntry}). Keys are full locations; the two kinds never share a path.
_CACHE = _LRU(DEFAULT_CACHE_ENTRIES)
_stats_lock = threading.Lock()
_decoded_total = 0


def set_cache_capacity(entries: int) -> None:
    """Bound the per-process manifest cache to ``entries`` manifest entries (0 disables caching)."""
    if entries < 0:
        raise IcebergPrivacyError(f"cache capacity must be >= 0 entries, got {entries}")
    _CACHE.resize(entries)


def clear_cache() -> None:
    """Forget every cached manifest list and manifest (tests; memory-sensitive processes)."""
    _CACHE.clear()


@dataclass(frozen=True)
class CacheInfo:
    """How full the per-process manifest cache is."""

    objects: int
    entries: int
    capacity: int
    manifests_decoded_total: int

    def __str__(self) -> str:
        return (f"manifest cache: {self.objects} object(s), {self.entries}/{self.capacity} entries; "
                f"{self.manifests_decoded_total} manifest(s) decoded by this process")


def cache_info() -> CacheInfo:
    return CacheInfo(len(_CACHE), _CACHE.weight, _CACHE.capacity, _decoded_total)


def manifest_list(io: FileIO, snapshot: Snapshot) -> tuple[ManifestFile, ...]:
    """The manifests of ``snapshot``, cached per process by manifest-list path (manifest lists are immutable)."""
    key = snapshot.manifest_list
    if key is None:  # pragma: no cover - v1 tables with inline manifests: pyiceberg never writes them
        return tuple(snapshot.manifests(io))
    cached = _CACHE.get(key)
    if cached is None:
        cached = tuple(read_manifest_list(io.new_input(key)))
        _CACHE.put(key, cached, len(cached) + 1)
    return cached  # type: ignore[no-any-return]


def _entries(io: FileIO, manifest: ManifestFile) -> tuple[dict[str, ManifestEntry], bool]:
    """The live (ADDED/EXISTING) entries of a manifest by file path, and whether they came from the cache."""
    global _decoded_total
    cached = _CACHE.get(manifest.manifest_path)
    if cached is not None:
        return cached, True
    entries = {e.data_file.file_path: e for e in manifest.fetch_manifest_entry(io, discard_deleted=True)}
    _CACHE.put(manifest.manifest_path, entries, len(entries) + 1)
    with _stats_lock:
        _decoded_total += 1
    return entries, False


def live_entries(io: FileIO, manifest: ManifestFile) -> tuple[ManifestEntry, ...]:
    """The ADDED/EXISTING entries of a manifest (data or delete), cached per manifest path."""
    return tuple(_entries(io, manifest)[0].values())


def live_data_files(io: FileIO, manifest: ManifestFile) -> tuple[DataFile, ...]:
    """The ADDED/EXISTING data files of a manifest, cached per manifest path (manifests are immutable)."""
    return tuple(e.data_file for e in _entries(io, manifest)[0].values() if e.data_file.content == DataFileContent.DATA)


@dataclass
class Liveness:
    """The answer for one (table metadata, snapshot): which candidates are live, and what else must be read."""

    live: dict[str, FileScanTask]  # candidate path -> its scan task (with its delete files), live in the snapshot
    not_indexed: list[FileScanTask]  # live files of manifests the covered snapshot did not have, not indexed
    manifests_decoded: int = 0  # manifests read from storage by this call
    manifests_cached: int = 0  # manifests this call needed and found decoded in the process cache
    manifests_in_snapshot: int = 0
    new_manifests: int = 0  # data manifests of the snapshot that the covered snapshot did not have
    candidates_dead: int = 0  # candidates not live in the snapshot (deleted since, or not yet added)
    candidates_pruned: int = 0  # live candidates the row filter rules out (partition values, column metrics)
    candidates_stored: int = 0  # live candidates whose task came from the base's file table (no manifest decoded)
    stored_fallbacks: int = 0  # candidates of covered manifests whose base row lacked (usable) task fields

    @property
    def tasks(self) -> list[FileScanTask]:
        """Every task to read: the live candidates, then the files the index does not cover."""
        return [*self.live.values(), *self.not_indexed]

    def __str__(self) -> str:
        return (f"{len(self.live)} live candidate(s), {len(self.not_indexed)} file(s) not indexed; "
                f"{self.candidates_dead} candidate(s) not live, {self.candidates_pruned} pruned by the filter; "
                f"{self.new_manifests} new of {self.manifests_in_snapshot} manifest(s); "
                f"{self.manifests_decoded} decoded, {self.manifests_cached} from cache")


@dataclass
class _Deletes:
    index: DeleteFileIndex = field(default_factory=DeleteFileIndex)
    count: int = 0  # delete files added: a snapshot without any skips the per-file index lookups

    def for_file(self, data_sequence_number: int | None, data_file: DataFile) -> set[DataFile]:
        if not self.count:
            return set()
        return self.index.for_data_file(data_sequence_number or INITIAL_SEQUENCE_NUMBER, data_file,
                                        partition_key=data_file.partition)


# ------------------------------------------------------------------------------ stored tasks (base file table)
def stored_task(entry: ManifestEntry, metadata: TableMetadata,
                types: dict[int, list[Any] | None] | None = None) -> StoredTask | None:
    """What the base's file table keeps of a live manifest entry so that planning needs no manifest decoded
    (docs/exact-index.md 3.3), or None when a partition value cannot be serialized (the reader then decodes
    the manifest, as for rows written without these fields). ``types`` caches partition types by spec id
    across the entries of one compaction."""
    df = entry.data_file
    types = {} if types is None else types
    if df.spec_id not in types:
        types[df.spec_id] = _partition_types(metadata, df.spec_id)
    ptypes = types[df.spec_id]
    if ptypes is None or len(ptypes) != len(df.partition):
        return None
    try:
        part = tuple(None if df.partition[i] is None else to_bytes(t, df.partition[i]).hex()
                     for i, t in enumerate(ptypes))
    except Exception:  # noqa: BLE001 - a value that does not serialize as its type: decode instead
        return None
    return StoredTask(int(df.content), df.file_format.value, int(df.file_size_in_bytes), int(df.spec_id), part,
                      entry.sequence_number, entry.file_sequence_number)


def _partition_types(metadata: TableMetadata, spec_id: int) -> list[Any] | None:
    """The result types of a spec's partition fields, bound to the current schema (None: unknown spec, or a
    source column the schema no longer has)."""
    try:
        return [f.field_type for f in metadata.specs()[spec_id].partition_type(metadata.schema()).fields]
    except Exception:  # noqa: BLE001 - pyiceberg raises ValueError/KeyError/ResolveError here
        return None


_UNSEEN: Any = object()
_FORMATS = {f.value: f for f in FileFormat}


class _StoredFiles:
    """Turns stored tasks into ``DataFile`` objects for one (table metadata): partition records are decoded
    once per distinct (spec, values) and shared, the records built positionally (compat.data_file_factory)."""

    def __init__(self, metadata: TableMetadata) -> None:
        self.metadata = metadata
        self._make = data_file_factory()
        self._types: dict[int, list[Any] | None] = {}
        self._parts: dict[tuple[int, tuple[str | None, ...]], Record | None] = {}

    def _partition(self, spec_id: int, values: tuple[str | None, ...]) -> Record | None:
        key = (spec_id, values)
        if key in self._parts:
            return self._parts[key]
        if spec_id not in self._types:
            self._types[spec_id] = _partition_types(self.metadata, spec_id)
        types = self._types[spec_id]
        rec: Record | None = None
        if types is not None and len(types) == len(values):
            try:
                out: list[Any] = []
                for t, v in zip(types, values, strict=True):
                    if v is None:
                        out.append(None)
                        continue
                    raw = bytes.fromhex(v)
                    val: Any = from_bytes(t, raw)
                    if to_bytes(t, val) != raw:  # e.g. an int value read as a promoted long
                        raise ValueError(f"partition value {v} is not a {t}")
                    out.append(uuid.UUID(bytes=val) if isinstance(t, UUIDType) else val)  # as the Avro reader
                rec = Record(*out)
            except Exception:  # noqa: BLE001 - a value that does not decode: decode the manifest instead
                rec = None
        self._parts[key] = rec
        return rec

    def data_file(self, path: str, record_count: int, st: StoredTask) -> DataFile | None:
        if st.content != 0:  # DataFileContent.DATA
            return None
        part = self._parts.get((st.spec_id, st.partition), _UNSEEN)
        if part is _UNSEEN:
            part = self._partition(st.spec_id, st.partition)
        fmt = _FORMATS.get(st.file_format)
        if part is None or fmt is None:
            return None
        return self._make(DataFileContent.DATA, path, fmt, part, record_count, st.file_size_in_bytes, st.spec_id)  # type: ignore[no-any-return]


def resolve(
    io: FileIO,
    metadata: TableMetadata,
    snapshot_id: int,
    candidates: Mapping[str, str],
    covered_manifests: frozenset[str],
    indexed_paths: Callable[[str, DataFile], bool] | None = None,
    row_filter: BooleanExpression = ALWAYS_TRUE,
    stored: Mapping[str, ExactFile] | None = None,
) -> Liveness:
    """Resolve which ``candidates`` are live in snapshot ``snapshot_id`` (see the module docstring).

    ``candidates`` maps a candidate data-file path to the manifest that listed it at the index's covered
    snapshot; ``covered_manifests`` holds that snapshot's manifest paths; ``indexed_paths(path, data_file)``
    says whether the index covers a file (a file of a new manifest that it covers but that is not a candidate
    holds no looked-up key). Without it, every non-candidate file of a new manifest is ``not_indexed``.

    ``stored`` maps candidates to the base's file-table rows: a candidate of a covered manifest still in the
    target whose row carries a :class:`StoredTask` becomes a task without its manifest being decoded (the
    manifest is immutable, so its live entry is the one the base recorded). Its ``DataFile`` has no column
    metrics, so a row filter prunes it by partition values only (a superset of pyiceberg's files, never fewer;
    readers filter rows). Rows without the fields, or whose values do not decode, take the manifest path.
    """
    snap = metadata.snapshot_by_id(snapshot_id)
    if snap is None:
        raise IcebergPrivacyError(f"snapshot {snapshot_id} is not in the table's metadata; see table.snapshots()")
    manifests = manifest_list(io, snap)
    prune = ScanPruning(metadata, io, row_filter)
    out = Liveness({}, [], manifests_in_snapshot=len(manifests))

    def entries(m: ManifestFile) -> dict[str, ManifestEntry]:
        got, cached = _entries(io, m)
        if cached:
            out.manifests_cached += 1
        else:
            out.manifests_decoded += 1
        return got

    data_manifests = [m for m in manifests if m.content == ManifestContent.DATA]
    by_path = {m.manifest_path: m for m in data_manifests}
    # Without a row filter (large batches) nothing is pruned and every residual is AlwaysTrue: skip the
    # per-file evaluators, the bulk of a 100,000-file plan.
    trivial = isinstance(row_filter, AlwaysTrue)
    deletes = _delete_index(io, manifests, data_manifests, prune, entries)
    seen: set[str] = set()  # candidates found live (before the row filter's entry pruning)
    pruned_by_manifest: set[str] = set()
    manifest_ok: dict[str, bool] = {}  # covered manifest of the target -> survives manifest pruning
    wanted: dict[str, list[str]] = {}  # covered manifest in the target -> its candidates to find by decoding it
    builder = _StoredFiles(metadata) if stored else None
    for path, manifest_path in candidates.items():
        m = by_path.get(manifest_path)
        if m is None or manifest_path not in covered_manifests:
            continue
        ok = manifest_ok.get(manifest_path)
        if ok is None:
            ok = manifest_ok[manifest_path] = prune.manifest(m)
        if not ok:
            pruned_by_manifest.add(path)
            continue
        row = stored.get(path) if builder is not None else None  # type: ignore[union-attr]
        df = builder.data_file(path, row.record_count, row.task) if row is not None and row.task is not None else None  # type: ignore[union-attr]
        if df is None:
            wanted.setdefault(manifest_path, []).append(path)
            continue
        # A stored task: the base recorded this file's live entry in this (immutable) manifest.
        seen.add(path)
        out.candidates_stored += 1
        if not trivial and not prune.entry(m, df):
            out.candidates_pruned += 1
            continue
        out.live[path] = FileScanTask(df, delete_files=deletes.for_file(row.task.data_sequence_number, df),  # type: ignore[union-attr]
                                      residual=ALWAYS_TRUE if trivial else prune.residual(df))
    if builder is not None:
        out.stored_fallbacks = sum(len(v) for v in wanted.values())

    # (manifest, data file, data sequence number, is a candidate): candidates without a stored task, and the
    # live files of manifests the covered snapshot did not have
    found: list[tuple[ManifestFile, DataFile, int | None, bool]] = []
    for m in data_manifests:
        if m.manifest_path in covered_manifests:
            paths = wanted.get(m.manifest_path)
            if not paths:
                continue
            listed = entries(m)
            for p in paths:
                e = listed.get(p)
                if e is not None and e.data_file.content == DataFileContent.DATA:
                    found.append((m, e.data_file, e.sequence_number, True))
                    seen.add(p)
            continue
        out.new_manifests += 1
        if not prune.manifest(m):
            continue  # its candidates, if any, cannot match: they count as not live
        for p, e in entries(m).items():
            if e.data_file.content != DataFileContent.DATA or p in seen:
                continue
            if p in candidates:
                found.append((m, e.data_file, e.sequence_number, True))
                seen.add(p)
            elif indexed_paths is None or not indexed_paths(p, e.data_file):
                found.append((m, e.data_file, e.sequence_number, False))

    kept = found if trivial else [f for f in found if prune.entry(f[0], f[1])]
    out.candidates_pruned += sum(1 for f in found if f[3]) - sum(1 for f in kept if f[3]) + len(pruned_by_manifest)
    out.candidates_dead = len(candidates) - sum(1 for p in candidates if p in seen or p in pruned_by_manifest)
    for _, df, seq, is_candidate in kept:
        task = FileScanTask(df, delete_files=deletes.for_file(seq, df),
                            residual=ALWAYS_TRUE if trivial else prune.residual(df))
        if is_candidate:
            out.live[df.file_path] = task
        else:
            out.not_indexed.append(task)
    return out


def _delete_index(io: FileIO, manifests: tuple[ManifestFile, ...], data_manifests: list[ManifestFile],
                  prune: ScanPruning, entries: Callable[[ManifestFile], dict[str, ManifestEntry]]) -> _Deletes:
    """Every delete file of the snapshot that pyiceberg's planning would consider, indexed as pyiceberg does.

    pyiceberg skips delete manifests older than every data manifest that survives manifest pruning (their
    deletes cannot apply), then prunes delete entries with the same filter as data entries."""
    out = _Deletes()
    delete_manifests = [m for m in manifests if m.content == ManifestContent.DELETES and prune.manifest(m)]
    if not delete_manifests:
        return out
    surviving = [m for m in data_manifests if prune.manifest(m)]
    min_seq = min((m.min_sequence_number or INITIAL_SEQUENCE_NUMBER for m in surviving), default=INITIAL_SEQUENCE_NUMBER)
    for m in delete_manifests:
        if (m.sequence_number or INITIAL_SEQUENCE_NUMBER) < min_seq:
            continue
        for e in entries(m).values():
            if not prune.entry(m, e.data_file):
                continue
            if e.data_file.content == DataFileContent.POSITION_DELETES:
                out.index.add_delete_file(e, partition_key=e.data_file.partition)
                out.count += 1
            elif e.data_file.content == DataFileContent.EQUALITY_DELETES:
                raise IcebergPrivacyError(
                    f"{e.data_file.file_path} is an equality delete file, which pyiceberg 0.12 cannot apply; "
                    "compact the table's deletes with an engine that can (e.g. Spark's rewrite_data_files) "
                    "and look up again"
                )
    return out
