"""Sidecar maintenance: backfill, compaction, snapshot expiry that keeps coverage, orphan cleanup.

All of them rebuild the same thing, a *compacted* sidecar covering every live data file, from the
filters already stored (copied block rows, no data re-read) plus, for backfill, filters built by
reading files nobody has indexed yet. It is registered on the newest snapshot whose statistics slot
is free or already ours, and under the ``privacy.sidecar.compacted`` table property, in one commit.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent
from pyiceberg.table import StaticTable, Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.arguments import check_engine
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import TableRef, check_committable, load_table, table_name
from iceberg_privacy.config import BloomColumn, bloom_columns, declared_identity_names
from iceberg_privacy.errors import CommitConflictError, ConfigurationError, SidecarError
from iceberg_privacy.index import exact
from iceberg_privacy.index.build import FilterBuilder, filters_for_data_files
from iceberg_privacy.index.exact import ExactKeys, StoredTask
from iceberg_privacy.index.exact_plan import describes, exact_sources
from iceberg_privacy.index.liveness import stored_task
from iceberg_privacy.index.registry import (
    PROPERTY_COMPACTED,
    PROPERTY_COMPACTED_BYTES,
    is_sidecar_path,
    new_sidecar_location,
    outside_writes,
    referenced_sidecar_locations,
    resolve_coverage,
    sidecar_refs,
    statistics_entry,
    warn,
)
from iceberg_privacy.index.sidecar import CACHE, ColumnInfo, CoveredFile, FileFilter, write_sidecar
from iceberg_privacy.index.supersede import (
    already_compact,
    own_sidecars,
    referenced_right_before,
    unregister_former_bases,
)
from iceberg_privacy.lineage.record import fold_expired
from iceberg_privacy.storage import (
    canonical,
    delete_files,
    storage_errors,
)
from iceberg_privacy.version import __version__

logger = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """Outcome of a backfill, compaction or expiry."""

    operation: str
    live_files: int = 0
    covered: dict[str, int] = field(default_factory=dict)
    built: dict[str, int] = field(default_factory=dict)
    sidecar_path: str | None = None
    sidecar_bytes: int = 0
    registered_on_snapshot: int | None = None
    expired_snapshots: list[int] = field(default_factory=list)
    deleted_sidecars: list[str] = field(default_factory=list)
    delete_failures: dict[str, str] = field(default_factory=dict)  # superseded sidecar -> why it is still there
    warnings: list[str] = field(default_factory=list)
    unchanged: bool = False  # a compaction that found the base already compact: nothing written or committed

    def __str__(self) -> str:
        cov = ", ".join(f"{c}: {n}/{self.live_files}" for c, n in self.covered.items())
        if self.unchanged:
            return (f"{self.operation}: {self.live_files} live files, covered {cov or '-'}; already compact "
                    "(one base covering every live file): nothing written or committed")
        out = (
            f"{self.operation}: {self.live_files} live files, covered {cov or '-'}; built {self.built or '-'}; "
            f"sidecar {self.sidecar_bytes} bytes; expired {len(self.expired_snapshots)} snapshot(s); "
            f"deleted {len(self.deleted_sidecars)} superseded sidecar(s)"
        )
        if self.delete_failures:
            out += f"; {len(self.delete_failures)} could NOT be deleted (see delete_failures; cleanup_orphans retries)"
        return out


def live_data_files(table: Table, snapshot_ids: Iterable[int] | None = None) -> dict[str, DataFile]:
    """Data files (by path) reachable from the given snapshots (default: every snapshot)."""
    md = table.metadata
    ids = list(snapshot_ids) if snapshot_ids is not None else [s.snapshot_id for s in md.snapshots]
    out: dict[str, DataFile] = {}
    seen_manifests: set[str] = set()
    for sid in ids:
        snap = md.snapshot_by_id(sid)
        if snap is None:
            continue
        for manifest in snap.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.data_file.content == DataFileContent.DATA:
                    out.setdefault(entry.data_file.file_path, entry.data_file)
    return out


def _sizes(live: dict[str, DataFile]) -> dict[str, tuple[int, int]]:
    """Record count and byte size of each live file: a sidecar recording others for a path is stale."""
    return {p: (int(f.record_count), int(f.file_size_in_bytes)) for p, f in live.items()}


def _registration_snapshot(md: TableMetadata, candidates: set[int]) -> int | None:
    """The current snapshot, else the newest retained one, whose statistics slot is free or holds one of our
    sidecars. The current snapshot first: after a rollback the newest snapshot is one no ref keeps, the first any
    expiry removes, and Java's expiry deletes the statistics files of the snapshots it expires: the base, though
    the property still names it (every lookup then scanned until the next compaction)."""
    taken = {s.snapshot_id: s.statistics_path for s in md.statistics}
    newest = sorted(md.snapshots, key=lambda s: s.sequence_number or 0, reverse=True)
    for sid in [md.current_snapshot_id, *(s.snapshot_id for s in newest)]:
        if sid is not None and sid in candidates and (sid not in taken or is_sidecar_path(taken[sid])):
            return sid
    return None




def _collect_filters(table: Table, live: dict[str, DataFile], columns: list[BloomColumn], build_missing: bool,
                     report: IndexReport, progress: bool,
                     build: FilterBuilder = filters_for_data_files) -> dict[str, dict[int, FileFilter]]:
    """path -> {field_id: filter}: copied from readable sidecars, or built for uncovered files."""
    per_file: dict[str, dict[int, FileFilter]] = {}
    for col in columns:
        cov = resolve_coverage(table.io, table.metadata, col.field_id, set(live), _sizes(live))
        report.warnings += cov.warnings
        uncovered = set(cov.uncovered)
        for a in cov.assignments:
            try:
                matrix = a.sidecar.filters(a.group)
            except SidecarError as exc:
                report.warnings.append(warn(f"{exc}; rebuilding or dropping coverage of {len(a.paths)} file(s)"))
                uncovered.update(a.paths)
                continue
            for path, pos in zip(a.paths, a.positions, strict=True):
                per_file.setdefault(path, {})[col.field_id] = FileFilter(int(a.group.ndv[pos]), matrix[:, pos, :].copy())
        if build_missing and uncovered:
            files = [live[p] for p in sorted(uncovered)]
            built = build(table.io, table.metadata, files, [col], progress=progress)
            for f, flt in zip(files, built, strict=True):
                per_file.setdefault(f.file_path, {})[col.field_id] = flt[col.field_id]
            report.built[col.name] = len(files)
            uncovered.clear()
        report.covered[col.name] = len(live) - len(uncovered)
    return per_file


def _group_by_file(f: np.ndarray, h: np.ndarray, r: np.ndarray, num_files: int, key_bits: int = 64) -> list[ExactKeys]:
    """Per-file keys of a blob's entries; ``key_bits`` (the blob's K) goes with them, so a base merged from
    them never claims bits the blob did not keep."""
    order = np.argsort(f, kind="stable")
    counts = np.bincount(f.astype(np.int64), minlength=num_files)
    ends = np.cumsum(counts)
    out = []
    for o in range(num_files):
        sel = order[ends[o] - counts[o] : ends[o]]
        out.append(ExactKeys(h[sel].astype(np.uint64), r[sel].astype(np.uint32), key_bits))
    return out


def _collect_exact(table: Table, live: dict[str, DataFile], columns: list[BloomColumn], build_missing: bool,
                   report: IndexReport, progress: bool, build: FilterBuilder,
                   prebuilt: dict[str, dict[int, FileFilter]]) -> dict[str, dict[int, ExactKeys]]:
    """path -> {field_id: exact keys} for live files: copied from every readable base/delta, taken from
    ``prebuilt`` (filters backfill just built from the data), or built."""
    out: dict[str, dict[int, ExactKeys]] = {}
    for path, built_filters in prebuilt.items():
        for fid, flt in built_filters.items():
            if flt.exact is not None and path in live:
                out.setdefault(path, {})[fid] = flt.exact
    wanted = {c.field_id for c in columns}
    for ref in sidecar_refs(table.metadata):
        try:
            idx, _ = exact.CACHE.get(table.io, ref.location, ref.size)
            if idx is None:
                continue
            fids = [fid for fid in idx.columns if fid in wanted]
            if not fids:
                continue
            # a row describing other bytes at a path reused since (record count/size differ) is stale: not copied
            files = [ef if ef.path in live and describes(ef, int(live[ef.path].record_count),
                                                         int(live[ef.path].file_size_in_bytes)) else ef._replace(path="")
                     for ef in idx.all_files()]
            if not any(ef.path in live for ef in files):
                continue
            per_col = {}
            for fid in fids:
                h, f, r = idx.read_column(fid)
                per_col[fid] = _group_by_file(f, h, r, len(files), idx.key_bits(fid))
        except SidecarError as exc:
            report.warnings.append(warn(f"exact index {ref.location} unreadable: {exc}; its files are rebuilt or "
                                        "left out of the base (then scanned)"))
            continue
        for o, ef in enumerate(files):
            if ef.path in live:
                slot = out.setdefault(ef.path, {})
                for fid in fids:
                    slot.setdefault(fid, per_col[fid][o])
    for col in columns:
        missing = sorted(p for p in live if col.field_id not in out.get(p, {}))
        if build_missing and missing:
            files_ = [live[p] for p in missing]
            built = build(table.io, table.metadata, files_, [col], progress=progress)
            for f_, per_column in zip(files_, built, strict=True):
                keys = per_column[col.field_id].exact
                if keys is not None:
                    out.setdefault(f_.file_path, {})[col.field_id] = keys
            report.built[f"{col.name} (exact)"] = len(files_)
        report.covered[f"{col.name} (exact)"] = sum(1 for p in live if col.field_id in out.get(p, {}))
    return out


def _covered_manifests(table: Table, md: TableMetadata, indexed: set[str]
                       ) -> tuple[int | None, list[str], dict[str, int], dict[str, StoredTask]]:
    """The base's covered snapshot (the current one), its data manifests whose live files are all indexed,
    for each indexed file live there the index of the manifest listing it, and what its scan task needs
    (so that planning builds the task without decoding that manifest again)."""
    snap = md.current_snapshot()
    if snap is None:
        return None, [], {}, {}
    manifests: list[str] = []
    where: dict[str, int] = {}
    tasks: dict[str, StoredTask] = {}
    types: dict[int, list[Any] | None] = {}  # partition types by spec id
    for m in snap.manifests(table.io):
        if m.content != ManifestContent.DATA:
            continue
        entries = [e for e in m.fetch_manifest_entry(table.io, discard_deleted=True)
                   if e.data_file.content == DataFileContent.DATA]
        if all(e.data_file.file_path in indexed for e in entries):
            manifests.append(m.manifest_path)
            for e in entries:
                where[e.data_file.file_path] = len(manifests) - 1
                st = stored_task(e, md, types)
                if st is not None:
                    tasks[e.data_file.file_path] = st
    return snap.snapshot_id, manifests, where, tasks


def _unchanged(report: IndexReport, base: str, md: TableMetadata, columns: list[BloomColumn],
               live: dict[str, DataFile]) -> IndexReport:
    """The report of a compaction that found the base already compact (supersede.already_compact)."""
    report.unchanged = True
    # already_compact: every file, every column; the exact index every Parquet file (another engine's ORC/Avro
    # files have no row groups to index)
    parquet = sum(1 for f in live.values() if f.file_format == FileFormat.PARQUET)
    report.covered = {name: count for c in columns for name, count in (
        ([(c.name, report.live_files)] if c.bloom else []) + ([(f"{c.name} (exact)", parquet)] if c.exact else []))}
    report.sidecar_path = base
    report.sidecar_bytes = int(md.properties.get(PROPERTY_COMPACTED_BYTES) or 0)
    report.registered_on_snapshot = md.current_snapshot_id
    logger.info("%s", report)
    return report


class _Restart(Exception):
    """This attempt lost a race (its commit conflicted, or sidecars it was copying vanished because another
    process changed the table meanwhile): build it again from the new head."""


def _rebuild(table: Table, operation: str, *, build_missing: bool, expire_ids: set[int] | None = None,
             progress: bool = False, build: FilterBuilder = filters_for_data_files,
             policy: retry.RetryPolicy = retry.DEFAULT_POLICY) -> IndexReport:
    """Build and commit the compacted sidecar, from the current metadata, under the one retry policy.

    A compaction, expiry or backfill racing another one (or an append) must not commit a sidecar built from
    inputs the winner deleted meanwhile: it would cover fewer files than the sidecar it replaces, and the
    per-commit sidecars that covered them are gone, so the coverage would be lost for good. pyiceberg's own
    commit retry (which re-applies the same stale sidecar on the new head) is off; each attempt re-reads."""
    check_committable(table)  # before the sidecar is written
    last: BaseException | None = None
    for attempt in retry.attempts(policy):
        try:
            table.refresh()
            with retry.vanished_is_conflict(table):  # manifests or sidecars another process expired meanwhile
                return _rebuild_once(table, operation, build_missing=build_missing, expire_ids=expire_ids,
                                     progress=progress, build=build)
        except Exception as exc:
            if not isinstance(exc, _Restart) and not retry.is_conflict(exc):
                raise
            last = exc
            logger.info("%s of %s, attempt %d, lost a race: %s", operation, table_name(table), attempt, exc)
    raise CommitConflictError(
        f"{operation} of the sidecars of {table_name(table)} lost to concurrent commits "
        f"{policy.attempts} times; nothing was committed. Retry later or stop the other "
        "maintenance jobs on this table."
    ) from last


def _rebuild_once(table: Table, operation: str, *, build_missing: bool, expire_ids: set[int] | None,
                  progress: bool, build: FilterBuilder) -> IndexReport:
    md = table.metadata
    started_at = table.metadata_location
    if expire_ids:  # another process (a second purge, a scheduler) may have expired some of them meanwhile, or made
        # one a branch or tag head (pyiceberg's commit keeps those without a word: not expired, not reported so)
        heads = {ref.snapshot_id for ref in md.refs.values()}
        expire_ids = {i for i in expire_ids if md.snapshot_by_id(i) is not None and i not in heads}
    columns = bloom_columns(table.schema(), table.properties)
    report = IndexReport(operation)
    retained = {s.snapshot_id for s in md.snapshots} - (expire_ids or set())
    # newest first: when a path was reused for other bytes, the file the newest snapshot lists is the one
    # whose filters count (an older snapshot's entry describes bytes that are gone)
    live = live_data_files(table, sorted(retained, key=lambda i: _sequence_number(md, i), reverse=True))
    report.live_files = len(live)
    before = referenced_sidecar_locations(md)
    if operation == "compact" and not expire_ids and not build_missing and (
            base := already_compact(table, md, columns, live)) is not None:
        return _unchanged(report, base, md, columns, live)  # nothing to merge: no new base, no commit
    checkpoint("index.before_build")  # the inputs are chosen, not yet read
    committing = compat.without_commit_retries(table)
    tx: Transaction = committing.transaction()
    if expire_ids:
        kept = fold_expired(md, expire_ids)  # summaries go with their snapshots; their lineage must not
        compat.expire_snapshot_ids(tx, sorted(expire_ids))  # pyiceberg's by_ids copies the metadata per id
        # Removing a snapshot also removes every ref on it, and a catalog applies this commit on ITS head: a tag
        # or branch another process put on one of these snapshots since ``md`` was read would be dropped with it.
        # Checked just before the commit (_refs_onto): such a ref makes the attempt re-plan without its snapshot.
        if kept:
            tx.set_properties(kept)
        report.expired_snapshots = sorted(expire_ids)
    bloom_cols = [c for c in columns if c.bloom]
    exact_cols = [c for c in columns if c.exact]
    per_file = _collect_filters(table, live, bloom_cols, build_missing, report, progress, build) if bloom_cols else {}
    per_exact = (_collect_exact(table, live, exact_cols, build_missing, report, progress, build, per_file)
                 if exact_cols else {})
    if report.warnings and _collected_elsewhere(table, started_at, before):
        raise _Restart("sidecars this attempt copies were unreadable: another process replaced and deleted them")
    for path, keys in per_exact.items():
        slot = per_file.setdefault(path, {})
        for fid, k in keys.items():
            old = slot.get(fid)
            slot[fid] = FileFilter(old.ndv if old else len(np.unique(k.hashes)), old.blocks if old else None, k)
    target = _registration_snapshot(tx.table_metadata, retained)
    if per_file and target is not None:
        paths = sorted(per_file)
        indexed = {p for p in paths if all(c.field_id in per_exact.get(p, {}) for c in exact_cols)} if exact_cols else set()
        covered_id, manifests, where, stored = _covered_manifests(table, tx.table_metadata, indexed)
        location = new_sidecar_location(md, target)
        footer = write_sidecar(
            table.io, location,
            [CoveredFile(p, live[p].record_count, live[p].file_size_in_bytes) for p in paths],
            [ColumnInfo(c.field_id, c.name, c.fpp, c.ndv) for c in columns],
            {c.field_id: {i: per_file[p][c.field_id] for i, p in enumerate(paths) if c.field_id in per_file[p]}
             for c in columns},
            snapshot_id=target, sequence_number=_sequence_number(md, target),
            created_by=f"iceberg-privacy {__version__}",
            covered_snapshot_id=covered_id, manifests=manifests, file_manifests=[where.get(p, -1) for p in paths],
            file_tasks=[stored.get(p) for p in paths],
        )
        unregister_former_bases(table, tx, md, bool(exact_cols), keep=target)
        tx.update_statistics().set_statistics(statistics_entry(target, location, footer)).commit()
        tx.set_properties({PROPERTY_COMPACTED: location, PROPERTY_COMPACTED_BYTES: str(footer.file_size)})
        report.sidecar_path, report.sidecar_bytes, report.registered_on_snapshot = location, footer.file_size, target
    elif per_file:
        report.warnings.append(warn("no snapshot to register the compacted sidecar on; nothing written"))
    elif md.properties.get(PROPERTY_COMPACTED):
        # No retained snapshot has a data file with filters (an erasure removed the last rows): the old compacted
        # sidecar covers only files that are gone, and its Bloom filters may still answer for an erased subject.
        # Unreferenced, it is deleted below with the other superseded sidecars (kept, a purge's verification
        # failed on it for good).
        unregister_former_bases(table, tx, md, bool(exact_cols), keep=None)
        tx.remove_properties(PROPERTY_COMPACTED, PROPERTY_COMPACTED_BYTES)
    checkpoint("index.before_commit")  # the new compacted sidecar (base) is written, not yet referenced
    try:
        if expire_ids and (onto := _refs_onto(table, expire_ids)):
            raise _Restart(f"ref(s) {', '.join(onto)} of {table_name(table)} now point at snapshots this expiry "
                           "planned to remove")
        tx.commit_transaction()
    except Exception as exc:
        if (isinstance(exc, _Restart) or retry.is_conflict(exc)) and report.sidecar_path is not None:
            # never referenced: this attempt's file
            outcome = delete_files(table.io, [report.sidecar_path])
            for why in outcome.failed.values():
                warn(f"unreferenced sidecar of a lost commit not deleted: {why} (cleanup_orphans removes it)")
        raise
    checkpoint("index.after_commit")
    before |= referenced_right_before(table.io, committing.metadata, started_at)
    table.refresh()
    # Sidecars nothing references any more are garbage; readers that still hold them fall back to scans.
    still = {canonical(p) for p in referenced_sidecar_locations(table.metadata)}
    superseded = [p for p in before if canonical(p) not in still]
    garbage, foreign = own_sidecars(table.location(), superseded)
    if foreign:  # a reference set by hand or copied from another table: that file is not this table's to delete
        report.warnings.append(warn(
            f"{len(foreign)} superseded sidecar reference(s) of {table_name(table)} name no sidecar this table wrote "
            f"(e.g. {sorted(foreign)[0]}): left in place"))
    outcome = delete_files(table.io, sorted(garbage))
    for location in outcome.deleted + outcome.already_gone:
        CACHE.evict(location)
        exact.CACHE.evict(location)
    report.deleted_sidecars = outcome.deleted + outcome.already_gone
    report.delete_failures = outcome.failed
    for why in outcome.failed.values():  # the commit stands; an unreferenced sidecar is an orphan to retry
        report.warnings.append(warn(f"superseded sidecar not deleted: {why}"))
    logger.info("%s", report)
    return report


@storage_errors
def backfill(table: TableRef, *, progress: bool = False, catalog: Catalog | None = None,
             spark: Any | None = None) -> IndexReport:
    """Build filters for every live file not yet covered (other engines' files, new bloom columns,
    lost or corrupt sidecars) and write one compacted sidecar covering all live files, in one commit.

    With ``spark`` (a SparkSession) executors read the uncovered files and build their filters; this
    process writes the sidecar and commits.
    """
    check_engine("backfill", spark=spark)
    table = load_table(catalog, table)
    build: FilterBuilder = filters_for_data_files
    if spark is not None:
        from iceberg_privacy.spark.jobs import filter_builder  # the core never imports Spark unless asked

        build = filter_builder(spark)
    return _rebuild(table, "backfill", build_missing=True, progress=progress, build=build)


@storage_errors
def compact_sidecars(table: TableRef, *, catalog: Catalog | None = None) -> IndexReport:
    """Merge the per-commit sidecars into one covering all live files (copying filters, no data reads),
    so a probe reads one row per column again however many commits there were."""
    table = load_table(catalog, table)
    return _rebuild(table, "compact", build_missing=False)


AUTO_COMPACT_RETRIES = 3
"""Retries of the automatic compaction a writer runs after its commit (it waits for it): a lost race is
logged and the next commit tries again, instead of holding the writer through the full retry policy."""


def compact_after_commit(table: Table) -> IndexReport:
    """:func:`compact_sidecars` for the write path's automatic step, with :data:`AUTO_COMPACT_RETRIES` retries."""
    return _rebuild(table, "compact", build_missing=False,
                    policy=retry.DEFAULT_POLICY.with_retries(AUTO_COMPACT_RETRIES))


@storage_errors
def expire_snapshots(
    table: TableRef, *, older_than: timedelta | None = None, retain_last: int = 1,
    snapshot_ids: Iterable[int] | None = None, catalog: Catalog | None = None,
) -> IndexReport:
    """Expire snapshots (pyiceberg semantics: branch and tag heads are kept) without losing coverage.

    ``older_than`` is an age (``timedelta(days=7)``: snapshots made more than seven days ago; by
    default every snapshot but the ``retain_last`` newest); ``snapshot_ids`` names them instead.

    Expiry drops the statistics entries and summaries of expired snapshots, which may be the only
    references to sidecars of files that are still live; the compacted sidecar written in the same
    commit keeps them covered. Data files are not deleted here (see the subject-rights purge).
    """
    table = load_table(catalog, table)
    if isinstance(retain_last, bool) or not isinstance(retain_last, int):
        raise ConfigurationError(f"retain_last must be a whole number >= 1, got {retain_last!r}")
    snapshot_ids = [snapshot_ids] if isinstance(snapshot_ids, int) else snapshot_ids  # one id
    if retain_last < 1:
        raise ConfigurationError("retain_last must be >= 1: the current snapshot is always kept")
    md = table.refresh().metadata
    protected = {ref.snapshot_id for ref in md.refs.values()}
    newest = {s.snapshot_id for s in sorted(md.snapshots, key=lambda s: s.timestamp_ms, reverse=True)[:retain_last]}
    if snapshot_ids is not None:
        given: list[Any] = list(snapshot_ids) if not isinstance(snapshot_ids, (str, bytes)) else [snapshot_ids]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in given):  # "123" was expired as "1","2","3"
            raise ConfigurationError(f"snapshot_ids takes snapshot ids (whole numbers, e.g. [s.snapshot_id for s in "
                                     f"table.snapshots()]), got {repr(snapshot_ids)[:120]}; nothing was expired")
        expire: set[int] = set(given)
        bad = expire & protected
        if bad:
            raise ConfigurationError(f"snapshots {sorted(bad)} are branch or tag heads and cannot be expired")
        unknown = sorted(expire - {s.snapshot_id for s in md.snapshots})
    else:
        cutoff = int(_cutoff(older_than).timestamp() * 1000)
        expire = {s.snapshot_id for s in md.snapshots if s.timestamp_ms < cutoff} - protected - newest
        unknown = []
    report = _rebuild(table, "expire", build_missing=False, expire_ids=expire)
    if unknown:  # a mistyped id was a silent no-op; an id expired before (a re-run) is not an error either
        report.warnings.append(warn(f"{len(unknown)} of the snapshot_ids are not snapshots of {table_name(table)} "
                                    f"(e.g. {unknown[0]}; expired already, or not this table's): nothing done for them"))
    return report


def expire_planned(table: Table, snapshot_ids: Iterable[int]) -> IndexReport:
    """:func:`expire_snapshots` of ids a caller chose from the refs it read (the purge): one that another process has
    made a branch or tag head since is kept (left out of ``expired_snapshots``), not refused as a head named by
    the user, and a ref created on one of them before the commit makes the attempt re-plan."""
    return _rebuild(table, "expire", build_missing=False, expire_ids=set(snapshot_ids))


def _collected_elsewhere(table: Table, location: str, before: set[str]) -> bool:
    """Has another process, since ``table`` was at metadata ``location``, committed a change that no longer
    references some of the sidecars ``before`` (and so may have deleted them)? A sidecar that is unreadable
    while still referenced is damage, not a race: compaction goes on without it (its files get scanned)."""
    try:
        fresh = table.catalog.load_table(table.name())
    except Exception:  # noqa: BLE001 - cannot tell: go on (losing those inputs only costs coverage)
        return False
    if fresh.metadata_location == location:
        return False
    still = {canonical(p) for p in referenced_sidecar_locations(fresh.metadata)}
    return any(canonical(p) not in still for p in before)


def _refs_onto(table: Table, snapshot_ids: set[int]) -> list[str]:
    """Names of the refs (branches, tags) that the catalog's current metadata has on one of ``snapshot_ids``: put
    there by another process since the expiry read the refs. Refs that moved elsewhere (a writer's append moving
    ``main``) do not count: a busy writer must not starve the expiry. The check is as fresh as one catalog round
    trip; a ref created on such a snapshot between it and the commit is still dropped (docs/storage.md)."""
    fresh = table.catalog.load_table(table.name()).metadata.refs
    return sorted(name for name, ref in fresh.items() if ref.snapshot_id in snapshot_ids)


def _sequence_number(md: TableMetadata, snapshot_id: int) -> int:
    snap = md.snapshot_by_id(snapshot_id)
    return (snap.sequence_number or 0) if snap is not None else 0


def _cutoff(older_than: timedelta | datetime | None) -> datetime:
    """The instant before which snapshots are old enough (ages are timedeltas; a datetime is deprecated)."""
    now = datetime.now(UTC)
    if older_than is None:
        return now
    if isinstance(older_than, datetime):
        warnings.warn("expire_snapshots(older_than=<datetime>) is deprecated: pass an age, e.g. timedelta(days=7)",
                      DeprecationWarning, stacklevel=4)
        return older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
    if not isinstance(older_than, timedelta):  # 7 means 7 what? (it failed as a bare TypeError in a comparison)
        raise ConfigurationError(f"older_than must be an age, e.g. timedelta(days=7), got {older_than!r}")
    if older_than < timedelta(0):
        raise ConfigurationError(f"older_than must be a non-negative age, got {older_than}")
    return now - older_than


@dataclass
class SidecarCheck:
    """One referenced sidecar read completely: ``error`` is None when every CRC matched."""

    location: str
    error: str | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        # (location, error) unpacking of the tuples verify_sidecars returned before 0.2
        warnings.warn("verify_sidecars() returns a SidecarVerification report; use check.location / check.error",
                      DeprecationWarning, stacklevel=2)
        return iter((self.location, self.error))


@dataclass
class SidecarVerification:
    """What :func:`verify_sidecars` found: every referenced sidecar and whether it reads back intact."""

    table: str
    checks: list[SidecarCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.error is None for c in self.checks)

    @property
    def broken(self) -> dict[str, str]:
        return {c.location: c.error for c in self.checks if c.error is not None}

    def __iter__(self) -> Iterator[SidecarCheck]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def next_step(self) -> str | None:
        """What a broken sidecar costs and how to get rid of it (None when every sidecar reads back)."""
        if self.ok:
            return None
        return (f"a broken sidecar costs scans of the files it covers, never a skipped file. "
                f"`iceberg-privacy sidecars backfill {self.table}` (ip.backfill) builds filters for live files no "
                f"readable sidecar covers; a broken one registered by an older snapshot stays referenced (and "
                f"reported here) until that snapshot is expired: `iceberg-privacy expire {self.table} --older-than "
                f"AGE` (ip.expire_snapshots). A sidecar that only failed to read (a network error) is fine on a retry")

    def __str__(self) -> str:
        lines = [f"{self.table}: {len(self.checks)} sidecar(s) read, {len(self.broken)} broken"]
        lines += [f"  BROKEN {loc}: {err}" for loc, err in self.broken.items()]
        hint = self.next_step()
        return "\n".join(lines + ([f"  next: {hint}"] if hint else []))


@dataclass
class SidecarStatus:
    snapshot_id: int | None
    live_files: int
    covered: dict[str, int]
    sidecars: list[tuple[str, str, int | None]]  # (source, location, bytes)
    warnings: list[str]
    exact_index_bytes: int = 0  # bytes of exact-index blobs in the referenced sidecars (base + deltas)
    data_bytes: int = 0  # bytes of the current snapshot's data files
    outside_writes: int = 0  # snapshots of the current branch that added data without the library (not screened)

    def __str__(self) -> str:
        lines = [f"snapshot {self.snapshot_id}: {self.live_files} live data files"]
        lines += [f"  {c}: {n} covered, {self.live_files - n} uncovered" for c, n in self.covered.items()]
        lines.append(f"  {len(self.sidecars)} referenced sidecar(s), {sum(b or 0 for _, _, b in self.sidecars)} bytes; "
                     f"exact index {self.exact_index_bytes} bytes for {self.data_bytes} data bytes")
        lines += [f"    [{s}] {loc}" for s, loc, _ in self.sidecars[:20]]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@storage_errors
def sidecar_status(table: TableRef, *, catalog: Catalog | None = None) -> SidecarStatus:
    """Coverage of the current snapshot's files per bloom column, and the sidecars referenced."""
    table = load_table(catalog, table)
    md = table.metadata
    live = live_data_files(table, [md.current_snapshot_id] if md.current_snapshot_id else [])
    covered: dict[str, int] = {}
    notes: list[str] = []
    for col in bloom_columns(table.schema(), table.properties):
        if not col.bloom:  # an exact-only column has no Bloom filters to count
            continue
        cov = resolve_coverage(table.io, md, col.field_id, set(live), _sizes(live))
        covered[col.name] = len(live) - len(cov.uncovered)
        notes += cov.warnings
    for col in bloom_columns(table.schema(), table.properties):
        if col.exact:
            src = exact_sources(table.io, md, col.field_id)
            notes += src.warnings
            indexed: set[str] = set()
            for s in src.indexes:
                try:  # a live file counts when a row describes its bytes (a reused path's stale row does not)
                    indexed.update(p for p, f in live.items() if (row := s.index.record(p)) is not None
                                   and describes(row, int(f.record_count), int(f.file_size_in_bytes)))
                except SidecarError as exc:
                    notes.append(warn(f"exact index {s.ref.location} unreadable: {exc}; its files are scanned"))
            covered[f"{col.name} (exact)"] = len(indexed)
    outside = outside_writes(md)
    if outside:
        screened = "; rows of subjects on the forget list were not dropped from them (erase those subjects " \
            "again: iceberg_privacy.erase / `iceberg-privacy erase`)" if declared_identity_names(table.properties) else ""
        notes.append(f"{len(outside)} snapshot(s) on the current branch added data files without iceberg-privacy "
                     f"(pyiceberg's own append or another engine; newest {outside[0]}): their files have no filters "
                     f"until backfill (lookups scan them){screened}")
    refs = [(r.source, r.location, r.size) for r in sidecar_refs(md)]
    exact_bytes = 0
    for r in sidecar_refs(md):
        try:
            idx, _ = exact.CACHE.get(table.io, r.location, r.size)
        except SidecarError:
            continue
        if idx is not None:
            exact_bytes += idx.blob_bytes
    return SidecarStatus(md.current_snapshot_id, len(live), covered, refs, notes, exact_bytes,
                         sum(f.file_size_in_bytes for f in live.values()), len(outside))


@storage_errors
def verify_sidecars(table: TableRef, *, catalog: Catalog | None = None) -> SidecarVerification:
    """Read every referenced sidecar completely, checking every CRC (a broken one only costs scans)."""
    table = load_table(catalog, table)
    from iceberg_privacy.index.sidecar import Sidecar

    # The catalog's current metadata, not the caller's: a Table loaded before a compaction (whose superseded
    # sidecars are deleted) listed every one of them as broken, and the current ones went unchecked.
    if not isinstance(table, StaticTable):
        table.refresh()
    out = SidecarVerification(table_name(table))
    for ref in sidecar_refs(table.metadata):
        try:
            sc = Sidecar.open(table.io, ref.location)
            if ref.size is not None and sc.reader.footer.file_size != ref.size:
                # lookups and sidecar_status ignore it (their caches check the registered size): not intact
                raise SidecarError(f"sidecar {ref.location} has {sc.reader.footer.file_size} bytes, expected {ref.size} "
                                   "(the size its reference registered): lookups ignore it and scan its files")
            for fid in sc.columns:
                for g in sc.groups(fid):
                    sc.filters(g)
            idx = exact.ExactIndex.open(table.io, ref.location)  # uncached: every byte read again
            if idx is not None:
                idx.all_files()
                for fid in idx.columns:
                    idx.read_column(fid)
            out.checks.append(SidecarCheck(ref.location))
        except SidecarError as exc:
            if not isinstance(table, StaticTable) and canonical(ref.location) not in {
                    canonical(p) for p in referenced_sidecar_locations(table.refresh().metadata)}:
                continue  # superseded (and deleted) by a compaction meanwhile: not broken, no longer used
            out.checks.append(SidecarCheck(ref.location, str(exc)))
    return out
