"""Batch reads: equality filters on bloom columns go to the core planner; executors read file groups.

Planning (``pushFilters`` + ``partitions``) runs once, in a Python worker next to the driver: it
pins the snapshot, asks :func:`iceberg_privacy.plan_lookup` for every pushed filter (manifest +
Bloom pruning; files without a usable filter are kept) and packs the surviving file scan tasks
into input partitions balanced by bytes. Executors read their tasks with pyiceberg's ``ArrowScan``
(so delete files, schema evolution and the pushed row filter behave as in the core's lookup) and
return Arrow batches cast to the schema Spark expects.
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

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In
from pyiceberg.io import load_file_io
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import UUIDType
from pyspark.sql.datasource import DataSourceReader, EqualNullSafe, Filter, InputPartition
from pyspark.sql.datasource import EqualTo as SparkEqualTo
from pyspark.sql.datasource import In as SparkIn

from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import BloomColumn, bloom_columns
from iceberg_privacy.errors import ConfigurationError, IcebergPrivacyError
from iceberg_privacy.identities import is_nested
from iceberg_privacy.index.hashing import coerce_values
from iceberg_privacy.index.planner import BATCH_THRESHOLD, plan_lookup
from iceberg_privacy.spark.options import SourceOptions
from iceberg_privacy.spark.schema import arrow_for_spark, cast_batch
from iceberg_privacy.storage import portable_properties

logger = logging.getLogger("iceberg_privacy.spark")

DEFAULT_SPLIT_SIZE = 128 * 1024 * 1024


def resolve_snapshot(table: Table, opts: SourceOptions) -> Snapshot | None:
    """The snapshot a read is pinned to: ``snapshot-id``, ``as-of-timestamp`` or the current one."""
    sid = opts.get_int("snapshot-id")
    ts = opts.get_int("as-of-timestamp")
    name = table_name(table)
    if sid is not None and ts is not None:
        raise ConfigurationError("set either snapshot-id or as-of-timestamp, not both")
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


def schema_at(table: Table, snap: Snapshot | None) -> Schema:
    """The schema a snapshot was written with (time travel reads old columns), else the current one."""
    if snap is not None and snap.schema_id is not None:
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

    column: str
    values: tuple[Any, ...]
    filter: str
    post_filter: bool = False  # match rows with Arrow after reading (large IN lists)


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
    partitions: int = 0
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        pushed = "; ".join(self.pushed_filters) or "none"
        return (f"iceberg-privacy scan {self.table}@{self.snapshot_id}: files total {self.files_total}, after "
                f"manifest pruning {self.files_after_manifest_pruning}, after bloom pruning "
                f"{self.files_after_bloom_pruning} (pruned {self.files_total - self.files_read}), "
                f"{self.partitions} partition(s), pushed: {pushed}")


def _pushable(f: Filter, bloom: dict[str, BloomColumn]) -> Pushed | None:
    """The filter as a pushed lookup, or None when Spark must evaluate it (not ours, or not exact)."""
    if isinstance(f, (SparkEqualTo, EqualNullSafe)):
        values = [f.value]
    elif isinstance(f, SparkIn):
        values = list(f.value)
    else:
        return None
    if len(f.attribute) != 1 or f.attribute[0] not in bloom:
        return None
    col = bloom[f.attribute[0]]
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
    return Pushed(col.name, tuple(values), shown, post_filter=len(set(values)) > BATCH_THRESHOLD)


def _row_filter(schema: Schema, pushed: Sequence[Pushed]) -> BooleanExpression:
    out: BooleanExpression = AlwaysTrue()
    for p in pushed:
        if p.post_filter:
            continue
        leaf = schema.find_field(p.column).field_type
        lits = coerce_values(list(p.values), leaf, p.column)
        expr: BooleanExpression = EqualTo(p.column, lits[0]) if len(lits) == 1 else In(p.column, lits)
        out = expr if isinstance(out, AlwaysTrue) else And(out, expr)
    return out


class IcebergPrivacyReader(DataSourceReader):
    """Plans once on the driver side; picklable (holds metadata, never a catalog or Table)."""

    def __init__(self, opts: SourceOptions, struct: Any) -> None:
        self.opts = opts
        self.struct = struct
        table = opts.load_table()
        snap = resolve_snapshot(table, opts)
        self.snapshot_id = snap.snapshot_id if snap else None
        self.metadata: TableMetadata = table.metadata
        self.io_properties: dict[str, str] = portable_properties(table.io)
        self.schema: Schema = schema_at(table, snap)
        names = [f.name for f in self.schema.fields]
        unknown = [n for n in struct.fieldNames() if n not in names]
        if unknown:
            raise ConfigurationError(
                f"requested column(s) {unknown} are not in {opts.table}; its columns: {', '.join(names)}"
            )
        self.bloom = {c.name: c for c in bloom_columns(self.schema, table.properties)}
        self.pushed: list[Pushed] = []
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
        for i, p in enumerate(self.pushed):
            plan = plan_lookup(table, p.column, list(p.values), snapshot_id=self.snapshot_id)
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
        return tasks, report

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
            with open(path, "w") as fh:
                json.dump(asdict(report), fh, indent=2)
        return [InputPartition(g) for g in groups]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Executor side: read one group of file scan tasks, applying delete files and pushed filters."""
        tasks: list[FileScanTask] = partition.value or []
        if not tasks:
            return
        target = arrow_for_spark(self.struct)
        post = [p for p in self.pushed if p.post_filter]
        wanted = list(dict.fromkeys([*self.struct.fieldNames(), *[p.column for p in post]]))
        projected = self.schema.select(*wanted)
        io = load_file_io(self.io_properties, self.metadata.location)
        scan = ArrowScan(self.metadata, io, projected, _row_filter(self.schema, self.pushed), case_sensitive=True)
        for batch in scan.to_record_batches(tasks):
            for p in post:
                col = batch.column(p.column)
                leaf = self.schema.find_field(p.column).field_type
                value_set = pa.array([lit.value for lit in coerce_values(list(p.values), leaf, p.column)],
                                     type=col.type)
                batch = batch.filter(pc.is_in(col, value_set=value_set))
            if batch.num_rows:
                yield cast_batch(batch, target)
