"""Append and overwrite: data files and their sidecar land in one atomic Iceberg commit.

The data is written with pyiceberg's own writer (partitioning, target file size, metrics), while the
Bloom filters of each file are built from the same in-memory record batches in the calling thread.
Then one transaction adds the data files (fast append), records the sidecar in the snapshot summary
and registers it in the statistics list. A crash before the commit leaves the table at its old
snapshot; the files already written are orphans that :func:`iceberg_privacy.cleanup_orphans` reports.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import BooleanExpression
from pyiceberg.manifest import DataFile, DataFileContent, ManifestEntryStatus
from pyiceberg.table import ALWAYS_TRUE, Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.utils.properties import property_as_int

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import TableRef, has_marker, load_table, table_name
from iceberg_privacy.config import BloomColumn, IdentityColumn, bloom_columns
from iceberg_privacy.datafiles import (
    DEFAULT_CHUNK_BYTES,
    WrittenFiles,
    first_line,
    write_data_files,
    write_table_data,
)
from iceberg_privacy.errors import (
    CatalogError,
    CommitConflictError,
    ConfigurationError,
    SidecarError,
    UnsupportedDataError,
)
from iceberg_privacy.index.build import (
    filters_for_data_files,
)
from iceberg_privacy.index.puffin import PuffinFooter
from iceberg_privacy.index.registry import new_sidecar_location, statistics_entry, summary_properties
from iceberg_privacy.index.sidecar import ColumnInfo, CoveredFile, FileFilter, write_sidecar
from iceberg_privacy.lineage.record import LineageRecord, fold_written, with_default
from iceberg_privacy.properties import (
    EXACT_COMPACT_AFTER_DEFAULT,
    EXACT_COMPACT_AFTER_PROPERTY,
    LIBRARY_MARKERS,
    SIDECAR_COMPACTED_PROPERTY,
    SIDECAR_PATH_SUMMARY,
)
from iceberg_privacy.rights import forget
from iceberg_privacy.storage import is_missing, storage_errors
from iceberg_privacy.version import __version__

logger = logging.getLogger(__name__)



@dataclass
class WriteReport:
    """What one append/overwrite committed."""

    snapshot_id: int | None
    operation: str
    data_files: int = 0
    rows: int = 0
    data_bytes: int = 0
    sidecar_path: str | None = None
    sidecar_bytes: int = 0
    bloom_columns: list[str] = field(default_factory=list)
    filter_seconds: float = 0.0  # CPU seconds spent building filters
    dropped_rows: int = 0  # rows of subjects on the forget list, not written (iceberg_privacy.rights.forget)
    seconds: float = 0.0
    commit_attempts: int = 0
    index_compacted: str | None = None  # the new compacted sidecar when this commit triggered compaction

    def __str__(self) -> str:
        dropped = f", {self.dropped_rows} rows of subjects on the forget list dropped" if self.dropped_rows else ""
        return (
            f"{self.operation}: {self.rows} rows in {self.data_files} files ({self.data_bytes} bytes), "
            f"sidecar {self.sidecar_bytes} bytes for {self.bloom_columns or 'no columns'}{dropped}, "
            f"snapshot {self.snapshot_id}, {self.seconds:.2f}s"
        )










































def added_data_files(io, metadata: TableMetadata, since_snapshot_id: int | None) -> list[DataFile]:  # type: ignore[no-untyped-def]
    """Data files that snapshots after ``since_snapshot_id`` (on the current branch) added."""
    out: list[DataFile] = []
    snap = metadata.current_snapshot()
    while snap is not None and snap.snapshot_id != since_snapshot_id:
        for manifest in snap.manifests(io):
            if manifest.added_snapshot_id != snap.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                if entry.status == ManifestEntryStatus.ADDED and entry.data_file.content == DataFileContent.DATA:  # v1: a plain int
                    out.append(entry.data_file)
        snap = metadata.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return out


def _sequence_number(metadata: TableMetadata, snapshot_id: int, pending: bool) -> int:
    """Sequence number of the snapshot the sidecar is registered on (pending: the one being made); ``metadata``
    is the transaction's."""
    if pending:
        return metadata.next_sequence_number()
    snap = metadata.snapshot_by_id(snapshot_id)
    return (snap.sequence_number or 0) if snap else 0


def _identity_names_in_file(schema: pa.Schema, columns: Sequence[IdentityColumn]) -> dict[str, str]:
    """File column name -> identity column name, by Parquet field id (by name in a file without one)."""
    by_id = {c.field.field_id: c.name for c in columns}
    out = {}
    for f in schema:
        fid = (f.metadata or {}).get(b"PARQUET:field_id")
        name = by_id.get(int(fid)) if fid is not None else (f.name if f.name in by_id.values() else None)
        if name is not None:
            out[f.name] = name
    return out


def _renamed(data: pa.Table, names: dict[str, str]) -> pa.Table:
    return data.rename_columns([names.get(n, n) for n in data.column_names])


def recheck_forget(table: Table, written: WrittenFiles, columns: list[BloomColumn]) -> WrittenFiles:
    """Drop rows of subjects put on the forget list after ``written`` was checked against it.

    Called at every commit attempt, after the attempt's base snapshot is read: an erasure whose
    commit is in that base added its subjects to the list before it committed, so they are seen
    here; an erasure that commits later conflicts with this commit and re-plans over its files.
    Unchanged list (the usual case): one catalog read. Changed: the written files are re-read and
    only those holding a newly forgotten subject are rewritten.
    """
    fresh = forget.load(table, recheck=True)  # by name: the write's first load checked the legacy name
    if fresh is None or fresh.version == written.forget_version:
        return written
    out = WrittenFiles(forget_version=fresh.version, dropped_rows=written.dropped_rows,
                       filter_seconds=written.filter_seconds, spec_id=written.spec_id)
    for data_file, filters in zip(written.files, written.filters, strict=True):
        with table.io.new_input(data_file.file_path).open(seekable=True) as fh:
            pf = pq.ParquetFile(fh)
            # the identity columns first: most files hold nobody newly forgotten, and are kept without reading the
            # rest (a streaming query re-checks every micro-batch once the list changed after it started)
            # by field id: the files of a streaming query keep the names of its start (a column renamed since)
            names = _identity_names_in_file(pf.schema_arrow, fresh.columns)
            held = bool(names) and bool(fresh.mask(pf.read(columns=list(names)).rename_columns(
                list(names.values()))).any())
            kept, dropped = fresh.apply(_renamed(pf.read(), names)) if held else (None, 0)
        if not dropped:
            out.files.append(data_file)
            out.filters.append(filters)
            out.rows += data_file.record_count
            continue
        redo = write_data_files(table.io, table.metadata, kept, columns, where=table_name(table))
        out.files += redo.files
        out.filters += redo.filters
        out.rows += redo.rows
        out.dropped_rows += dropped
        table.io.delete(data_file.file_path)
    logger.info("%s: %d row(s) of subjects forgotten during the write dropped at commit", table.name(),
                out.dropped_rows - written.dropped_rows)
    return out


def _attempt(
    table: Table, tx: Transaction, written: WrittenFiles, columns: list[BloomColumn], base_id: int | None,
    overwrite_filter: BooleanExpression | None, snapshot_properties: dict[str, str],
) -> tuple[int | None, str | None, int]:
    """Stage one commit attempt in ``tx``: data files, their sidecar, its statistics entry."""
    files = list(written.files)
    filters = list(written.filters)
    if written.forget_version is not None:
        snapshot_properties = {**snapshot_properties, forget.SUMMARY_DROPPED: str(written.dropped_rows),
                               forget.SUMMARY_VERSION: str(written.forget_version)}
    if overwrite_filter is not None:
        tx.delete(delete_filter=overwrite_filter, snapshot_properties=snapshot_properties)
    # Read once: pyiceberg rebuilds it (a deep copy of the whole metadata, every snapshot) on each access, and
    # nothing below stages an update in tx before finish_staged.
    metadata = tx.table_metadata
    if overwrite_filter is not None:
        rewritten = added_data_files(table.io, metadata, base_id)
        if rewritten and columns:
            # Copy-on-write rewrites of partially deleted files need filters too.
            filters += filters_for_data_files(table.io, metadata, rewritten, columns)
        files_to_cover = files + rewritten
    else:
        files_to_cover = files
    producer: compat.SnapshotProducer | None = None
    snapshot_id: int | None = metadata.current_snapshot_id
    if files:
        producer = tx.update_snapshot(snapshot_properties=dict(snapshot_properties)).fast_append()
        for f in files:
            producer.append_data_file(f)
        snapshot_id = compat.producer_snapshot_id(producer)
    staged = None
    if snapshot_id is not None:
        staged = stage_sidecar(table, tx, producer, snapshot_id, files_to_cover, filters, columns, metadata=metadata)
    finish_staged(table, tx, producer, snapshot_id, staged)
    return snapshot_id, staged[0] if staged else None, staged[1].file_size if staged else 0


def stage_sidecar(
    table: Table, tx: Transaction, producer: compat.SnapshotProducer | None, snapshot_id: int, files: list[DataFile],
    filters: list[dict[int, FileFilter]], columns: list[BloomColumn], *, metadata: TableMetadata | None = None,
) -> tuple[str, PuffinFooter] | None:
    """Write the sidecar covering ``files`` for the snapshot ``producer`` is making in ``tx``.

    Its location and counts go into the producer's snapshot summary; :func:`finish_staged` then
    commits the producer and registers the sidecar in the statistics list of the same transaction.
    None when there is nothing to index. ``metadata``: ``tx.table_metadata`` when the caller has it already
    (each access of that property copies the whole metadata).
    """
    if not columns or not files:
        return None
    if metadata is None:
        metadata = tx.table_metadata
    path = new_sidecar_location(metadata, snapshot_id)
    footer = write_sidecar(
        table.io, path,
        [CoveredFile(f.file_path, f.record_count, f.file_size_in_bytes) for f in files],
        [ColumnInfo(c.field_id, c.name, c.fpp, c.ndv) for c in columns],
        {c.field_id: {i: flt[c.field_id] for i, flt in enumerate(filters)} for c in columns},
        snapshot_id=snapshot_id, sequence_number=_sequence_number(metadata, snapshot_id, producer is not None),
        created_by=f"iceberg-privacy {__version__}",
    )
    if producer is not None:
        producer.snapshot_properties = {
            **producer.snapshot_properties, **summary_properties(path, footer, len(files), [c.name for c in columns]),
        }
    return path, footer


def finish_staged(table: Table, tx: Transaction, producer: compat.SnapshotProducer | None, snapshot_id: int | None,
                  staged: tuple[str, PuffinFooter] | None) -> None:
    """Commit the producer into ``tx`` and register the staged sidecar; delete the sidecar on failure."""
    try:
        if producer is not None:
            producer.commit()
        if staged is not None and snapshot_id is not None:
            tx.update_statistics().set_statistics(statistics_entry(snapshot_id, staged[0], staged[1])).commit()
    except BaseException:
        if staged is not None:
            table.io.delete(staged[0])
        raise


def _refresh(table: Table, written: WrittenFiles, operation: str) -> None:
    """``table.refresh()``; a table dropped and re-created under its name meanwhile (pyiceberg refuses
    the new uuid with a bare ValueError) is a clear error, and the files written for the old one go."""
    from pyiceberg.exceptions import NoSuchTableError

    before = table.metadata.table_uuid
    try:
        table.refresh()
        return
    except NoSuchTableError:
        what = "dropped"
    except ValueError:
        try:
            current = table.catalog.load_table(table.name()).metadata.table_uuid
        except NoSuchTableError:
            current = None
        if current == before:
            raise
        what = f"dropped and re-created (uuid {before} -> {current})"
    for f in written.files:
        table.io.delete(f.file_path)
    raise CatalogError(
        f"{operation} on {table_name(table)}: the table was {what} while the write ran; nothing was committed "
        "and its files were removed. Write the data again (to the new table, after creating and configuring it)"
    ) from None


def _check_spec_unchanged(table: Table, written: WrittenFiles, operation: str) -> None:
    """Refuse files written under another partition spec than the table's current default: pyiceberg records
    every appended file under the default spec, so their partition values would be read as the new spec's (a
    ``where`` on the partition column then prunes the rows away, or the manifest cannot be written). The spec
    evolved between writing and committing: a concurrent ``update_spec``, or a Spark job (a streaming query's
    executors keep the table metadata of the query's start). The files go, as after a lost commit."""
    current = table.metadata.default_spec_id
    if not written.files or written.spec_id is None or written.spec_id == current:
        return
    for f in written.files:
        table.io.delete(f.file_path)
    raise CommitConflictError(
        f"{operation} on {table_name(table)}: the partition spec changed (spec id {written.spec_id} -> {current}) "
        "while the write ran, and its files were partitioned by the old spec; nothing was committed and its files "
        "were removed. Write the data again (a Spark streaming query: restart it, so its tasks use the new spec)")


def _confirm_landed(table: Table, snapshot_id: int, operation: str, exc: BaseException) -> None:
    """After a commit whose outcome the catalog left open (:func:`retry.is_outcome_unknown`): return when the
    table has ``snapshot_id`` (the commit landed, only the answer was lost; ``table`` is refreshed to it),
    else raise :class:`CatalogError` saying what is known. The written files are never deleted here: a
    catalog that finishes the request late would otherwise commit a snapshot whose files are gone."""
    name = table_name(table)
    cause = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
    try:
        table.refresh()
    except Exception as again:  # noqa: BLE001 - any failure to ask means we cannot know
        raise CatalogError(
            f"{operation} on {name}: the catalog failed while committing snapshot {snapshot_id} ({cause}) and "
            f"cannot be asked now whether it was committed ({type(again).__name__}). Do not write the same data "
            f"again blindly: once the catalog answers, look for snapshot {snapshot_id} in the table "
            f"(table.snapshot_by_id({snapshot_id})); if it is there the write is done, else write again "
            "(cleanup_orphans removes the files this attempt left)"
        ) from exc
    if table.metadata.snapshot_by_id(snapshot_id) is not None:
        logger.warning("%s on %s: the catalog failed answering the commit (%s), but snapshot %d is in the table: "
                       "the commit landed", operation, name, cause, snapshot_id)
        return
    raise CatalogError(
        f"{operation} on {name}: the catalog failed while committing ({cause}); snapshot {snapshot_id} is not in "
        "the table, so nothing was committed. Write the data again once the catalog is healthy (the files "
        "this attempt wrote are left for cleanup_orphans: a catalog finishing the request late could still "
        "reference them)"
    ) from exc


def _commit(
    table: Table, written: WrittenFiles, columns: list[BloomColumn], *, operation: str,
    overwrite_filter: BooleanExpression | None, snapshot_properties: dict[str, str], max_retries: int | None,
    table_properties: dict[str, str] | None = None, precondition: Callable[[Table], None] | None = None,
) -> tuple[int | None, str | None, int, int, WrittenFiles]:
    """Commit data + sidecar atomically; retry on conflicts.

    ``precondition`` is called with the refreshed table before every attempt; it raises to abandon the
    commit (the written files are then left to the caller).
    Returns (snapshot, sidecar, bytes, attempts, the files committed after the forget re-check).
    """
    policy = retry.DEFAULT_POLICY.with_retries(max_retries)
    for attempt in retry.attempts(policy):
        # Every attempt starts from the catalog's current metadata: after a lost race the winner's
        # snapshot is the new base, and on the first attempt a ``Table`` the caller loaded before
        # ``configure_identity`` (or before the identity columns changed) must not skip the forget
        # list: the commit only asserts the branch's snapshot, not the table properties.
        _refresh(table, written, operation)
        if precondition is not None:
            precondition(table)
        _check_spec_unchanged(table, written, operation)
        base_id = table.metadata.current_snapshot_id
        written = recheck_forget(table, written, columns)
        if not written.files and overwrite_filter is None:
            return None, None, 0, attempt, written  # every row belonged to a subject forgotten meanwhile
        committing = compat.without_commit_retries(table)
        tx: Transaction = committing.transaction()
        sidecar_path: str | None = None
        snapshot_id: int | None = None  # set once the commit is built: from then on a failure may have landed
        try:
            snapshot_id, sidecar_path, sidecar_bytes = _attempt(
                table, tx, written, columns, base_id, overwrite_filter, snapshot_properties)
            # a record naming sources survives another tool's snapshot expiry (which folds no lineage)
            kept = fold_written(table.metadata, snapshot_properties, snapshot_id, int(time.time() * 1000))
            if table_properties or kept:
                tx.set_properties({**kept, **(table_properties or {})})
            checkpoint("write.before_commit")  # data files and sidecar (with its exact delta) written
            tx.commit_transaction()
            checkpoint("write.after_commit")
            # The caller's object sees its commit, as after pyiceberg's own append: the catalog's
            # response, not a reload (no extra round trip per write).
            compat.adopt_commit(table, committing)
            return snapshot_id, sidecar_path, sidecar_bytes, attempt, written
        except Exception as exc:
            if is_missing(exc):
                # Metadata loaded before a purge names manifests that are gone: retry on the current
                # metadata; a file missing from current metadata is a real error.
                stale = table.metadata_location
                table.refresh()
                if table.metadata_location == stale:
                    raise
                logger.info("commit attempt %d on %s used metadata older than a purge; retrying", attempt,
                            table.name())
            elif retry.is_outcome_unknown(exc) and snapshot_id is not None:
                _confirm_landed(table, snapshot_id, operation, exc)
                checkpoint("write.after_commit")
                return snapshot_id, sidecar_path, sidecar_bytes, attempt, written
            elif not retry.is_conflict(exc):
                raise
            else:
                logger.info("commit attempt %d on %s lost to a concurrent writer: %s", attempt, table.name(), exc)
        if sidecar_path is not None:
            table.io.delete(sidecar_path)
    for f in written.files:
        table.io.delete(f.file_path)
    raise CommitConflictError(
        f"{operation} on {table_name(table)} lost to concurrent commits {policy.attempts} times; nothing was "
        "committed and its files were removed. Retry later or reduce concurrent writers."
    )


def _unsupported_data(operation: str, data: object) -> str:
    kind = type(data)
    hint = "convert it with pyarrow.Table.from_pylist(rows) or pyarrow.table({...})"
    if kind.__module__.split(".")[0] == "pandas":
        hint = "convert it with pyarrow.Table.from_pandas(df, preserve_index=False)"
    elif kind.__module__.split(".")[0] == "polars":
        hint = "convert it with df.to_arrow()"
    elif kind.__module__.startswith("pyspark"):
        hint = "write Spark DataFrames with the iceberg-privacy Spark data source (docs/spark.md)"
    elif isinstance(data, pa.RecordBatch):
        hint = "wrap it with pyarrow.Table.from_batches([batch])"
    return f"{operation} takes a pyarrow.Table or pyarrow.RecordBatchReader, not {kind.__name__}: {hint}"


def _write(table: Table, data: pa.Table | pa.RecordBatchReader, *, operation: str,
           overwrite_filter: BooleanExpression | None, snapshot_properties: dict[str, str] | None,
           chunk_bytes: int, max_retries: int | None, progress: bool, lineage: LineageRecord | None) -> WriteReport:
    t0 = time.perf_counter()
    if not isinstance(data, (pa.Table, pa.RecordBatchReader)):
        raise UnsupportedDataError(_unsupported_data(operation, data))
    if has_marker(table, LIBRARY_MARKERS):  # `ingest db.privacy_forget empty.csv --overwrite` emptied the forget list
        raise ConfigurationError(
            f"{table_name(table)} is one of the library's own tables (its journal, queue, forget list, DP ledger, "
            f"service tokens or a DP release), which only the library writes: {operation} into a data table instead; "
            "nothing was written")
    retry.DEFAULT_POLICY.with_retries(max_retries)  # a bad argument fails before any file is written
    check_snapshot_properties(snapshot_properties)
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ConfigurationError(f"chunk_bytes must be a whole number of bytes >= 1 (e.g. 64 << 20), got {chunk_bytes!r}; "
                                 "nothing was written")
    columns = bloom_columns(table.schema(), table.properties)
    written = write_table_data(table, data, columns, chunk_bytes, progress, forget.load(table))
    return commit_written(table, written, columns, operation=operation, overwrite_filter=overwrite_filter,
                          snapshot_properties=snapshot_properties, max_retries=max_retries, started=t0,
                          lineage=lineage)


def check_snapshot_properties(props: dict[str, str] | None, *, option: str = "snapshot_properties") -> None:
    """Refuse caller-given summary keys the library reserves (``privacy.*``) or pyiceberg sets (``operation``).

    The library reads its own keys back: the sidecar registration, the forget-list check, an erasure's
    request id (a resumed erasure looks for its commit by it), streaming batch ids, lineage. A forged
    one would mislead those readers, e.g. make a resumed erasure believe its rewrite had landed.
    """
    if not props:
        return
    if not isinstance(props, Mapping):
        raise ConfigurationError(f"{option} must be a dict of str keys to str values, got {type(props).__name__}")
    not_str = [(k, v) for k, v in props.items() if isinstance(k, str) and not isinstance(v, str)]
    if not_str:
        key, value = not_str[0]
        raise ConfigurationError(
            f"{option} values must be strings (Iceberg snapshot summaries hold strings), got {key!r}: {value!r} "
            f"({type(value).__name__}); pass str(value). Nothing was written")
    bad = sorted(map(repr, (k for k in props if not isinstance(k, str) or k.startswith("privacy.") or k == "operation")))
    if bad:
        raise ConfigurationError(
            f"{option} may not set {', '.join(bad)}: 'privacy.*' summary keys are the library's own "
            "records (sidecars, forget-list checks, erasures, streaming batches, lineage) and 'operation' is "
            "pyiceberg's. Name your keys outside 'privacy.'; pass lineage= (Spark: the lineage option) for lineage")


def commit_written(
    table: Table, written: WrittenFiles, columns: list[BloomColumn], *, operation: str = "append",
    overwrite_filter: BooleanExpression | None = None, snapshot_properties: dict[str, str] | None = None,
    max_retries: int | None = None, started: float | None = None, lineage: LineageRecord | None = None,
    engine: str = "pyarrow", table_properties: dict[str, str] | None = None,
    precondition: Callable[[Table], None] | None = None,
) -> WriteReport:
    """Commit files from :func:`write_data_files` with one sidecar, atomically (Spark's driver uses it too).

    ``columns`` must be those the filters were built for. Nothing is committed when there are no
    files and no overwrite. ``lineage`` goes into the snapshot summary; without it the write is
    recorded as rows from outside the lake (``engine`` names who wrote them). ``table_properties`` are set in
    the same atomic commit (the Spark streaming sink records its last batch id there). ``precondition`` is
    checked on the refreshed table before every commit attempt and raises to abandon the commit (the Spark
    streaming sink: a concurrent commit of the same batch landed first); the files are then the caller's.
    """
    t0 = time.perf_counter() if started is None else started
    report = WriteReport(snapshot_id=None, operation=operation, bloom_columns=[c.name for c in columns],
                         dropped_rows=written.dropped_rows)
    if not written.files and overwrite_filter is None:
        report.seconds = time.perf_counter() - t0
        return report
    snapshot_id, sidecar, sidecar_bytes, attempts, written = _commit(
        table, written, columns, operation=operation, overwrite_filter=overwrite_filter,
        snapshot_properties={**with_default(snapshot_properties, operation, engine),
                             **(lineage.summary() if lineage is not None else {})},
        max_retries=max_retries, table_properties=table_properties, precondition=precondition,
    )
    report.snapshot_id = snapshot_id
    report.dropped_rows = written.dropped_rows
    report.data_files = len(written.files)
    report.rows = written.rows
    report.data_bytes = sum(f.file_size_in_bytes for f in written.files)
    report.sidecar_path, report.sidecar_bytes = sidecar, sidecar_bytes
    report.filter_seconds = written.filter_seconds
    report.commit_attempts = attempts
    report.index_compacted = _maybe_compact(table, columns)
    report.seconds = time.perf_counter() - t0
    logger.info("%s", report)
    return report


def exact_deltas_since_base(table: Table) -> int:
    """Commits with a sidecar on the current branch since the exact base's covered snapshot (all without a base)."""
    from iceberg_privacy.index import exact  # noqa: PLC0415 - only tables with an exact column get here

    md = table.metadata
    covered = None
    base = md.properties.get(SIDECAR_COMPACTED_PROPERTY)
    if base:
        try:
            idx, _ = exact.CACHE.get(table.io, base)
            covered = idx.covered_snapshot_id if idx is not None else None
        except SidecarError:
            covered = None  # a broken base: the next compaction rebuilds it
    n, snap = 0, md.current_snapshot()
    while snap is not None and snap.snapshot_id != covered:
        if snap.summary is not None and SIDECAR_PATH_SUMMARY in snap.summary.additional_properties:
            n += 1
        snap = md.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    return n


def _maybe_compact(table: Table, columns: list[BloomColumn]) -> str | None:
    """The automatic LSM step: once more than ``privacy.index.exact.compact-after-deltas`` exact deltas are
    newer than the base, merge them into a new base. The data commit already stands: a failed compaction
    is logged (the deltas keep answering), never raised."""
    if not any(c.exact for c in columns):
        return None
    try:
        limit = property_as_int(table.properties, EXACT_COMPACT_AFTER_PROPERTY, EXACT_COMPACT_AFTER_DEFAULT)
    except ValueError:  # set by hand; the write has committed, so it must not raise now
        logger.warning("%s=%r on %s is not an integer: the default %d applies (0 turns automatic compaction off)",
                       EXACT_COMPACT_AFTER_PROPERTY, table.properties.get(EXACT_COMPACT_AFTER_PROPERTY), table.name(),
                       EXACT_COMPACT_AFTER_DEFAULT)
        limit = EXACT_COMPACT_AFTER_DEFAULT
    if not limit or exact_deltas_since_base(table) <= limit:
        return None
    from iceberg_privacy.index.maintenance import compact_after_commit  # noqa: PLC0415 - maintenance sits above

    try:
        return compact_after_commit(table).sidecar_path
    except Exception as exc:  # noqa: BLE001 - the write committed: whatever fails afterwards must not undo its report
        # (e.g. pyiceberg's bare ValueError when another process re-created the table right after the commit)
        logger.warning("automatic compaction of %s failed (%s: %s); the deltas keep serving lookups", table.name(),
                       type(exc).__name__, exc)
        return None


@storage_errors
def append(
    table: TableRef, data: pa.Table | pa.RecordBatchReader, *, snapshot_properties: dict[str, str] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES, commit_retries: int | None = None, progress: bool = False,
    lineage: LineageRecord | None = None, catalog: Catalog | None = None, max_commit_retries: int | None = None,
) -> WriteReport:
    """Append ``data`` with a Bloom-filter sidecar for the table's configured columns, atomically.

    A RecordBatchReader is consumed in chunks of about ``chunk_bytes`` (memory stays bounded);
    partitioned tables are supported either way. Concurrent-commit conflicts are retried.
    ``lineage`` says where the rows came from (default: outside the lake). ``commit_retries`` bounds
    the retries after a conflict (default: the library's retry policy).
    """
    table = load_table(catalog, table)
    return _write(table, data, operation="append", overwrite_filter=None, snapshot_properties=snapshot_properties,
                  chunk_bytes=chunk_bytes, max_retries=_retries(commit_retries, max_commit_retries), progress=progress,
                  lineage=lineage)


def _retries(commit_retries: int | None, max_commit_retries: int | None) -> int | None:
    if max_commit_retries is not None:
        warnings.warn("max_commit_retries= is now commit_retries= (the same keyword on every verb that commits)",
                      DeprecationWarning, stacklevel=4)
        return max_commit_retries if commit_retries is None else commit_retries
    return commit_retries


@storage_errors
def overwrite(
    table: TableRef, data: pa.Table | pa.RecordBatchReader, overwrite_filter: BooleanExpression | str = ALWAYS_TRUE, *,
    snapshot_properties: dict[str, str] | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    commit_retries: int | None = None, progress: bool = False, lineage: LineageRecord | None = None,
    catalog: Catalog | None = None, max_commit_retries: int | None = None,
) -> WriteReport:
    """Delete rows matching ``overwrite_filter`` (all by default) and append ``data``, in one commit.

    Files the delete rewrites (copy-on-write) get filters too, in the same sidecar.
    """
    table = load_table(catalog, table)
    overwrite_filter = _checked_filter(table, overwrite_filter)
    return _write(table, data, operation="overwrite", overwrite_filter=overwrite_filter,
                  snapshot_properties=snapshot_properties, chunk_bytes=chunk_bytes,
                  max_retries=_retries(commit_retries, max_commit_retries), progress=progress, lineage=lineage)


def _checked_filter(table: Table, overwrite_filter: BooleanExpression | str) -> BooleanExpression:
    """The overwrite filter, parsed and checked against the table's schema before any file is written
    (a typo used to surface from the commit, after the data files were written, as a bare pyparsing or
    pyiceberg exception)."""
    from pyiceberg.expressions.parser import parse
    from pyiceberg.expressions.visitors import bind
    from pyparsing import ParseException

    try:
        if not isinstance(overwrite_filter, (str, BooleanExpression)):
            raise TypeError(f"a filter is a string or a pyiceberg expression, not {type(overwrite_filter).__name__}")
        expr = parse(overwrite_filter) if isinstance(overwrite_filter, str) else overwrite_filter
        bind(table.schema(), expr, case_sensitive=True)
    except (ParseException, ValueError, TypeError, NotImplementedError) as exc:
        columns = ", ".join(f.name for f in table.schema().fields)
        raise ConfigurationError(
            f"overwrite_filter {str(overwrite_filter)[:200]!r} is not a filter on {table_name(table)} "
            f"({first_line(exc)}); nothing was written. Write it as pyiceberg's row filters, e.g. "
            f"\"n > 5 and day = '2024-01-01'\", over the columns {columns}, with literals of their types "
            "(strings in single quotes)") from exc
    return expr


