"""Read the rows of a few people out of the planned files: row groups with hits only, keys first.

A lookup (and an access request, and an erasure's probe) wants a handful of rows out of files that hold
thousands. pyiceberg's ``ArrowScan`` reads every row group of every column of a file and filters after
the decode, so a 10,000-key batch costs as much as a full scan once every file holds one key. This
reader does the same work in two phases per file:

1. **keys first**: only the identity (key) columns, only of the row groups that may hold a key (the
   planner's ``row_groups`` hints from the exact index; every row group when there is no hint), minus
   the rows deleted by position-delete files; rows are matched there (vectorized ``is_in``, nested ids);
2. **late materialization**: the other selected columns are read only from the row groups that had a
   match, and only the matching rows are kept.

Everything else is what ``ArrowScan`` does, through the same pyiceberg code
(:class:`iceberg_privacy._internal.compat.FileProjection`): columns are found by field id (or the
table's name mapping), renamed, promoted, filled with nulls or identity-partition values when a file
lacks them, and position deletes (and deletion vectors) are read by pyiceberg's own reader. Files that
are not Parquet, or lack a key column, are read whole by ``ArrowScan`` and matched afterwards: slower,
never different. An invalid hint (a row group the file does not have) also means "read every row group".

Rows come back in task order, then file order, like ``ArrowScan.to_table``.

Where a 10,000-key batch's time goes (docs/benchmarks.md, "Scale"): once every file holds a key,
every column chunk must be decompressed and decoded whatever the reader does, so what is left to win
is everything around the decoding. Hence: files are read on a thread pool (pyarrow decodes without the
GIL; Arrow's own per-column threads are off, files are the parallel unit; see :func:`_executor`); each file's
footer is parsed once for both phases; the next chunk's key columns are read while the current chunk
is matched; and rows are converted to the requested schema (pyiceberg's ``_to_requested_schema``, about
a millisecond of Python per call) once per run of consecutive files that convert alike rather than twice
per file: that conversion was most of the batch's CPU time beyond the decoding.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import ResolveError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.manifest import FileFormat
from pyiceberg.schema import Schema, prune_columns
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import ListType, MapType
from pyiceberg.utils.concurrent import ExecutorFactory

from iceberg_privacy._internal.arrow import small_types
from iceberg_privacy._internal.compat import FileProjection, position_deletes
from iceberg_privacy.errors import SchemaMismatchError
from iceberg_privacy.storage import reading

Matcher = Callable[[pa.Table], np.ndarray]
"""Rows to keep: given the key columns (requested Iceberg names and types), a boolean mask."""


@dataclass
class ReadStats:
    """What a read touched (summed over files; thread-safe through :meth:`add`)."""

    files: int = 0
    files_whole: int = 0  # read whole by ArrowScan (not Parquet, or a key column the file lacks)
    files_matched: int = 0
    row_groups_total: int = 0  # in the files read in two phases
    row_groups_skipped_by_hint: int = 0
    row_groups_probed: int = 0  # key columns read
    row_groups_materialized: int = 0  # other columns read (row groups with a match)
    rows_probed: int = 0
    rows_matched: int = 0

    def add(self, other: ReadStats) -> None:
        with _stats_lock:
            for f in fields(self):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def __str__(self) -> str:
        return (f"{self.files} file(s) ({self.files_whole} read whole), {self.files_matched} with matches; "
                f"row groups: {self.row_groups_total} total, {self.row_groups_skipped_by_hint} skipped by hints, "
                f"{self.row_groups_probed} probed, {self.row_groups_materialized} materialized; "
                f"rows: {self.rows_probed} probed, {self.rows_matched} matched")


_stats_lock = threading.Lock()


def projected_field_ids(schema: Schema) -> set[int]:
    """The field ids ``ArrowScan`` reads for a projection (a list or map is read through its children)."""
    return {i for i in schema.field_ids if not isinstance(schema.find_type(i), (MapType, ListType))}


@dataclass(frozen=True)
class MatchRead:
    """One read's fixed inputs (picklable: Spark executors receive it). ``schema`` is the schema the
    columns are resolved in (a snapshot's, for time travel), ``projected`` the columns returned,
    ``key_ids`` the top-level field ids of the key columns the matcher sees."""

    metadata: TableMetadata
    schema: Schema
    projected: Schema
    key_ids: tuple[int, ...]

    @functools.cached_property
    def key_schema(self) -> Schema:
        return prune_columns(self.schema, set(self.key_ids), select_full_types=True)

    @property
    def empty(self) -> pa.Table:
        # from_batches, not Schema.empty_table(): pyarrow 18 cannot build nested uuid columns that way. Small types, as
        # the rows of a read that matches come back (pyiceberg's empty scans say large_string: a lookup that found
        # nobody could not be concatenated with one that found someone)
        return pa.Table.from_batches([], schema=small_types(schema_to_pyarrow(self.projected, include_field_ids=False)))


class _Projections:
    """Per-read cache of :class:`FileProjection` by physical schema (field ids included): files of one
    table usually share a few schemas, and converting a schema is most of a small file's read time."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, str], FileProjection] = {}
        self._lock = threading.Lock()

    def get(self, metadata: TableMetadata, requested: Schema, task: FileScanTask, physical: pa.Schema,
            schema_key: str | None = None) -> FileProjection:
        """``schema_key``: :func:`_schema_key` of ``physical`` when the caller has it (it costs a string per file)."""
        key = (schema_key if schema_key is not None else _schema_key(physical), id(requested),
               str(task.file.spec_id))  # (requested schemas live as long as the read: ids stay unique)
        with self._lock:
            base = self._cache.get(key)
        if base is None:
            base = FileProjection(metadata, requested, projected_field_ids(requested), task.file, physical)
            with self._lock:
                self._cache[key] = base
            return base
        return base.for_file(task.file, metadata)


def _schema_key(physical: pa.Schema) -> str:
    """A physical schema's identity for :class:`_Projections`: names, types and field ids."""
    return physical.to_string(show_field_metadata=True, show_schema_metadata=False)


CHUNK_FILES = 64
"""Files whose key columns are matched in one call: a matcher builds its value set once per call (a
10,000-key hash set costs milliseconds), so it is called per chunk of files, not per file; memory stays
bounded by two chunks (the one being matched and the next one being read)."""


@dataclass
class _Probe:
    """Phase 1 of one file: its open Parquet file, the key columns of the read row groups (minus deleted
    rows) as read (physical), their positions in the file, and the row-group layout."""

    task: FileScanTask
    handle: Any
    pf: pq.ParquetFile
    physical: pa.Schema
    schema_key: str
    keys: FileProjection
    raw: pa.Table
    positions: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.handle.close()


_WHOLE = object()  # phase 1's answer for a file ArrowScan must read whole


@dataclass
class _Raw:
    """Phase 2 of one file: its matching rows as read (the physical columns ``proj.columns``), not yet
    converted to the requested schema; ``done`` when they already are (a file without any read column)."""

    proj: FileProjection | None
    table: pa.Table
    done: bool = False


def _same_conversion(a: FileProjection, b: FileProjection) -> bool:
    """Do rows of two files convert the same way? Copies of one cached projection (:meth:`_Projections.get`:
    the same physical schema) with the same identity-partition values for absent columns do."""
    return (a.requested is b.requested and a.project_schema is b.project_schema and a.downcast == b.downcast
            and a.missing.keys() == b.missing.keys()
            and all(type(v) is type(b.missing[k]) and v == b.missing[k] for k, v in a.missing.items()))


def _convert_runs(items: Sequence[_Raw]) -> list[pa.Table]:
    """Convert rows of many files to the requested schema, in order, one ``_to_requested_schema`` call per run
    of consecutive files that convert the same way: the conversion is per column and per row, so converting
    the concatenation equals concatenating the conversions, and its Python cost (about a millisecond) is paid
    per run instead of per file, which is most of a 10,000-key batch's overhead over the decoding itself."""
    out: list[pa.Table] = []
    run: list[_Raw] = []

    def flush() -> None:
        if run:
            out.append(_convert(run[0].proj, pa.concat_tables([r.table for r in run])))  # type: ignore[arg-type]
            run.clear()

    for item in items:
        if item.done:
            flush()
            out.append(item.table)
        elif run and not _same_conversion(run[0].proj, item.proj):  # type: ignore[arg-type]
            flush()
            run.append(item)
        else:
            run.append(item)
    flush()
    return out


def read_matching(io: FileIO, read: MatchRead, tasks: Sequence[FileScanTask], match: Matcher, *,
                  row_groups: Mapping[str, Sequence[int]] | None = None, stats: ReadStats | None = None) -> pa.Table:
    """The rows of ``tasks`` that ``match`` keeps, projected to ``read.projected`` (see the module docstring).

    ``match`` must decide each row by that row alone: it is called once per chunk of files with their key
    columns concatenated. Files are read on a thread pool (:func:`_executor`); the next chunk's key columns
    are read while the current chunk is matched and materialized."""
    if not tasks:
        return read.empty
    stats = stats if stats is not None else ReadStats()
    deletes = position_deletes(io, tasks)
    executor = _executor(tasks)
    projections = _Projections()
    hints = row_groups or {}
    parts: list[pa.Table] = []

    def submit(chunk: Sequence[FileScanTask]) -> list[concurrent.futures.Future[Any]]:
        return [executor.submit(_probe, io, read, t, hints.get(t.file.file_path), deletes.get(t.file.file_path),
                                stats, projections) for t in chunk]

    chunks = [tasks[lo:lo + CHUNK_FILES] for lo in range(0, len(tasks), CHUNK_FILES)]
    futures: list[concurrent.futures.Future[Any]] = []
    pending = submit(chunks[0])
    try:
        for i, chunk in enumerate(chunks):
            futures, pending = pending, []
            probes = [f.result() for f in futures]
            if i + 1 < len(chunks):  # read ahead: the next chunk's keys while this one is matched
                pending = submit(chunks[i + 1])
            masks = _match(match, read, [p for p in probes if isinstance(p, _Probe)], stats)
            materialized = [executor.submit(_materialize, read, p, hits, stats, projections) for p, hits in masks]
            concurrent.futures.wait(materialized)  # (all done before any file is closed, also on an error)
            results = {id(p): f.result() for (p, _), f in zip(masks, materialized, strict=True)}
            raws: list[_Raw] = []
            for task, p in zip(chunk, probes, strict=True):  # task order, like ArrowScan
                if p is _WHOLE:  # here, not in a pool thread: ArrowScan uses the same pool
                    got = _whole(io, read, task, match, stats)
                    if got is not None:
                        raws.append(_Raw(None, got, done=True))
                elif isinstance(p, _Probe) and id(p) in results:
                    raws.append(results[id(p)])
            _close(futures)
            parts += _convert_runs(raws)
    except ResolveError as exc:  # pyiceberg's own scan of these files fails the same way
        raise SchemaMismatchError(
            f"cannot read a data file as the table's schema says: {exc}. A file written without Iceberg field ids "
            "(e.g. added with add_files) is read through the name mapping (table property "
            "schema.name-mapping.default), which gives a name to the column that has it now: a column dropped and "
            "added again under the same name with a narrower type makes such files unreadable. Point the mapping's "
            "name back at a compatible field id (or rewrite those files), then retry") from exc
    finally:  # every file phase 1 opened is closed, also when another file's read failed
        _close(futures + pending)
    return concat(parts, read)


_local_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_local_pool_lock = threading.Lock()


def _executor(tasks: Sequence[FileScanTask]) -> concurrent.futures.Executor:
    """Where files are read: pyiceberg's executor (its ``max-workers``, default CPUs + 4) for object stores,
    whose reads wait on the network; one thread per CPU when every file is local, because reading a
    local (page-cached) file is CPU work, and more threads than cores only add switching: measured on the
    core table under load, 2 threads cost about 10 % more CPU than one and 6 threads about 20 % more (and
    3-6 % more wall time than 2). A configured ``max-workers`` always wins."""
    global _local_pool
    if ExecutorFactory.max_workers() is not None or any(
            not t.file.file_path.startswith("file:") and "://" in t.file.file_path for t in tasks):
        return ExecutorFactory.get_or_create()
    with _local_pool_lock:
        if _local_pool is None or _local_pool[0] != os.getpid():  # (a pool does not survive a fork)
            _local_pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="ip-read"))
        return _local_pool[1]


def _close(futures: list[concurrent.futures.Future[Any]]) -> None:
    """Wait for phase-1 reads and close the files they opened (only a chunk's or two are open at once)."""
    concurrent.futures.wait(futures)
    for f in futures:
        done = f.result() if not f.cancelled() and f.exception() is None else None
        if isinstance(done, _Probe):
            done.close()


def _match(match: Matcher, read: MatchRead, probes: list[_Probe], stats: ReadStats) -> list[tuple[_Probe, np.ndarray]]:
    """One matcher call over the chunk's key columns; each probe with the indices of its matching rows."""
    probes = [p for p in probes if p.raw.num_rows]
    if not probes:
        return []
    converted = _convert_runs([_Raw(p.keys, p.raw) for p in probes])
    keys = converted[0] if len(converted) == 1 else pa.concat_tables(converted, promote_options="permissive")
    mask = np.asarray(match(keys), dtype=bool)
    out = []
    offset = 0
    for p in probes:
        hits = np.flatnonzero(mask[offset:offset + p.raw.num_rows])
        offset += p.raw.num_rows
        if len(hits):
            out.append((p, hits))
    with _stats_lock:
        stats.rows_matched += int(mask.sum())
        stats.files_matched += len(out)
    return out


def concat(parts: Iterable[pa.Table], read: MatchRead) -> pa.Table:
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return read.empty
    return pa.concat_tables(parts, promote_options="permissive")


def read_task(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, *, hint: Sequence[int] | None = None,
              deleted: list[pa.ChunkedArray] | None | bool = True, stats: ReadStats | None = None) -> pa.Table | None:
    """One file's matching rows (None when it has none). ``deleted``: the file's deleted positions as
    :func:`compat.position_deletes` returns them, None for none, or True to read its delete files here."""
    stats = stats if stats is not None else ReadStats()
    if deleted is True:
        deleted = position_deletes(io, [task]).get(task.file.file_path)
    projections = _Projections()
    p = _probe(io, read, task, hint, deleted or None, stats, projections)
    if p is _WHOLE:
        return _whole(io, read, task, match, stats)
    if not isinstance(p, _Probe):
        return None
    try:
        matched = _match(match, read, [p], stats)
        return _convert_runs([_materialize(read, p, matched[0][1], stats, projections)])[0] if matched else None
    finally:
        p.close()


def probe_task(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, *, hint: Sequence[int] | None = None,
               stats: ReadStats | None = None) -> bool:
    """Does the file hold a matching (not deleted) row? Reads only its key columns (phase 1)."""
    key_only = MatchRead(read.metadata, read.schema, read.key_schema, read.key_ids)
    return read_task(io, key_only, task, match, hint=hint, stats=stats) is not None


def _whole(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, stats: ReadStats) -> pa.Table | None:
    """ArrowScan's own read of the whole file, matched afterwards (any format, any schema quirk)."""
    key_names = [f.name for f in read.key_schema.fields]
    ids = projected_field_ids(read.projected) | set(read.key_schema.field_ids)
    with_keys = prune_columns(read.schema, ids, select_full_types=False)
    data = ArrowScan(read.metadata, io, with_keys, AlwaysTrue(), case_sensitive=True).to_table([task])
    mask = np.asarray(match(data.select(key_names)), dtype=bool)
    with _stats_lock:
        stats.files_whole += 1
        stats.rows_probed += data.num_rows
        stats.rows_matched += int(mask.sum())
        stats.files_matched += int(mask.any())
    if not mask.any():
        return None
    return _decoded(data.filter(pa.array(mask)).select([f.name for f in read.projected.fields]))


def _probe(io: FileIO, read: MatchRead, task: FileScanTask, hint: Sequence[int] | None,
           deleted: list[pa.ChunkedArray] | None, stats: ReadStats, projections: _Projections) -> _Probe | object | None:
    """Phase 1: the key columns of the hinted row groups, minus deleted rows (None: nothing to match)."""
    with reading(task.file.file_path):  # a failure names the file's full URI (storage.reading)
        return _probe_file(io, read, task, hint, deleted, stats, projections)


def _probe_file(io: FileIO, read: MatchRead, task: FileScanTask, hint: Sequence[int] | None,
                deleted: list[pa.ChunkedArray] | None, stats: ReadStats,
                projections: _Projections) -> _Probe | object | None:
    with _stats_lock:
        stats.files += 1
    if task.file.file_format != FileFormat.PARQUET:
        return _WHOLE
    handle = io.new_input(task.file.file_path).open(seekable=True)
    try:
        pf = pq.ParquetFile(handle, pre_buffer=True)
        physical = pf.schema_arrow  # (built on every access: once per file)
        schema_key = _schema_key(physical)
        keys = projections.get(read.metadata, read.key_schema, task, physical, schema_key)
        if not all(keys.has(i) for i in read.key_ids):
            handle.close()
            return _WHOLE
        meta = pf.metadata
        sizes = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        groups = list(range(len(sizes)))
        if hint is not None and all(0 <= int(g) < len(sizes) for g in hint):
            groups = sorted({int(g) for g in hint})
        with _stats_lock:
            stats.row_groups_total += len(sizes)
            stats.row_groups_skipped_by_hint += len(sizes) - len(groups)
            stats.row_groups_probed += len(groups)
        if not groups:
            handle.close()
            return None
        raw = pf.read_row_groups(groups, columns=keys.columns, use_threads=False)  # files are the parallel unit
        positions = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups])
        if deleted:
            gone = pa.chunked_array([c for arr in deleted for c in arr.chunks], type=pa.int64())
            alive = np.asarray(pc.invert(pc.is_in(pa.array(positions), value_set=gone.combine_chunks()))
                               .to_numpy(zero_copy_only=False), dtype=bool)
            raw, positions = raw.filter(pa.array(alive)), positions[alive]
        with _stats_lock:
            stats.rows_probed += raw.num_rows
        if raw.num_rows == 0:
            handle.close()
            return None
        return _Probe(task, handle, pf, physical, schema_key, keys, raw, positions, starts, sizes)
    except BaseException:
        handle.close()
        raise


def _materialize(read: MatchRead, p: _Probe, hits: np.ndarray, stats: ReadStats,
                 projections: _Projections) -> _Raw:
    """Phase 2: the other columns, only of the row groups with a match, only the matching rows (as read:
    :func:`_convert_runs` converts them)."""
    proj = projections.get(read.metadata, read.projected, p.task, p.physical, p.schema_key)
    hit_positions = p.positions[hits]
    if len(p.sizes) == 1:  # (one row group: positions are offsets into it)
        hit_groups, offsets = [0], hit_positions
    else:
        groups = np.unique(np.searchsorted(p.starts, hit_positions, side="right") - 1)
        g_starts = p.starts[groups]
        g_offsets = np.concatenate([[0], np.cumsum(p.sizes[groups])])
        idx = np.searchsorted(g_starts, hit_positions, side="right") - 1
        hit_groups, offsets = [int(g) for g in groups], g_offsets[idx] + (hit_positions - g_starts[idx])
    with _stats_lock:
        stats.row_groups_materialized += len(hit_groups)
    if not proj.columns:  # only columns the file lacks (nulls, partition values): as many rows as matched
        return _Raw(proj, proj.convert_rows(len(hits)), done=True)
    key_columns = set(p.keys.columns)
    rest = [c for c in proj.columns if c not in key_columns]
    other = (p.pf.read_row_groups(hit_groups, columns=rest, use_threads=False).take(pa.array(offsets))
             if rest else None)
    picked = p.raw.take(pa.array(hits)) if len(rest) < len(proj.columns) else None
    return _Raw(proj, pa.Table.from_arrays(
        [picked.column(c) if c in key_columns else other.column(c) for c in proj.columns],  # type: ignore[union-attr]
        names=proj.columns))


def _convert(proj: FileProjection, data: pa.Table) -> pa.Table:
    """Physical columns -> the requested schema, as ArrowScan converts its batches."""
    batches = data.combine_chunks().to_batches() or [
        pa.RecordBatch.from_arrays([pa.array([], f.type) for f in data.schema], schema=data.schema)]
    return _decoded(pa.Table.from_batches([proj.convert(b) for b in batches]))


def _decoded(data: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as their values. A file written by pyarrow from a dictionary column (a pandas
    categorical) records that encoding in its Arrow schema, and pyiceberg's conversion keeps it, so its rows could
    not be concatenated with another file's (``ArrowTypeError``: pyiceberg's own scan of such a table fails)."""
    if not any(pa.types.is_dictionary(f.type) for f in data.schema):
        return data
    return pa.Table.from_arrays(
        [pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in data.columns],
        schema=pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                          for f in data.schema], metadata=data.schema.metadata))
