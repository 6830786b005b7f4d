"""Subject rights on Spark: executors read (and rewrite) the files, the driver plans and commits.

``erase``/``run_request``, ``access``, ``purge``/``verify_table`` and ``backfill`` take ``spark=session``.
Each then runs its per-file work as one Spark job, and everything else exactly as without Spark:

* erasure: the driver plans the candidate files (manifests + Bloom sidecars); executors read them,
  drop the subjects' rows and write the remaining rows as new data files *with their Bloom filters*
  (one pass, :func:`iceberg_privacy.datafiles.write_data_files`); the driver commits through the core's
  commit path (:func:`iceberg_privacy.rights.erasure.erase_table`: forget list first, lineage, sidecar,
  rebase onto concurrent appends, retries), one commit per table and branch as without Spark;
* access: executors read the candidate files and return the subjects' rows; the driver writes the export;
* verification (purge): the driver lists every file under the table location; executors read them and
  count the subjects' rows in the Parquet files; the traces in other files and names are checked on the
  driver (:mod:`iceberg_privacy.rights.traces`);
* backfill: executors build the filters of the files no sidecar covers; the driver writes the sidecar.

Executors get one broadcast per job (destroyed when it ends): the table metadata, the FileIO's string
properties (files are read and written through pyiceberg's FileIO, so any storage the catalog reaches
works: S3, GCS, ADLS, local), the columns and a :class:`Matcher`. They never get a catalog.

**The key executors hold.** A row is matched by hashing the distinct values of a file with a key and
looking the digests up; whoever hashes needs the key. When the caller gives the subjects' values
(``erase(catalog, subjects, spark=...)``, ``access``), the driver draws a fresh random key for the job
and hashes the subjects with it: executors get that one-job key and one-job digests, never the
configured secret, and neither matches the journal or forget list after the job. When only keyed
digests are known (a request resumed without its values, and every verification), executors must
hash with the configured secret itself, so it is broadcast. A Spark broadcast travels between the
driver and the executors in clear unless the cluster encrypts it: keep such jobs inside the cluster's
trust boundary, and set ``spark.network.crypto.enabled=true`` (RPC) and ``spark.io.encryption.enabled=true``
(blocks spilled to local disk) where executors are not on trusted hosts. Clear subject values never
leave the driver.

This module imports no pyspark: it only calls the session it is given.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import BloomColumn, IdentityColumn
from iceberg_privacy.datafiles import WrittenFiles, write_batches
from iceberg_privacy.identities import extract_identities, rows_matching
from iceberg_privacy.index.read import read_task
from iceberg_privacy.rights.filework import Batch as _Batch
from iceberg_privacy.rights.filework import (
    FileScan,
    FileScanner,
    Rewrite,
    identity_names,
    load_candidate,
    no_rows,
    scan_stored_file,
    subjects_read,
)
from iceberg_privacy.rights.filework import candidate_rows as _rows_here
from iceberg_privacy.rights.filework import prefetch as _prefetch
from iceberg_privacy.rights.keyed import canonical_literal, digest, redact_error
from iceberg_privacy.rights.subjects import CandidatePlan, TableSubjects, digest_value_set
from iceberg_privacy.spark.jobs import filter_builder, groups_by_size, parallelism, run_job
from iceberg_privacy.storage import StoredFile, library_error, portable_properties

logger = logging.getLogger("iceberg_privacy.spark")

READ_AHEAD = 2
"""Files an erasure task reads ahead while it writes (as the single-process path's prefetch window)."""



@dataclass(frozen=True)
class Matcher:
    """What executors match rows with: keyed digests of the subjects per identity column, and the key."""

    key: bytes
    columns: tuple[tuple[IdentityColumn, frozenset[bytes]], ...]
    job_key: bool  # a one-job key (the subjects' values were given), else the configured secret

    @property
    def names(self) -> list[str]:
        return [c.name for c, _ in self.columns]

    @property
    def field_ids(self) -> list[int]:
        return [c.field_id for c, _ in self.columns]

    @property
    def digests(self) -> set[bytes]:
        """Every subject digest (made with ``key``) of every column."""
        return set().union(*(d for _, d in self.columns))

    def mask(self, data: pa.Table) -> np.ndarray:
        """Rows of ``data`` where any identity column holds a subject (nested ids included)."""
        mask = np.zeros(data.num_rows, dtype=bool)
        if data.num_rows == 0:
            return mask
        for col, digests in self.columns:
            if not digests or col.name not in data.column_names:
                continue
            arr = data.column(col.name)
            values, _ = extract_identities(arr)
            value_set = digest_value_set(values, col.leaf_type, self.key, set(digests))
            if len(value_set):
                mask |= rows_matching(arr, value_set)
        return mask


def matcher_for(ts: TableSubjects, secret: bytes) -> Matcher:
    """The matcher of one table's subjects: a fresh one-job key when their values are known (the
    configured secret stays on the driver), else the configured secret and the recorded digests."""
    if ts.by_digest:
        return Matcher(secret, tuple((c.column, frozenset(c.digests)) for c in ts.columns), job_key=False)
    key = secrets.token_bytes(32)
    return Matcher(key, tuple(
        (c.column, frozenset(digest(key, canonical_literal(lit, c.column.leaf_type)) for lit in c.literals))
        for c in ts.columns), job_key=True)


def _file_size(task: FileScanTask) -> int:
    return int(task.file.file_size_in_bytes)


# -------------------------------------------------------------------------------------------- erase
@dataclass
class _ReadJob:
    """Broadcast to executors: what they read files with (no catalog, no clear subject value)."""

    metadata: TableMetadata
    io_properties: dict[str, str]
    matcher: Matcher
    where: str
    probe_first: bool = False  # read the identity columns first (every file is a candidate: most hold nobody)
    columns: list[BloomColumn] = field(default_factory=list)
    chunk_bytes: int = 0

    def io(self) -> FileIO:
        return load_file_io(self.io_properties, self.metadata.location)


def _load(job: _ReadJob, io: FileIO, task: FileScanTask) -> tuple[pa.Table | None, np.ndarray]:
    """One candidate file and its mask of subject rows (data None when it holds none)."""
    return load_candidate(io, job.metadata, task, job.matcher.mask, job.matcher.field_ids, probe_first=job.probe_first)


@dataclass
class Rewritten:
    """What one executor task of an erasure did: task indices that held subject rows or none, and the
    files (with their filters) the remaining rows of the matched ones were written to, uncommitted."""

    matched: list[int] = field(default_factory=list)
    clean: list[int] = field(default_factory=list)
    rows_removed: int = 0
    written: WrittenFiles = field(default_factory=WrittenFiles)


def _rewrite_group(job: _ReadJob, io: FileIO, group: list[tuple[int, FileScanTask]]) -> Rewritten:
    out = Rewritten()
    with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="ip-spark-erase") as pool:
        loaded = _prefetch(pool, lambda item: _load(job, io, item[1]), group, READ_AHEAD)

        def kept() -> Iterator[pa.RecordBatch]:
            for (i, _), (data, mask) in zip(group, loaded, strict=True):
                if data is None:
                    out.clean.append(i)
                    continue
                out.matched.append(i)
                out.rows_removed += int(mask.sum())
                yield from data.filter(pa.array(~mask)).to_batches()

        out.written = write_batches(io, job.metadata, kept(), job.columns, chunk_bytes=job.chunk_bytes,
                                    where=job.where)
    return out


def _redacted[T](key: bytes, digests: set[bytes], work: Iterator[T]) -> Iterator[T]:
    """``work`` whose failure, raised on an executor, names no subject: Spark logs an executor's error with its
    Python traceback (the driver's console in local mode, the executor logs on a cluster) and hands its text to the
    driver, and a storage error quotes the path it failed on, which holds the id in an identity partition. It leaves
    as the library's error (a StorageError names what is missing) with ``<subject>`` in place of the id, unchained."""
    try:
        yield from work
    except Exception as exc:
        shown = redact_error(exc, key, digests)
        if shown is not exc:
            raise shown from None
        error = library_error(exc)  # a storage error says what is missing, as this process says it without Spark
        if error is exc:
            raise
        raise error from exc


def _erase_partition(bc: Any, part: Iterator[list[tuple[int, FileScanTask]]]) -> Iterator[Rewritten]:
    job: _ReadJob = bc.value
    io = job.io()
    yield from _redacted(job.matcher.key, job.matcher.digests, (_rewrite_group(job, io, group) for group in part))


def erasure_rewrite(spark: Any) -> Rewrite:
    """The erasure's rewrite on ``spark``'s executors, for :func:`iceberg_privacy.rights.erasure.erase_table`
    (same result as the single-process rewrite: the same files rewritten, the same rows removed)."""

    def rewrite(table: Table, tasks: list[FileScanTask], ts: TableSubjects, secret: bytes,
                columns: list[BloomColumn], *, chunk_bytes: int, pool: ThreadPoolExecutor, window: int,
                checked: set[str]) -> _Batch | None:
        job = _ReadJob(table.metadata, portable_properties(table.io), matcher_for(ts, secret), table_name(table),
                       probe_first=ts.by_digest, columns=columns, chunk_bytes=chunk_bytes)
        groups = groups_by_size(tasks, parallelism(spark), _file_size)
        results = run_job(spark, f"erasing from {job.where}", job, groups, _erase_partition)
        batch = _Batch([], WrittenFiles(spec_id=job.metadata.default_spec_id), 0)  # the spec the tasks wrote for
        for r in results:
            checked.update(tasks[i].file.file_path for i in r.clean)
            batch.rows_removed += r.rows_removed
            batch.written.files += r.written.files
            batch.written.filters += r.written.filters
            batch.written.rows += r.written.rows
            batch.written.filter_seconds += r.written.filter_seconds
        batch.originals = [tasks[i].file for i in sorted(i for r in results for i in r.matched)]
        logger.info("spark erase %s: %d of %d candidate file(s) held subjects, %d task(s)", job.where,
                    len(batch.originals), len(tasks), len(groups))
        return batch if batch.originals else None

    return rewrite


# ------------------------------------------------------------------------------------------- access
def _access_partition(bc: Any, part: Iterator[list[tuple[int, FileScanTask]]]) -> Iterator[tuple[int, pa.Table]]:
    job: _ReadJob = bc.value
    io = job.io()
    md = job.metadata
    read = subjects_read(md, job.matcher.field_ids)

    def work() -> Iterator[tuple[int, pa.Table]]:
        for group in part:
            for i, task in group:  # the same late-materialized read as this process (identity columns first)
                rows = read_task(io, read, task, job.matcher.mask)
                if rows is not None:
                    yield i, rows

    yield from _redacted(job.matcher.key, job.matcher.digests, work())


def access_rows(spark: Any) -> Callable[[TableSubjects, CandidatePlan, bytes], pa.Table]:
    """The access request's row reader on ``spark``'s executors: the subjects' rows of the planned files,
    in plan order (as the single-process reader returns them)."""

    def rows(ts: TableSubjects, plan: CandidatePlan, secret: bytes) -> pa.Table:
        if not plan.tasks:
            return _rows_here(ts, plan, secret)
        table = ts.table
        job = _ReadJob(table.metadata, portable_properties(table.io), matcher_for(ts, secret), ts.name)
        groups = groups_by_size(plan.tasks, parallelism(spark), _file_size)
        parts = run_job(spark, f"reading the subjects' rows of {ts.name}", job, groups, _access_partition)
        if not parts:
            return no_rows(table.metadata)
        return pa.concat_tables([t for _, t in sorted(parts, key=lambda p: p[0])], promote_options="permissive")

    return rows


# ------------------------------------------------------------------------------------------- verify
@dataclass
class _VerifyJob:
    io_properties: dict[str, str]
    location: str
    columns: dict[int, IdentityColumn]
    secret: bytes  # verification matches recorded digests: executors need the configured secret
    digests: frozenset[bytes]
    names: dict[str, str]  # the names identity columns are read by in files without field ids (name mapping)


def _verify_partition(bc: Any, part: Iterator[list[tuple[int, StoredFile]]]) -> Iterator[tuple[int, FileScan]]:
    job: _VerifyJob = bc.value
    io = load_file_io(job.io_properties, job.location)
    digests = set(job.digests)
    yield from _redacted(job.secret, digests, ((i, scan_stored_file(io, stored, job.columns, job.secret, digests,
                                                                    job.names))
                                               for group in part for i, stored in group))


def verify_scanner(spark: Any) -> FileScanner:
    """:func:`iceberg_privacy.rights.purge.verify_table`'s file reads on ``spark``'s executors."""

    def scan(table: Table, files: list[StoredFile], cols: dict[int, Any], secret: bytes,
             digests: set[bytes]) -> list[FileScan]:
        job = _VerifyJob(portable_properties(table.io), table.location(), cols, secret, frozenset(digests),
                         identity_names(table, cols))
        groups = groups_by_size(files, parallelism(spark), lambda f: f.size)
        found = dict(run_job(spark, f"verifying {table_name(table)}", job, groups, _verify_partition))
        return [found[i] for i in range(len(files))]

    return scan


__all__ = ["Matcher", "Rewritten", "access_rows", "erasure_rewrite", "filter_builder", "groups_by_size",
           "matcher_for", "verify_scanner"]
