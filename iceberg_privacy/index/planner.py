"""Plan an identity lookup: the exact index when the column has one, else manifests then Bloom sidecars.

Exact index (docs/exact-index.md): the looked-up values' 64-bit hashes are probed in the base and the
deltas (one small range read per key partition), giving candidate files and row groups; which
candidates are live in the target snapshot, and which live files no index covers, comes from
:func:`iceberg_privacy.index.liveness.resolve` (the index's covered manifests plus only the manifests
added since), so planning does not decode every manifest. Files no usable index covers go through
the Bloom path below: probed or scanned, never skipped.

Bloom path: manifest pruning (partitions, column min/max) comes from pyiceberg's own scan planning
with an ``In``/``EqualTo`` filter on the column. The sidecars then remove every remaining file whose
filter says "absent" for all the values. Files without a usable filter are kept: a missing, corrupt
or foreign-written file costs a scan, never a wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In, Reference
from pyiceberg.expressions.literals import Literal
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import NestedField, PrimitiveType, UUIDType

from iceberg_privacy._internal import compat
from iceberg_privacy.catalog import TableRef, load_table, table_name
from iceberg_privacy.config import bloom_columns, resolve_column
from iceberg_privacy.errors import IcebergPrivacyError, SidecarError, UnknownColumnError
from iceberg_privacy.identities import as_values, identity_leaf_type, is_nested
from iceberg_privacy.index.exact_plan import describes, exact_sources, literal_hashes, paused_gc, probe_exact
from iceberg_privacy.index.hashing import coerce_values, hash_literals, mix64
from iceberg_privacy.index.registry import resolve_coverage, warn
from iceberg_privacy.storage import storage_errors

BATCH_THRESHOLD = 200
"""Above this many values pyiceberg's metrics pruning gives up on ``In`` anyway, and evaluating a huge
``In`` per file costs more than matching rows after the read, so large batches plan without it
(unless the column drives a partition transform) and match with Arrow's ``is_in``."""


@dataclass
class LookupPlan:
    """Which files a lookup reads, and why the others were skipped."""

    table: str
    column: str
    snapshot_id: int | None
    values: list[Literal[Any]]
    nested: bool
    row_filter: BooleanExpression
    post_filter: bool  # rows matched after reading: nested ids, large batches, uuid (pyarrow 18 can't compare)
    selected_fields: tuple[str, ...]
    tasks: list[FileScanTask]
    metadata: TableMetadata
    files_total: int = 0
    files_after_manifest_pruning: int = 0
    files_after_bloom_pruning: int = 0
    files_without_sidecar: int = 0
    row_groups: dict[str, tuple[int, ...]] | None = None  # file -> row groups that may hold a key; absent: all
    exact_index_used: bool = False
    exact_configured: bool = False
    files_after_exact_index: int = 0  # live candidates of the exact index
    files_not_in_index: int = 0  # live files no usable exact index covers: Bloom-probed or scanned
    exact_indexes_probed: int = 0  # base + deltas probed
    manifests_decoded: int = 0
    index_bytes_read: int = 0  # every sidecar byte this plan fetched: footers, file lists, directories, rows
    index_requests: int = 0  # storage reads for sidecars (a cached sidecar costs one per probed blob row run)
    sidecars_opened: int = 0
    bloom_configured: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pinned: bool = False  # the caller named the snapshot (time travel): rows come in that snapshot's schema
    field: NestedField | None = None  # the column matched (under time travel possibly one dropped since)

    @property
    def files_to_read(self) -> list[str]:
        return [t.file.file_path for t in self.tasks]

    def explain(self) -> str:
        if self.exact_index_used:
            return self._explain_exact()
        lines = [
            f"lookup {self.table}.{self.column} for {len(self.values)} value(s) at snapshot {self.snapshot_id}",
            f"  files in snapshot              {self.files_total:>8}",
            f"  after manifest pruning         {self.files_after_manifest_pruning:>8}   (partitions, min/max)",
            f"  after bloom pruning            {self.files_after_bloom_pruning:>8}   "
            f"({self.sidecars_opened} sidecar(s), {self.index_bytes_read} index bytes in {self.index_requests} read(s))",
            f"  of which without usable filter {self.files_without_sidecar:>8}   (scanned, never skipped)",
        ]
        if not self.bloom_configured:
            lines.append(f"  note: {self.column!r} is not a bloom column of this table: no bloom pruning")
        if self.nested:
            lines.append("  note: nested identity column: rows are matched after reading (no min/max pruning)")
        elif self.post_filter:
            lines.append("  note: rows are matched after reading (large batch, or a type pyarrow cannot filter)")
        if self.timings:
            lines.append("  timings: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.timings.items()))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _explain_exact(self) -> str:
        groups = sum(len(v) for v in (self.row_groups or {}).values())
        lines = [
            f"lookup {self.table}.{self.column} for {len(self.values)} value(s) at snapshot {self.snapshot_id}",
            f"  files in snapshot              {self.files_total:>8}",
            f"  exact index candidates (live)  {self.files_after_exact_index:>8}   "
            f"({self.exact_indexes_probed} index file(s), {groups} row group(s) named, "
            f"{self.index_bytes_read} index bytes in {self.index_requests} read(s))",
            f"  live files not in the index    {self.files_not_in_index:>8}   (Bloom-probed or scanned, never skipped)",
            f"    of which kept after bloom    {self.files_after_bloom_pruning:>8}",
            f"  files to read                  {len(self.tasks):>8}   ({self.manifests_decoded} manifest(s) decoded)",
        ]
        if self.nested:
            lines.append("  note: nested identity column: rows are matched after reading")
        if self.timings:
            lines.append("  timings: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.timings.items()))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


@storage_errors
def plan_lookup(
    table: TableRef,
    column: str,
    values: Any,
    *,
    snapshot_id: int | None = None,
    selected_fields: Sequence[str] | None = None,
    catalog: Catalog | None = None,
    cached_manifests: bool = False,
) -> LookupPlan:
    """Plan the files a lookup of ``values`` in ``column`` must read (see :class:`LookupPlan`).

    ``cached_manifests``: decode the snapshot's manifests through the per-process manifest cache
    (:mod:`iceberg_privacy.index.liveness`; manifests are immutable) instead of pyiceberg's ``plan_files``,
    which decodes every manifest on every plan: for a caller planning many lookups at the same snapshot (a
    submit reading each request's linked identifiers). Same files, same delete files, same residuals."""
    table = load_table(catalog, table)
    with paused_gc():  # a large batch allocates a few objects per value and per file, none of them garbage
        return _plan_lookup(table, column, values, snapshot_id, selected_fields, cached_manifests)


def _plan_lookup(table: Table, column: str, values: Any, snapshot_id: int | None,
                 selected_fields: Sequence[str] | None, cached_manifests: bool = False) -> LookupPlan:
    t0 = time.perf_counter()
    metadata = table.metadata
    snap = metadata.snapshot_by_id(snapshot_id) if snapshot_id is not None else metadata.current_snapshot()
    if snapshot_id is not None and snap is None:
        raise IcebergPrivacyError(
            f"snapshot {snapshot_id} does not exist in {table_name(table)}; see table.snapshots()"
        )
    pinned_schema = metadata.schema_by_id(snap.schema_id) if (snapshot_id is not None and snap is not None
                                                               and snap.schema_id is not None) else None
    field_, current_name = _lookup_field(table.schema(), pinned_schema, column, table_name(table))
    leaf = identity_leaf_type(field_)
    literals = coerce_values(as_values(values), leaf, column)
    # Deduplicate by the literal's internal value, keeping order.
    literals = list({lit.value: lit for lit in literals}.values())
    nested = is_nested(field_)
    if isinstance(selected_fields, str):  # one column, not its letters
        selected_fields = (selected_fields,)
    fields = tuple(selected_fields) if selected_fields else ("*",)
    if fields != ("*",):
        # as pyiceberg: time travel reads the snapshot's schema; the current snapshot the current schema (a
        # rename or a new column since the last commit is already visible)
        _check_fields(pinned_schema or table.schema(), fields, table_name(table))
    partition_sources = {pf.source_id for spec in metadata.specs().values() for pf in spec.fields}
    big = len(literals) > BATCH_THRESHOLD
    # A column since dropped (time travel to it) has no name pyiceberg's planning can bind: no manifest pruning
    post_filter = nested or big or isinstance(leaf, UUIDType) or current_name is None
    if nested or (big and field_.field_id not in partition_sources) or _uuid_identity_partitioned(metadata, field_) \
            or current_name is None:
        # Rows are matched after reading (post_filter); a 100,000-value ``In`` would only cost time to build.
        row_filter: BooleanExpression = AlwaysTrue()
    elif len(literals) == 1:
        row_filter = EqualTo(term=Reference(current_name), value=literals[0])
    else:
        row_filter = In(term=Reference(current_name), values=set(literals))
    plan_filter = row_filter
    plan = LookupPlan(table_name(table), column, snap.snapshot_id if snap else None, literals, nested,
                      row_filter, post_filter, fields, [], metadata, pinned=snapshot_id is not None, field=field_)
    # by field id: the configuration of the column the lookup matches (not of another one under its name)
    column_cfg = next((c for c in bloom_columns(table.schema(), table.properties) if c.field_id == field_.field_id),
                      None)
    plan.bloom_configured = column_cfg is not None and column_cfg.bloom
    if snap is None or not literals:
        plan.timings["plan"] = time.perf_counter() - t0
        return plan
    plan.files_total = int(snap.summary.additional_properties.get("total-data-files", 0)) if snap.summary else 0
    plan.exact_configured = column_cfg is not None and column_cfg.exact
    if plan.exact_configured:
        tasks = _exact_plan(table, plan, field_.field_id, leaf, plan_filter, t0)
        if tasks is not None:
            plan.tasks = tasks
            plan.timings["plan"] = time.perf_counter() - t0
            return plan
    scan = table.scan(row_filter=plan_filter, snapshot_id=snap.snapshot_id)
    if cached_manifests:
        from iceberg_privacy.index import liveness  # noqa: PLC0415 - as in _exact_plan
    try:
        tasks = (liveness.resolve(table.io, metadata, snap.snapshot_id, {}, frozenset(), row_filter=plan_filter).tasks
                 if cached_manifests else list(scan.plan_files()))
    except ValueError as exc:
        if not compat.is_equality_deletes_refused(exc):
            raise
        raise IcebergPrivacyError(  # as the exact-index path (liveness) refuses them
            f"{table_name(table)} has equality delete files at snapshot {snap.snapshot_id} (another engine's "
            "merge-on-read DELETE), which pyiceberg 0.12 cannot apply, so its rows cannot be read exactly; compact "
            "the table's deletes with an engine that can (Spark: CALL <catalog>.system.rewrite_data_files(table => "
            f"'{table_name(table)}', options => map('delete-file-threshold', '1'))) and look up again") from exc
    plan.files_total = plan.files_total or len(tasks)
    plan.files_after_manifest_pruning = len(tasks)
    t1 = time.perf_counter()
    plan.timings["manifest_pruning"] = t1 - t0
    plan.tasks = _bloom_prune(table, plan, tasks, field_.field_id, mix64(hash_literals(literals, leaf)))
    plan.files_after_bloom_pruning = len(plan.tasks)
    plan.timings["bloom_pruning"] = time.perf_counter() - t1
    return plan


def _lookup_field(current: Schema, pinned: Schema | None, column: str, where: str) -> tuple[NestedField, str | None]:
    """The column a lookup matches, and its name in the current schema (None: dropped since).

    By today's name, as pyiceberg binds filters, when that column existed at the snapshot the lookup reads (a
    rename since is followed). Under time travel (``pinned``: the snapshot's schema, in which the rows come
    back), a name today's schema lacks, or gives to a column the snapshot did not have, is that snapshot's
    column: its name before a rename, or a column since dropped and added again under the same name (the rows
    show the old column under that name, so a lookup by it must match the old column, not return nothing).
    """
    now = next((f for f in current.fields if f.name == column), None)
    if pinned is not None:
        then = {f.field_id: f for f in pinned.fields}
        then_by_name = next((f for f in pinned.fields if f.name == column), None)
        if then_by_name is not None and (now is None or now.field_id not in then):
            today = next((f for f in current.fields if f.field_id == then_by_name.field_id), None)
            return (today, today.name) if today is not None else (then_by_name, None)
    field_ = resolve_column(current, column, where)
    return field_, field_.name


def _uuid_identity_partitioned(metadata: TableMetadata, field_: Any) -> bool:
    """A uuid column that some spec partitions by identity: pyiceberg 0.12 compares the uuid literal (its 16
    bytes) with the partition values it reads back as ``uuid.UUID``, never equal, so its manifest pruning
    would drop every file holding the value. Such lookups plan without a filter (the sidecars and the exact
    index still prune) and match rows after reading, as for every uuid column."""
    return isinstance(field_.field_type, UUIDType) and any(
        pf.source_id == field_.field_id and isinstance(pf.transform, IdentityTransform)
        for spec in metadata.specs().values() for pf in spec.fields)


def _check_fields(schema: Schema, fields: tuple[str, ...], where: str) -> None:
    """A clear error (before any read) for a selected field the schema the lookup reads lacks."""
    for name in fields:
        try:
            if isinstance(name, str):
                schema.find_field(name, case_sensitive=True)
                continue
        except ValueError:
            pass
        raise UnknownColumnError(f"selected field {name!r} is not a column of {where}; available: "
                                 f"{', '.join(f.name for f in schema.fields)}")


def _exact_plan(table: Table, plan: LookupPlan, field_id: int, leaf: PrimitiveType, plan_filter: BooleanExpression,
                t0: float) -> list[FileScanTask] | None:
    """Plan through the exact index; None when no exact index exists for the column (today's path)."""
    from iceberg_privacy.index import liveness  # noqa: PLC0415 - the Bloom-only path never needs it

    assert plan.snapshot_id is not None
    sources = exact_sources(table.io, plan.metadata, field_id)
    plan.warnings += sources.warnings
    if not sources.indexes:
        return None
    keys = literal_hashes(plan.values, leaf)
    probe = probe_exact(sources, field_id, keys)
    plan.warnings += probe.warnings
    plan.exact_indexes_probed = probe.probed
    plan.index_bytes_read += probe.bytes_read
    plan.index_requests += probe.requests
    t1 = time.perf_counter()
    plan.timings["exact_probe"] = t1 - t0
    usable = probe.usable
    base = sources.base.index if sources.base is not None and sources.base.index in usable else None
    covered = frozenset(base.manifests) if base is not None else frozenset()

    def indexed(path: str, data_file: DataFile) -> bool:
        for idx in reversed(usable):  # deltas (small) before the base
            if id(idx) in broken:
                continue
            try:
                row = idx.record(path)
                if row is not None:
                    if describes(row, int(data_file.record_count), int(data_file.file_size_in_bytes)):
                        return True
                    stale.add(path)  # this index describes other bytes at a reused path
            except SidecarError as exc:  # a file-table chunk the probe did not need is corrupt
                broken.add(id(idx))
                plan.warnings.append(warn(f"{exc}; files it lists outside its covered manifests are scanned"))
        return False

    broken: set[int] = set()
    stale: set[str] = set()

    # A large batch matches rows after reading, so pruning by a huge In() (a residual per file over every
    # value through the partition transform: minutes at 10,000 values) buys nothing for the candidates;
    # files the index does not cover are Bloom-probed instead.
    prune = AlwaysTrue() if len(plan.values) > BATCH_THRESHOLD else plan_filter
    live = liveness.resolve(table.io, plan.metadata, plan.snapshot_id, probe.candidates, covered, indexed,
                            row_filter=prune, stored=probe.stored if base is not None else None)
    t2 = time.perf_counter()
    plan.timings["liveness"] = t2 - t1
    for src in sources.indexes:  # file tables the membership checks fetched (once per process)
        plan.index_bytes_read += src.index.reader.bytes_read - src.bytes_before
        plan.index_requests += src.index.reader.requests - src.requests_before
    plan.manifests_decoded = live.manifests_decoded
    plan.exact_index_used = True
    demoted = [live.live.pop(p) for p in list(live.live)
               if not describes(probe.records[p], int(live.live[p].file.record_count),
                                int(live.live[p].file.file_size_in_bytes))]
    stale.update(t.file.file_path for t in demoted)
    if stale:  # its keys and row groups are another file's: Bloom-probed (size-checked) or scanned, no hints
        plan.warnings.append(warn(f"the exact index describes {len(stale)} live file(s) with another record count or "
                                  "size (a path reused after the file left the table): they are not pruned by it"))
    tasks = [live.live[p] for p in probe.candidates if p in live.live]
    plan.row_groups = {p: probe.row_groups[p] for p in probe.candidates if p in live.live}  # sorted tuples
    plan.files_after_exact_index = len(tasks)
    plan.files_not_in_index = len(live.not_indexed)
    plan.files_after_manifest_pruning = len(tasks) + len(live.not_indexed)
    rest = list(live.not_indexed) + demoted
    if rest and plan.bloom_configured:
        rest = _bloom_prune(table, plan, rest, field_id, mix64(hash_literals(plan.values, leaf)))
        plan.timings["bloom_pruning"] = time.perf_counter() - t2
    elif rest:
        plan.files_without_sidecar += len(rest)
    plan.files_after_bloom_pruning = len(rest)
    return tasks + rest


def _bloom_prune(table: Table, plan: LookupPlan, tasks: list[FileScanTask], field_id: int, keys: np.ndarray) -> list[FileScanTask]:
    if not tasks:
        return tasks
    paths = {t.file.file_path for t in tasks}
    expected = {t.file.file_path: (int(t.file.record_count), int(t.file.file_size_in_bytes)) for t in tasks}
    cov = resolve_coverage(table.io, plan.metadata, field_id, paths, expected)
    plan.warnings += cov.warnings
    plan.sidecars_opened += cov.sidecars_opened
    plan.index_bytes_read += cov.bytes_read
    plan.index_requests += cov.requests
    keep = set(cov.uncovered)
    for a in cov.assignments:
        before, before_requests = a.sidecar.bytes_read, a.sidecar.reader.requests
        try:
            hits = a.sidecar.probe(a.group, keys)
        except SidecarError as exc:
            plan.warnings.append(warn(f"{exc}; scanning the {len(a.paths)} file(s) it covers"))
            keep.update(a.paths)
            plan.files_without_sidecar += len(a.paths)
            continue
        finally:
            plan.index_bytes_read += a.sidecar.bytes_read - before
            plan.index_requests += a.sidecar.reader.requests - before_requests
        keep.update(p for p, pos in zip(a.paths, a.positions, strict=True) if hits[pos])
    plan.files_without_sidecar += len(cov.uncovered)
    return [t for t in tasks if t.file.file_path in keep]
