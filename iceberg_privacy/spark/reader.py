"""Batch reads: equality filters on bloom columns go to the core planner; executors read file groups.

Planning (``pushFilters`` + ``partitions``) runs once, in a Python worker next to the driver: it
pins the snapshot, asks :func:`iceberg_privacy.plan_lookup` for every pushed filter (manifest +
Bloom pruning, and the exact index's row-group hints; files without a usable filter are kept) and packs
the surviving file scan tasks into input partitions balanced by bytes. Executors read their tasks with
the core lookup's reader (:mod:`iceberg_privacy.index.read`: hinted row groups only, the filtered columns
first, the rest only for matching rows; delete files and schema evolution as pyiceberg's ``ArrowScan``)
and return Arrow batches cast to the schema Spark expects. A scan without pushed filters is a plain
``ArrowScan``.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import load_file_io
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import UUIDType
from pyspark.sql.datasource import DataSourceReader, EqualNullSafe, Filter, InputPartition
from pyspark.sql.datasource import EqualTo as SparkEqualTo
from pyspark.sql.datasource import In as SparkIn

from iceberg_privacy._internal.arrow import plain_type
from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import BloomColumn, bloom_columns
from iceberg_privacy.datafiles import first_line
from iceberg_privacy.errors import ConfigurationError, IcebergPrivacyError, StorageError
from iceberg_privacy.identities import identity_leaf_type, is_nested, rows_matching
from iceberg_privacy.index.hashing import coerce_values
from iceberg_privacy.index.planner import BATCH_THRESHOLD, plan_lookup
from iceberg_privacy.index.read import MatchRead, read_matching
from iceberg_privacy.spark.options import SourceOptions
from iceberg_privacy.spark.schema import arrow_for_spark, cast_batch, spark_schema
from iceberg_privacy.storage import is_missing, library_error, portable_properties, storage_errors

logger = logging.getLogger("iceberg_privacy.spark")

DEFAULT_SPLIT_SIZE = 128 * 1024 * 1024


def resolve_snapshot(table: Table, opts: SourceOptions) -> Snapshot | None:
    """The snapshot a read is pinned to: ``snapshot-id``, ``as-of-timestamp``, the head of ``branch`` or
    ``tag``, or the current one."""
    sid = opts.get_int("snapshot-id")
    ts = opts.get_int("as-of-timestamp")
    name = table_name(table)
    given = [o for o in ("snapshot-id", "as-of-timestamp", "branch", "tag") if opts.get(o) not in (None, "")]
    if len(given) > 1:
        raise ConfigurationError(f"set one of snapshot-id, as-of-timestamp, branch and tag, not {' and '.join(given)}")
    for kind in ("branch", "tag"):
        ref_name = opts.get(kind)
        if ref_name:
            ref = table.metadata.refs.get(ref_name)
            if ref is None or ref.snapshot_ref_type.value != kind:
                known = ", ".join(sorted(n for n, r in table.metadata.refs.items()
                                         if r.snapshot_ref_type.value == kind)) or "none"
                raise ConfigurationError(f"{name} has no {kind} {ref_name!r}; its {kind}es: {known}"
                                         if kind == "branch" else f"{name} has no tag {ref_name!r}; its tags: {known}")
            return table.snapshot_by_id(ref.snapshot_id)
    if sid is not None:
        snap = table.snapshot_by_id(sid)
        if snap is None:
            known = ", ".join(str(s.snapshot_id) for s in table.snapshots()[-5:]) or "none"
            raise ConfigurationError(f"snapshot-id {sid} does not exist in {name}; recent snapshots: {known}")
        return snap
    if ts is not None:
        snap = table.snapshot_as_of_timestamp(ts)
        if snap is None:
            first = min((s.timestamp_ms for s in table.snapshots()), default=None)
            raise ConfigurationError(
                f"{name} has no snapshot at or before as-of-timestamp {ts} (ms since epoch); "
                f"its first snapshot is at {first}"
            )
        return snap
    return table.current_snapshot()


def time_travel(opts: SourceOptions) -> bool:
    """Does the read name its snapshot (``snapshot-id``, ``as-of-timestamp``, ``tag``)? Then it shows that
    snapshot's schema, as Iceberg's Spark reader; a branch head (like the main branch) shows the table's."""
    return opts.get_int("snapshot-id") is not None or opts.get_int("as-of-timestamp") is not None \
        or bool(opts.get("tag"))


def schema_at(table: Table, snap: Snapshot | None, pinned: bool = True) -> Schema:
    """The schema a snapshot was written with when the read names it (time travel reads old columns, as
    Iceberg's Spark reader), else the current one (a rename or an added column since the last commit shows)."""
    if pinned and snap is not None and snap.schema_id is not None:
        return table.metadata.schema_by_id(snap.schema_id) or table.schema()
    return table.schema()


def balance(tasks: Sequence[FileScanTask], split_size: int, min_partitions: int = 1) -> list[list[FileScanTask]]:
    """Group tasks into partitions of about ``split_size`` bytes (largest first onto the lightest group)."""
    if not tasks:
        return []

    def size(t: FileScanTask) -> int:
        return int(t.file.file_size_in_bytes) + sum(int(d.file_size_in_bytes) for d in t.delete_files)

    total = sum(size(t) for t in tasks)
    n = min(len(tasks), max(min_partitions, math.ceil(total / max(split_size, 1)), 1))
    heap = [(0, i) for i in range(n)]
    groups: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(tasks)), key=lambda i: -size(tasks[i])):
        load, g = heapq.heappop(heap)
        groups[g].append(i)
        heapq.heappush(heap, (load + size(tasks[i]), g))
    return [[tasks[i] for i in sorted(g)] for g in groups if g]


@dataclass(frozen=True)
class Pushed:
    """One pushed equality filter: ``column`` equals one of ``values`` (already valid for its type)."""

    column: str  # the name in the schema the read shows (the snapshot's, under time travel)
    values: tuple[Any, ...]
    filter: str
    post_filter: bool = False  # match rows with Arrow after reading (large IN lists)
    plan_column: str = ""  # the same field's name in the current schema (what the planner resolves)


@dataclass
class ScanReport:
    """What the planner did; logged, and written to the ``plan-report`` file when set."""

    table: str
    snapshot_id: int | None
    pushed_filters: list[str] = field(default_factory=list)
    files_total: int = 0
    files_after_manifest_pruning: int = 0
    files_after_bloom_pruning: int = 0
    files_without_sidecar: int = 0
    files_read: int = 0
    bytes_read: int = 0
    files_with_row_group_hints: int = 0  # files read only in the row groups the planner's index named
    row_groups_hinted: int = 0
    partitions: int = 0
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        pushed = "; ".join(self.pushed_filters) or "none"
        return (f"iceberg-privacy scan {self.table}@{self.snapshot_id}: files total {self.files_total}, after "
                f"manifest pruning {self.files_after_manifest_pruning}, after bloom pruning "
                f"{self.files_after_bloom_pruning} (pruned {self.files_total - self.files_read}), "
                f"{self.partitions} partition(s), pushed: {pushed}")


def read_columns(table: Table, schema: Schema) -> dict[str, tuple[BloomColumn, str]]:
    """Indexed columns of the schema a read shows, by that schema's names: (the column as that schema types it,
    its name in the current schema). Matched by field id: under time travel a column renamed since is still
    pushed (under its current name to the planner), and a column dropped and re-added with the same name is not
    (its index is another field's)."""
    current = {c.field_id: c for c in bloom_columns(table.schema(), table.properties)}
    out: dict[str, tuple[BloomColumn, str]] = {}
    for f in schema.fields:
        c = current.get(f.field_id)
        if c is None:
            continue
        try:
            leaf = identity_leaf_type(f)
        except IcebergPrivacyError:
            continue
        out[f.name] = (BloomColumn(f.name, f, leaf, c.fpp, c.ndv, c.kinds), c.name)
    return out


def _pushable(f: Filter, bloom: dict[str, tuple[BloomColumn, str]]) -> Pushed | None:
    """The filter as a pushed lookup, or None when Spark must evaluate it (not ours, or not exact)."""
    if isinstance(f, (SparkEqualTo, EqualNullSafe)):
        values = [f.value]
    elif isinstance(f, SparkIn):
        values = list(f.value)
    else:
        return None
    if len(f.attribute) != 1 or f.attribute[0] not in bloom:
        return None
    col, plan_column = bloom[f.attribute[0]]
    if is_nested(col.field) or isinstance(col.leaf_type, UUIDType):
        return None  # Spark sees these as arrays/maps/bytes: its own equality differs from an id lookup
    values = [v for v in values if v is not None]  # NULL never equals (EqualNullSafe NULL: leave to Spark)
    if not values:
        return None
    try:
        coerce_values(values, col.leaf_type, col.name)
    except (IcebergPrivacyError, TypeError, ValueError):
        return None
    shown = f"{type(f).__name__}({col.name}, {len(values)} value(s))"
    return Pushed(col.name, tuple(values), shown, post_filter=len(set(values)) > BATCH_THRESHOLD,
                  plan_column=plan_column)


def _check_requested_types(struct: Any, schema: Schema, table: str) -> None:
    """Refuse a schema given to ``.schema(...)`` whose types differ from the table's: the batches are cast to
    what Spark expects, and an unchecked cast wraps or truncates values (a long 2**40 read as int is 0)."""
    shown = {f.name: f.dataType.simpleString() for f in spark_schema(schema).fields}  # (nullability aside)
    wrong = [f"{f.name} ({f.dataType.simpleString()}, the table has {shown[f.name]})"
             for f in struct.fields if f.name in shown and f.dataType.simpleString() != shown[f.name]]
    if wrong:
        raise ConfigurationError(
            f"the schema given to the read of {table} types column(s) {', '.join(wrong)} differently from the "
            "table; drop .schema(...) (the data source knows the table's schema) and cast the columns after "
            "loading, e.g. df.selectExpr('cast(n as int) as n'). Without .schema(...): the table's schema changed "
            "since the DataFrame was loaded (a type promotion); load it again")


class IcebergPrivacyReader(DataSourceReader):
    """Plans once on the driver side; picklable (holds metadata, never a catalog or Table)."""

    def __init__(self, opts: SourceOptions, struct: Any) -> None:
        self.opts = opts
        self.struct = struct
        # every option checked now: pushdown is otherwise read only when Spark pushes a filter
        opts.get_bool("pushdown", True)
        opts.get_int("split-size", DEFAULT_SPLIT_SIZE, minimum=1)
        opts.get_int("min-partitions", 1, minimum=1)
        table = opts.load_table()
        from iceberg_privacy.dp.policy import require_raw_access

        # a dp-only table's rows leave only as DP releases: refused here, on the driver, before any task reads;
        # checked at the snapshot read (a DP output table's tag, branch or older snapshot may hold raw rows)
        snap = resolve_snapshot(table, opts)
        require_raw_access(table.catalog, table, snapshot_id=snap.snapshot_id if snap else None)
        self.snapshot_id = snap.snapshot_id if snap else None
        self.metadata: TableMetadata = table.metadata
        self.io_properties: dict[str, str] = portable_properties(table.io)
        self.schema: Schema = schema_at(table, snap, time_travel(opts))
        names = [f.name for f in self.schema.fields]
        unknown = [n for n in struct.fieldNames() if n not in names]
        if unknown:
            raise ConfigurationError(
                f"requested column(s) {unknown} are not in {opts.table}; its columns: {', '.join(names)}"
            )
        _check_requested_types(struct, self.schema, opts.table)
        self.bloom = read_columns(table, self.schema)
        self.pushed: list[Pushed] = []
        self.row_groups: dict[str, tuple[int, ...]] = {}
        self.report: ScanReport | None = None
        self._table: Table | None = table

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_table"] = None  # a Table holds a catalog connection: executors never need it
        return state

    def pushFilters(self, filters: list[Filter]) -> Iterator[Filter]:
        """Keep exact equality filters on bloom columns; return every other filter to Spark."""
        enabled = self.opts.get_bool("pushdown", True)
        for f in filters:
            p = _pushable(f, self.bloom) if enabled else None
            if p is None:
                yield f
            else:
                self.pushed.append(p)

    def _plan(self) -> tuple[list[FileScanTask], ScanReport]:
        table = self._table or self.opts.load_table()
        report = ScanReport(self.opts.table, self.snapshot_id, [p.filter for p in self.pushed])
        if self.snapshot_id is None:
            return [], report
        if not self.pushed:
            tasks = list(table.scan(snapshot_id=self.snapshot_id).plan_files())
            report.files_total = report.files_after_manifest_pruning = report.files_after_bloom_pruning = len(tasks)
            return tasks, report
        tasks_by_path: dict[str, FileScanTask] | None = None
        hints: dict[str, tuple[int, ...]] = {}
        for i, p in enumerate(self.pushed):
            plan = plan_lookup(table, p.plan_column or p.column, list(p.values), snapshot_id=self.snapshot_id)
            # Filters are ANDed: a row group must be allowed by every filter that hints its file.
            for path, groups in (getattr(plan, "row_groups", None) or {}).items():
                hints[path] = tuple(sorted(set(hints[path]) & set(groups))) if path in hints else tuple(groups)
            report.files_total = max(report.files_total, plan.files_total)
            # with several pushed filters: the fewest files any one filter's manifest pruning kept
            report.files_after_manifest_pruning = (plan.files_after_manifest_pruning if i == 0 else
                                                   min(report.files_after_manifest_pruning,
                                                       plan.files_after_manifest_pruning))
            report.files_without_sidecar = max(report.files_without_sidecar, plan.files_without_sidecar)
            report.warnings += plan.warnings
            kept = {t.file.file_path: t for t in plan.tasks}
            tasks_by_path = kept if tasks_by_path is None else {k: v for k, v in tasks_by_path.items() if k in kept}
        tasks = list((tasks_by_path or {}).values())
        report.files_after_bloom_pruning = len(tasks)
        self.row_groups = {t.file.file_path: hints[t.file.file_path] for t in tasks if t.file.file_path in hints}
        report.files_with_row_group_hints = len(self.row_groups)
        report.row_groups_hinted = sum(len(g) for g in self.row_groups.values())
        return tasks, report

    @storage_errors  # planning reads manifests and sidecars: a storage failure is the library's error
    def partitions(self) -> list[InputPartition]:
        """Plan (pruned) file scan tasks and group them into byte-balanced input partitions."""
        tasks, report = self._plan()
        split = self.opts.get_int("split-size", DEFAULT_SPLIT_SIZE, minimum=1) or DEFAULT_SPLIT_SIZE
        groups = balance(tasks, split, self.opts.get_int("min-partitions", 1, minimum=1) or 1)
        report.files_read = len(tasks)
        report.bytes_read = sum(int(t.file.file_size_in_bytes) for t in tasks)
        report.partitions = len(groups)
        self.report = report
        logger.info("%s", report.line())
        print(report.line(), file=sys.stderr, flush=True)  # planning runs in a Python worker: stderr reaches the driver log
        path = self.opts.get("plan-report")
        if path:
            try:
                with open(path, "w") as fh:
                    json.dump(asdict(report), fh, indent=2)
            except OSError as exc:
                raise ConfigurationError(
                    f"option plan-report: {path!r} cannot be written ({exc.strerror or exc}); give a path in an "
                    "existing, writable directory on the driver, or drop the option") from None
        return [InputPartition(ScanPart(g, {t.file.file_path: self.row_groups[t.file.file_path]
                                             for t in g if t.file.file_path in self.row_groups}))
                for g in groups]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Executor side: read one group of file scan tasks, applying delete files and pushed filters.

        With pushed filters the read is the core lookup's (:func:`iceberg_privacy.index.read.read_matching`):
        only the hinted row groups, the filtered columns first, the other columns only for matching rows.
        A file of the planned snapshot deleted since planning (the snapshot expired, an erasure's purge) fails
        the task with a :class:`~iceberg_privacy.StorageError` saying so (never a partial answer)."""
        part: ScanPart | None = partition.value  # None: Spark reads one empty partition when none was planned
        if part is None or not part.tasks:
            return
        try:
            yield from self._read(part)
        except OSError as exc:
            if isinstance(exc, IcebergPrivacyError):
                raise
            if not is_missing(exc):  # storage refusing or failing: the library's StorageError, as the core's lookup
                error = library_error(exc)
                if error is exc:
                    raise
                raise error from exc
            raise StorageError(
                f"a file of {self.opts.table} at snapshot {self.snapshot_id}, which this read was planned on, is "
                f"gone ({first_line(exc)}): the snapshot was expired or purged (expire_snapshots, an erasure's "
                "purge) after the read was planned. Run the read again; with snapshot-id, as-of-timestamp or tag, "
                "read a snapshot the table still has") from exc

    def _read(self, part: ScanPart) -> Iterator[pa.RecordBatch]:
        target = arrow_for_spark(self.struct)
        projected = self.schema.select(*self.struct.fieldNames())
        io = load_file_io(self.io_properties, self.metadata.location)
        if not self.pushed or not self.struct.fieldNames():
            scan = ArrowScan(self.metadata, io, projected, AlwaysTrue(), case_sensitive=True)
            for batch in scan.to_record_batches(part.tasks):
                yield cast_batch(batch, target)
            return
        value_sets = []
        for p in self.pushed:
            leaf = identity_leaf_type(self.schema.find_field(p.column))  # (pushed columns are primitives)
            lits = coerce_values(list(p.values), leaf, p.column)
            value_sets.append((p.column, pa.array([lit.value for lit in lits], type=plain_type(schema_to_pyarrow(leaf)))))

        def match(keys: pa.Table) -> np.ndarray:
            mask = np.ones(keys.num_rows, dtype=bool)
            for column, value_set in value_sets:  # pushed filters are ANDed
                mask &= rows_matching(keys.column(column), value_set)
            return mask

        key_ids = tuple(dict.fromkeys(self.schema.find_field(p.column).field_id for p in self.pushed))
        read = MatchRead(self.metadata, self.schema, projected, key_ids)
        rows = read_matching(io, read, part.tasks, match, row_groups=part.row_groups)
        for batch in rows.to_batches():
            if batch.num_rows:
                yield cast_batch(batch, target)


@dataclass
class ScanPart:
    """One input partition: its file scan tasks and their row-group hints (file path -> row groups)."""

    tasks: list[FileScanTask]
    row_groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
