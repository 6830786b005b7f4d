"""Batch and streaming writes: executors write data files + filters, the driver commits once.

Each Spark task calls the core's :func:`iceberg_privacy.datafiles.write_data_files` on its Arrow
batches (data files and their Bloom filters in the same pass) and returns them, picklably, as a
:class:`TaskFiles` commit message. The driver hands all of them to
:func:`iceberg_privacy.write.commit_written`: the same code path as the core's ``append`` (one
sidecar, data + sidecar in one atomic Iceberg commit, retried on conflicts). A Spark-written table
is therefore indistinguishable in meaning from a core-written one.

Streaming commits are exactly once per micro-batch: every snapshot carries
``privacy.streaming.query-id`` and ``privacy.streaming.batch-id`` in its summary, and a batch whose
id is not above the last one committed for that query is skipped (its files deleted).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException
from pyiceberg.table import ALWAYS_TRUE, Table
from pyiceberg.table.metadata import TableMetadata
from pyspark.sql.datasource import (
    DataSourceArrowWriter,
    DataSourceStreamArrowWriter,
    WriterCommitMessage,
)

from iceberg_privacy._internal import compat
from iceberg_privacy.catalog import ensure_namespace_exists
from iceberg_privacy.config import COLUMNS_KEY, BloomColumn, bloom_columns, configure_bloom
from iceberg_privacy.datafiles import WrittenFiles, check_writable, first_line, write_data_files
from iceberg_privacy.errors import (
    CatalogError,
    ConfigurationError,
    SchemaMismatchError,
    StreamingQueryReusedError,
    UnknownColumnError,
    UnsupportedSparkTypeError,
)
from iceberg_privacy.lineage.record import LineageRecord
from iceberg_privacy.properties import STREAMING_BATCH_ID_SUMMARY as BATCH_ID_KEY
from iceberg_privacy.properties import STREAMING_LAST_BATCH_PREFIX as LAST_BATCH_PREFIX
from iceberg_privacy.properties import STREAMING_QUERY_ID_SUMMARY as QUERY_ID_KEY
from iceberg_privacy.properties import STREAMING_SPARK_QUERY_ID_SUMMARY as SPARK_QUERY_ID_KEY
from iceberg_privacy.properties import STREAMING_SPARK_QUERY_PREFIX as SPARK_QUERY_PREFIX
from iceberg_privacy.rights import forget
from iceberg_privacy.spark.options import SourceOptions
from iceberg_privacy.spark.schema import arrow_for_iceberg, cast_batch
from iceberg_privacy.storage import portable_properties, storage_errors
from iceberg_privacy.write import WriteReport, check_snapshot_properties, commit_written

logger = logging.getLogger("iceberg_privacy.spark")

SPARK_QUERY_ID_PROPERTY = "sql.streaming.queryId"  # Spark's local property on every streaming task

TASK_CHUNK_BYTES = 64 * 1024 * 1024
"""Arrow bytes a task buffers before writing files (bounds executor memory; files split by target size)."""


@dataclass
class TaskFiles(WriterCommitMessage):
    """What one task wrote: data files + their filters (uncommitted), and the streaming query id."""

    written: WrittenFiles = field(default_factory=WrittenFiles)
    query_id: str | None = None
    table_uuid: str | None = None  # the table the files were written for (its location, schema and field ids)
    spark_query_id: str | None = None  # Spark's own streaming query id (kept in its checkpoint), when known


def _bloom_option(opts: SourceOptions) -> list[str]:
    raw = opts.get("bloom.columns") or ""
    return [c.strip() for c in raw.split(",") if c.strip()]


def prepare_table(opts: SourceOptions, struct: Any) -> Table:
    """The target table, created from the DataFrame schema (+ bloom properties) if needed; validated."""
    arrow = arrow_for_iceberg(struct)
    wanted = _bloom_option(opts)
    missing = [c for c in wanted if c not in arrow.names]
    if missing:
        raise UnknownColumnError(
            f"bloom.columns names {missing}, which the DataFrame does not have; its columns: {', '.join(arrow.names)}"
        )
    fpp_text = opts.get("bloom.fpp")
    try:
        fpp = float(fpp_text) if fpp_text not in (None, "") else 0.01
    except ValueError:
        raise ConfigurationError(f"option 'bloom.fpp' must be a number in (0, 0.5], e.g. 0.01; got {fpp_text!r}") \
            from None
    ndv = opts.get_int("bloom.ndv", None, minimum=1)  # checked on every write, as bloom.fpp
    catalog = opts.catalog()
    try:
        table = catalog.load_table(opts.table)
        created = False
    except NoSuchTableError:
        namespace = opts.table.rsplit(".", 1)[0] if "." in opts.table else None
        if namespace:
            ensure_namespace_exists(catalog, namespace)
        try:
            table = catalog.create_table(opts.table, schema=arrow)
            created = True
        except TableAlreadyExistsError:  # a concurrent writer created it first
            table = catalog.load_table(opts.table)
            created = False
        except (UnsupportedPyArrowTypeException, ValueError) as exc:  # a type Iceberg cannot store (interval, void)
            raise UnsupportedSparkTypeError(
                f"cannot create {opts.table} from the DataFrame schema: {first_line(exc)}. Cast or drop that column "
                "(Iceberg stores strings, numbers, decimals, dates, timestamps, binary, lists, maps and structs); "
                "nothing was created") from exc
    if created and wanted:
        try:
            table = configure_bloom(table, wanted, fpp=fpp,
                                    ndv=ndv)
        except Exception:
            catalog.drop_table(opts.table)  # no half-configured table left behind
            raise
        return table
    try:
        compat.check_arrow_schema(table.schema(), arrow, format_version=table.metadata.format_version)
    except ValueError as exc:
        raise SchemaMismatchError(
            f"the DataFrame does not match the schema of {opts.table}: {exc}. Select/cast the columns to the "
            "table schema, or evolve the table schema first"
        ) from exc
    configured = [c.name for c in bloom_columns(table.schema(), table.properties)]
    if wanted and not configured and table.current_snapshot() is None:
        # a table another job has just created and not yet configured (two first writes at once): configure it
        # as that job will (the same properties), rather than fail or write files without filters
        return configure_bloom(table, wanted, fpp=fpp, ndv=ndv)
    if wanted and set(wanted) != set(configured):
        raise ConfigurationError(
            f"bloom.columns {wanted} differs from the bloom columns {configured} of the existing table {opts.table} "
            f"(table property {COLUMNS_KEY}); drop the option, or change the table with "
            "iceberg_privacy.configure_bloom (files written before are scanned until backfill covers them)"
        )
    return table


def _commit_ran(messages: list[WriterCommitMessage | None]) -> bool:
    """Did the driver's commit run before this abort? Spark aborts with ``None`` in the place of every task that
    did not finish; with every task's message there, the job failed in (or after) the commit."""
    return bool(messages) and all(m is not None for m in messages)


def _abort(io: FileIO, messages: list[WriterCommitMessage | None], what: str) -> None:
    """Spark's abort: delete the finished tasks' files, unless the commit ran. Spark calls abort when the commit
    raised too, and a commit can raise with its snapshot in the table (a failure after it landed) or still
    landing (a catalog that lost its answer and cannot be asked, or finishes the request late): deleting the files
    then leaves a table whose snapshot names files that are gone. The commit itself deletes its files where it
    knows nothing was committed (a lost race, a re-created table, an evolved spec); whatever else it left is
    unreferenced once the outcome is known, and ``cleanup_orphans`` removes it (as the core's write leaves it)."""
    if _commit_ran(messages):
        n = sum(len(m.written.files) for m in messages if isinstance(m, TaskFiles))
        print(f"iceberg-privacy {what} aborted after its commit failed: kept its {n} file(s), which the commit may "
              "have made part of the table; iceberg_privacy.cleanup_orphans removes those no snapshot references",
              file=sys.stderr, flush=True)
        return
    n = _delete_files(io, messages)
    print(f"iceberg-privacy {what} aborted: deleted {n} task file(s)", file=sys.stderr, flush=True)


def _delete_files(io: FileIO, messages: list[WriterCommitMessage | None]) -> int:
    n = 0
    for m in messages:
        if isinstance(m, TaskFiles):
            for f in m.written.files:
                try:
                    io.delete(f.file_path)
                    n += 1
                except OSError as exc:  # best effort: orphan cleanup removes what is left
                    logger.warning("could not delete %s: %s", f.file_path, exc)
    return n


_MIXED_FORGET_VERSIONS = -1
"""Never a forget-list version (snapshot ids are positive): the commit-time re-check then re-reads every file."""


_MIXED_SPECS = -1
"""Never a partition spec id: tasks that wrote under different specs are refused at commit."""


def _gather(messages: list[WriterCommitMessage | None], forget_version: int | None) -> WrittenFiles:
    """The job's files, recording the forget-list version the *tasks* screened with (``forget_version``, the
    committing writer's own, only when no task wrote anything). Spark makes a new stream writer on the driver for
    every micro-batch commit while the executors keep the one made at the query's start: recording the commit's
    fresh version would make the commit-time re-check (:func:`iceberg_privacy.write.recheck_forget`) see nothing
    new, and a subject forgotten since the query started would be committed."""
    tasks = [m for m in messages if isinstance(m, TaskFiles)]
    versions = {m.written.forget_version for m in tasks}
    if len(versions) > 1:
        forget_version = _MIXED_FORGET_VERSIONS
    elif versions:
        forget_version = versions.pop()
    specs = {m.written.spec_id for m in tasks if m.written.files}
    out = WrittenFiles(forget_version=forget_version,
                       spec_id=specs.pop() if len(specs) == 1 else (_MIXED_SPECS if specs else None))
    for m in messages:
        if isinstance(m, TaskFiles):
            out.files += m.written.files
            out.filters += m.written.filters
            out.rows += m.written.rows
            out.filter_seconds += m.written.filter_seconds
            out.dropped_rows += m.written.dropped_rows
    return out


def _lineage_option(opts: SourceOptions) -> LineageRecord | None:
    text = opts.get("lineage")
    if text is None:
        return None
    try:
        return LineageRecord.parse(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"option lineage is not a lineage record (docs/lineage.md): {exc}") from None


class _TaskWriter:
    """State shipped to executors: table metadata, FileIO properties, bloom columns and the table's
    forget list (loaded once on the driver, so every task drops the same erased subjects); never a catalog."""

    def __init__(self, opts: SourceOptions, struct: Any, overwrite: bool) -> None:
        self.opts = opts
        self.overwrite = overwrite
        check_snapshot_properties(opts.snapshot_properties, option="the snapshot-property.* options")  # before any table
        table = prepare_table(opts, struct)
        check_writable(table.metadata, opts.table)  # on the driver: before every task computes its rows, then fails
        # the catalog this writer's commit loads the table from: one connection per writer (a REST catalog's
        # config and token requests once, not per load; a stream's driver makes a writer per micro-batch)
        self._catalog: Catalog | None = table.catalog
        self.metadata: TableMetadata = table.metadata
        self.io_properties: dict[str, str] = portable_properties(table.io)
        self.columns: list[BloomColumn] = bloom_columns(table.schema(), table.properties)
        self.forget_filter: forget.ForgetFilter | None = forget.load(table)
        self.arrow: pa.Schema = arrow_for_iceberg(struct)
        self.max_retries = opts.get_int("commit.retries", None, minimum=0)  # None: the library retry policy
        self.lineage = _lineage_option(opts)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_catalog"] = None  # executors get no catalog (a connection, credentials): metadata and FileIO only
        return state

    def _load_table(self) -> Table:
        return self.opts.load_table(getattr(self, "_catalog", None))

    @property
    def _forget_version(self) -> int | None:
        return self.forget_filter.version if self.forget_filter is not None else None

    def _io(self) -> FileIO:
        return load_file_io(self.io_properties, self.metadata.location)

    @storage_errors  # on an executor: its storage failing is the library's StorageError, as in the core's append
    def _write_task(self, iterator: Iterator[pa.RecordBatch], query_id: str | None = None,
                    spark_query_id: str | None = None) -> TaskFiles:
        batches = (cast_batch(b, self.arrow) for b in iterator)
        reader = pa.RecordBatchReader.from_batches(self.arrow, batches)
        written = write_data_files(self._io(), self.metadata, reader, self.columns, chunk_bytes=TASK_CHUNK_BYTES,
                                   where=self.opts.table, forget_filter=self.forget_filter)
        return TaskFiles(written, query_id, str(self.metadata.table_uuid), spark_query_id)

    def _commit(self, written: WrittenFiles, messages: list[WriterCommitMessage | None],
                extra: dict[str, str] | None = None, table_properties: dict[str, str] | None = None,
                precondition: Callable[[Table], None] | None = None) -> WriteReport:
        table = self._load_table()
        # The tasks' table, not this writer's: a stream's driver makes a new writer (reading today's table) for
        # every micro-batch commit, while the executors keep the one made when the query started.
        written_for = {m.table_uuid for m in messages if isinstance(m, TaskFiles) and m.table_uuid} or {
            str(self.metadata.table_uuid)}
        if written_for != {str(table.metadata.table_uuid)}:  # the files were written for another table
            for f in written.files:
                table.io.delete(f.file_path)
            raise CatalogError(
                f"spark write to {self.opts.table}: the table was dropped and re-created (uuid "
                f"{', '.join(sorted(written_for))} -> {table.metadata.table_uuid}) while the job ran; nothing was "
                "committed and the job's files were removed. Run the write again (a streaming query: restart it)")
        # the columns the tasks built filters for: a column configured after the executors' writer was made (a
        # stream's per-batch driver writer reads today's) has none in these files, which stay scanned for it
        columns = [c for c in self.columns if all(c.field_id in f for f in written.filters)]
        report = commit_written(
            table, written, columns, operation="overwrite" if self.overwrite else "append",
            overwrite_filter=ALWAYS_TRUE if self.overwrite else None,
            snapshot_properties={**self.opts.snapshot_properties, **(extra or {})}, max_retries=self.max_retries,
            lineage=self.lineage, engine="spark", table_properties=table_properties, precondition=precondition,
        )
        print(f"iceberg-privacy spark write {self.opts.table}: {report}", file=sys.stderr, flush=True)
        return report


class IcebergPrivacyWriter(_TaskWriter, DataSourceArrowWriter):
    """``df.write.format("iceberg-privacy")``: one atomic commit for the whole job."""

    def write(self, iterator: Iterator[pa.RecordBatch]) -> TaskFiles:
        return self._write_task(iterator)

    @storage_errors  # the commit's catalog or storage failing: the library's error, not a raw one
    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        self._commit(_gather(messages, self._forget_version), messages)

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        _abort(self._io(), messages, f"spark write {self.opts.table}")


def last_committed_batch(table: Table, query_id: str) -> int | None:
    """The highest batch id committed for ``query_id``: the table property each batch's commit sets, or the
    newest snapshot of the query on the current branch (tables written before the property existed).

    The property is what survives history expiry: after an erasure's purge (or ``expire_snapshots``) the
    snapshots that carry the summary keys are gone, and a batch replayed then was committed twice.
    """
    found: list[int] = []
    recorded = table.metadata.properties.get(LAST_BATCH_PREFIX + query_id, "")
    if recorded.lstrip("-").isdigit():
        found.append(int(recorded))
    snap = table.metadata.current_snapshot()
    while snap is not None:
        props = snap.summary.additional_properties if snap.summary else {}
        if props.get(QUERY_ID_KEY) == query_id and props.get(BATCH_ID_KEY, "").lstrip("-").isdigit():
            found.append(int(props[BATCH_ID_KEY]))
            break
        snap = table.metadata.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return max(found, default=None)


def recorded_spark_query(table: Table, query_id: str) -> str | None:
    """Spark's own query id that committed the last batch of the library's ``query_id``: the table property the
    batch's commit sets, or the newest snapshot of the query on the current branch."""
    recorded = table.metadata.properties.get(SPARK_QUERY_PREFIX + query_id)
    if recorded:
        return recorded
    snap = table.metadata.current_snapshot()
    while snap is not None:
        props = snap.summary.additional_properties if snap.summary else {}
        if props.get(QUERY_ID_KEY) == query_id:
            return props.get(SPARK_QUERY_ID_KEY) or None
        snap = table.metadata.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return None


def check_same_spark_query(table: Table, query_id: str, spark_query_id: str | None, batch_id: int,
                           name: str) -> None:
    """Refuse a batch of ``query_id`` from another Spark query (a new checkpoint) than the one that committed its
    last batch: its batch ids restart at 0, so its batches would be skipped as "already committed" and their rows
    lost. Unknown on either side (no task context, a table written before the id was recorded): not checked."""
    if spark_query_id is None or spark_query_id == query_id:
        return
    recorded = recorded_spark_query(table, query_id)
    if recorded is None or recorded == spark_query_id:
        return
    last = last_committed_batch(table, query_id)
    raise StreamingQueryReusedError(
        f"stream to {name}: streaming.query-id {query_id!r} was last committed (batch {last}) by Spark query "
        f"{recorded}, but this batch ({batch_id}) comes from Spark query {spark_query_id}: a new checkpoint, whose "
        "batch ids start again at 0, so its batches would be skipped as already committed and their rows lost. "
        "Nothing was committed and the batch's files were removed. Restart from the original checkpointLocation, "
        "or give this checkpoint its own streaming.query-id")


class _AlreadyCommitted(Exception):
    """Raised inside the commit loop: the batch was committed (by another driver) since the first check."""

    def __init__(self, last: int) -> None:
        super().__init__(last)
        self.last = last


class IcebergPrivacyStreamWriter(_TaskWriter, DataSourceStreamArrowWriter):
    """``writeStream.format("iceberg-privacy")``: exactly once per micro-batch."""

    def write(self, iterator: Iterator[pa.RecordBatch]) -> TaskFiles:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        spark_query_id = ctx.getLocalProperty(SPARK_QUERY_ID_PROPERTY) if ctx is not None else None
        query_id = self.opts.get("streaming.query-id") or spark_query_id
        return self._write_task(iterator, query_id, spark_query_id)

    def query_id(self, messages: list[WriterCommitMessage | None]) -> str:
        ids = {m.query_id for m in messages if isinstance(m, TaskFiles) and m.query_id}
        chosen = self.opts.get("streaming.query-id") or (sorted(ids)[0] if ids else None) \
            or self.opts.get("checkpointlocation")
        if not chosen:
            raise ConfigurationError(
                "cannot tell which streaming query this batch belongs to; set .option('streaming.query-id', ...) "
                "or a checkpointLocation so replayed batches are not committed twice"
            )
        return chosen

    @storage_errors  # the commit's catalog or storage failing: the library's error, not a raw one
    def commit(self, messages: list[WriterCommitMessage | None], batchId: int) -> None:
        query_id = self.query_id(messages)
        written = _gather(messages, self._forget_version)
        spark_ids = sorted({m.spark_query_id for m in messages if isinstance(m, TaskFiles) and m.spark_query_id})
        spark_query_id = spark_ids[0] if len(spark_ids) == 1 else None

        def not_committed_yet(table: Table) -> None:
            # Checked again on the refreshed table before every commit attempt: a replay of this batch (another
            # driver of the same query) that landed after the first check lost this one the race, and a retry
            # on its head would commit the batch twice.
            check_same_spark_query(table, query_id, spark_query_id, batchId, self.opts.table)
            last = last_committed_batch(table, query_id)
            if last is not None and batchId <= last:
                raise _AlreadyCommitted(last)

        summary = {QUERY_ID_KEY: query_id, BATCH_ID_KEY: str(batchId)}
        properties = {LAST_BATCH_PREFIX + query_id: str(batchId)}
        if spark_query_id is not None:
            summary[SPARK_QUERY_ID_KEY] = spark_query_id
            properties[SPARK_QUERY_PREFIX + query_id] = spark_query_id
        try:  # checked by commit_written on the refreshed table before every attempt, the first included
            self._commit(written, messages, summary, properties, precondition=not_committed_yet)
        except _AlreadyCommitted as done:
            n = _delete_files(self._io(), messages)
            print(f"iceberg-privacy stream {self.opts.table}: batch {batchId} of query {query_id} was already "
                  f"committed (last {done.last}); skipped, deleted {n} replayed file(s)", file=sys.stderr, flush=True)
        except StreamingQueryReusedError:
            _delete_files(self._io(), messages)  # nothing was committed: the batch's files are nobody's
            raise

    def abort(self, messages: list[WriterCommitMessage | None], batchId: int) -> None:
        _abort(self._io(), messages, f"stream {self.opts.table}: batch {batchId}")
