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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.manifest import FileFormat
from pyiceberg.schema import Schema, prune_columns
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import ListType, MapType
from pyiceberg.utils.concurrent import ExecutorFactory

from iceberg_privacy._internal.compat import FileProjection, position_deletes

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

    @property
    def key_schema(self) -> Schema:
        return prune_columns(self.schema, set(self.key_ids), select_full_types=True)

    @property
    def empty(self) -> pa.Table:
        # from_batches, not Schema.empty_table(): pyarrow 18 cannot build nested uuid columns that way
        return pa.Table.from_batches([], schema=schema_to_pyarrow(self.projected, include_field_ids=False))


def read_matching(io: FileIO, read: MatchRead, tasks: Sequence[FileScanTask], match: Matcher, *,
                  row_groups: Mapping[str, Sequence[int]] | None = None, stats: ReadStats | None = None) -> pa.Table:
    """The rows of ``tasks`` that ``match`` keeps, projected to ``read.projected`` (see the module docstring)."""
    if not tasks:
        return read.empty
    deletes = position_deletes(io, tasks)
    executor = ExecutorFactory.get_or_create()
    parts = executor.map(
        lambda t: read_task(io, read, t, match, hint=(row_groups or {}).get(t.file.file_path),
                            deleted=deletes.get(t.file.file_path), stats=stats), tasks)
    return concat([p for p in parts if p is not None], read)


def concat(parts: Iterable[pa.Table], read: MatchRead) -> pa.Table:
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return read.empty
    return pa.concat_tables(parts, promote_options="permissive")


def read_task(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, *, hint: Sequence[int] | None = None,
              deleted: list[pa.ChunkedArray] | None | bool = True, stats: ReadStats | None = None) -> pa.Table | None:
    """One file's matching rows (None when it has none). ``deleted``: the file's deleted positions as
    :func:`compat.position_deletes` returns them, None for none, or True to read its delete files here."""
    local = ReadStats(files=1)
    try:
        if deleted is True:
            deleted = position_deletes(io, [task]).get(task.file.file_path)
        return _read_task(io, read, task, match, hint, deleted or None, local)
    finally:
        if stats is not None:
            stats.add(local)


def probe_task(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, *, hint: Sequence[int] | None = None,
               stats: ReadStats | None = None) -> bool:
    """Does the file hold a matching (not deleted) row? Reads only its key columns (phase 1)."""
    key_only = MatchRead(read.metadata, read.schema, read.key_schema, read.key_ids)
    return read_task(io, key_only, task, match, hint=hint, stats=stats) is not None


def _whole(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, stats: ReadStats) -> pa.Table | None:
    """ArrowScan's own read of the whole file, matched afterwards (any format, any schema quirk)."""
    stats.files_whole += 1
    key_names = [f.name for f in read.key_schema.fields]
    ids = projected_field_ids(read.projected) | set(read.key_schema.field_ids)
    with_keys = prune_columns(read.schema, ids, select_full_types=False)
    data = ArrowScan(read.metadata, io, with_keys, AlwaysTrue(), case_sensitive=True).to_table([task])
    mask = match(data.select(key_names))
    stats.rows_probed += data.num_rows
    stats.rows_matched += int(mask.sum())
    if not mask.any():
        return None
    stats.files_matched += 1
    return data.filter(pa.array(mask)).select([f.name for f in read.projected.fields])


def _read_task(io: FileIO, read: MatchRead, task: FileScanTask, match: Matcher, hint: Sequence[int] | None,
               deleted: list[pa.ChunkedArray] | None, stats: ReadStats) -> pa.Table | None:
    if task.file.file_format != FileFormat.PARQUET:
        return _whole(io, read, task, match, stats)
    key_schema = read.key_schema
    with io.new_input(task.file.file_path).open(seekable=True) as fin:
        pf = pq.ParquetFile(fin, pre_buffer=True)
        physical = pf.schema_arrow
        keys = FileProjection(read.metadata, key_schema, projected_field_ids(key_schema), task.file, physical)
        if not all(keys.has(i) for i in read.key_ids):
            return _whole(io, read, task, match, stats)
        meta = pf.metadata
        sizes = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        stats.row_groups_total += len(sizes)
        groups = list(range(len(sizes)))
        if hint is not None and all(0 <= int(g) < len(sizes) for g in hint):
            groups = sorted({int(g) for g in hint})
        stats.row_groups_skipped_by_hint += len(sizes) - len(groups)
        if not groups:
            return None
        # Phase 1: the key columns of the hinted row groups, minus deleted rows.
        stats.row_groups_probed += len(groups)
        raw_keys = pf.read_row_groups(groups, columns=keys.columns)
        positions = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups])
        if deleted:
            gone = pa.chunked_array([c for arr in deleted for c in arr.chunks], type=pa.int64())
            alive = np.asarray(pc.invert(pc.is_in(pa.array(positions), value_set=gone.combine_chunks()))
                               .to_numpy(zero_copy_only=False), dtype=bool)
            raw_keys, positions = raw_keys.filter(pa.array(alive)), positions[alive]
        stats.rows_probed += raw_keys.num_rows
        if raw_keys.num_rows == 0:
            return None
        converted = _convert(keys, raw_keys)
        mask = np.asarray(match(converted), dtype=bool)
        hits = np.flatnonzero(mask)
        stats.rows_matched += len(hits)
        if not len(hits):
            return None
        stats.files_matched += 1
        # Phase 2: the other columns, only of the row groups with a match, only the matching rows.
        proj = FileProjection(read.metadata, read.projected, projected_field_ids(read.projected), task.file, physical)
        if not proj.columns:  # only columns this file lacks: ArrowScan knows how many rows of nulls to make
            stats.files_matched -= 1
            stats.rows_matched -= len(hits)
            return _whole(io, read, task, match, stats)
        hit_positions = positions[hits]
        hit_groups = np.unique(np.searchsorted(starts, hit_positions, side="right") - 1)
        stats.row_groups_materialized += len(hit_groups)
        rest = [c for c in proj.columns if c not in keys.columns]
        columns: dict[str, pa.ChunkedArray] = {}
        if rest:
            other = pf.read_row_groups([int(g) for g in hit_groups], columns=rest)
            g_starts = starts[hit_groups]
            g_offsets = np.concatenate([[0], np.cumsum(sizes[hit_groups])])
            idx = np.searchsorted(g_starts, hit_positions, side="right") - 1
            local = g_offsets[idx] + (hit_positions - g_starts[idx])
            other = other.take(pa.array(local))
            columns.update({name: other.column(name) for name in rest})
        picked = raw_keys.take(pa.array(hits))
        columns.update({name: picked.column(name) for name in proj.columns if name in keys.columns})
    return _convert(proj, pa.table({name: columns[name] for name in proj.columns}))


def _convert(proj: FileProjection, data: pa.Table) -> pa.Table:
    """Physical columns -> the requested schema, as ArrowScan converts its batches."""
    return pa.Table.from_batches([proj.convert(b) for b in data.combine_chunks().to_batches()])
