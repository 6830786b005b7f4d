"""Erasure: remove every row of the subjects by rewriting only the files that hold them.

Per table, in one pass for thousands of subjects: plan candidate files with the pruning planner
(manifests + Bloom sidecars, every identity column, unioned), read each candidate once, drop the
matching rows with one vectorized ``is_in`` per column, write the remaining rows as new data files
with their Bloom filters, and commit ONE copy-on-write overwrite (delete the files that had matches,
add their rewrites, a new sidecar covering the new files). Files without a match are not rewritten.

The snapshot summary records ``privacy.erasure.request-id`` and counts, never an identifier. The
request is journaled before any work (:mod:`iceberg_privacy.rights.journal`), and the subjects go on the
table's forget list first, so rows of theirs ingested while the erase runs are dropped at write.
Concurrent commits are retried against the new snapshot (re-planned: new files may hold subjects),
and after a commit that landed on a newer snapshot than it planned on, the table is planned again
until no file holds a subject.

Physical removal from old snapshots and the final verification are :func:`iceberg_privacy.rights.purge`.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, Transaction

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.config import BloomColumn, bloom_columns
from iceberg_privacy.errors import CommitConflictError, RequestConflictError
from iceberg_privacy.lineage.fanout import plan_fanout
from iceberg_privacy.lineage.record import MAINTENANCE, LineageRecord, SourceRef
from iceberg_privacy.properties import ERASURE_FILES_ADDED_SUMMARY as SUMMARY_FILES_ADDED
from iceberg_privacy.properties import ERASURE_FILES_REWRITTEN_SUMMARY as SUMMARY_FILES_REWRITTEN
from iceberg_privacy.properties import ERASURE_KEY_ID_SUMMARY as SUMMARY_KEY_ID
from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY as SUMMARY_REQUEST
from iceberg_privacy.properties import ERASURE_ROWS_SUMMARY as SUMMARY_ROWS
from iceberg_privacy.properties import ERASURE_SUBJECTS_SUMMARY as SUMMARY_SUBJECTS
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.journal import TABLE_ERASED, Journal, RequestState, erasure_snapshots
from iceberg_privacy.rights.keyed import key_id
from iceberg_privacy.rights.reports import ErasureReport, TableErasure
from iceberg_privacy.rights.subjects import (
    TableSubjects,
    as_values,
    digest_subjects,
    match_mask,
    plan_candidates,
    resolve_subjects,
    table_name,
    with_fanout,
)
from iceberg_privacy.write import (
    DEFAULT_CHUNK_BYTES,
    WrittenFiles,
    finish_staged,
    stage_sidecar,
    write_data_files,
)

logger = logging.getLogger(__name__)




@dataclass
class _Batch:
    """Candidate files that held subject rows, and the files their remaining rows were written to."""

    originals: list[DataFile]
    written: WrittenFiles
    rows_removed: int


def _forget(catalog: Catalog, ts: TableSubjects, request_id: str, secret: bytes) -> bool:
    """Put the subjects on the table's forget list before any rewrite, so rows of theirs that a
    concurrent writer commits from now on are dropped (see :func:`iceberg_privacy.write.recheck_forget`)."""
    if ts.digests:
        # Screen tags for the subjects given by value (a request resumed by digest has none: writes to
        # the table then HMAC every id, see forget.py).
        screens = {d: tag for c in ts.columns for d, tag in
                   forget.literal_entries(secret, c.literals, c.column.leaf_type).items()}
        forget.add(catalog, ts.table, sorted(ts.digests), request_id, secret_key_id=key_id(secret), screens=screens)
    return True


def _load(table: Table, task: FileScanTask, ts: TableSubjects, secret: bytes) -> tuple[pa.Table | None, np.ndarray]:
    """One candidate file and its mask of subject rows (data None when it holds none)."""
    md = table.metadata
    if ts.by_digest:  # every file is a candidate: read the identity columns first, most files hold nobody
        ids = [c.column.name for c in ts.columns]
        probe = ArrowScan(md, table.io, md.schema().select(*ids), AlwaysTrue(), case_sensitive=True).to_table([task])
        mask = match_mask(probe, ts, secret)
        if not mask.any():
            return None, mask
    data = ArrowScan(md, table.io, md.schema(), AlwaysTrue(), case_sensitive=True).to_table([task])
    mask = match_mask(data, ts, secret)
    return (data if mask.any() else None), mask


def _prefetch(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any], window: int) -> Iterator[Any]:
    """``map(fn, items)`` in order, at most ``window`` reads in flight (bounded memory)."""
    pending: deque[Future[Any]] = deque()
    it = iter(items)
    for x in itertools.islice(it, window):
        pending.append(pool.submit(fn, x))
    while pending:
        head = pending.popleft()
        for x in itertools.islice(it, 1):
            pending.append(pool.submit(fn, x))
        yield head.result()


def _rewrite(table: Table, tasks: list[FileScanTask], ts: TableSubjects, secret: bytes, columns: list[BloomColumn],
             *, chunk_bytes: int, pool: ThreadPoolExecutor, window: int, checked: set[str]) -> _Batch | None:
    """Stream the candidates' remaining rows into new files (one writer call for all of them).

    Files without a subject row are added to ``checked`` and contribute nothing; None if no file matched.
    """
    batch = _Batch([], WrittenFiles(), 0)

    def kept() -> Iterator[pa.RecordBatch]:
        for task, (data, mask) in zip(tasks, _prefetch(pool, lambda t: _load(table, t, ts, secret), tasks, window),
                                      strict=True):
            if data is None:
                checked.add(task.file.file_path)
                continue
            batch.originals.append(task.file)
            batch.rows_removed += int(mask.sum())
            yield from data.filter(pa.array(~mask)).to_batches()

    gen = kept()
    first = next(gen, None)
    if first is not None:
        schema = first.schema
        rest = (b if b.schema == schema else b.cast(schema) for b in gen)
        reader = pa.RecordBatchReader.from_batches(schema, itertools.chain([first], rest))
        batch.written = write_data_files(table.io, table.metadata, reader, columns, chunk_bytes=chunk_bytes,
                                         where=table_name(table))
    return batch if batch.originals else None


def _commit(table: Table, batches: list[_Batch], columns: list[BloomColumn], props: dict[str, str],
            attempted: list[int]) -> int:
    """One overwrite: delete the rewritten files, add their replacements and a sidecar for them.

    The snapshot id is appended to ``attempted`` first, so a caller can tell whether a commit whose
    outcome is unknown (a database error) landed after all.
    """
    tx: Transaction = table.transaction()
    producer = tx.update_snapshot(snapshot_properties=dict(props)).overwrite()
    attempted.append(compat.producer_snapshot_id(producer))
    added = [f for b in batches for f in b.written.files]
    filters = [flt for b in batches for flt in b.written.filters]
    for b in batches:
        for f in b.originals:
            producer.delete_data_file(f)
    for f in added:
        producer.append_data_file(f)
    snapshot_id = compat.producer_snapshot_id(producer)
    staged = stage_sidecar(table, tx, producer, snapshot_id, added, filters, columns)
    finish_staged(table, tx, producer, snapshot_id, staged)
    try:
        tx.commit_transaction()
    except (CommitFailedException, ValidationException):
        if staged is not None:  # certainly not committed
            table.io.delete(staged[0])
        raise
    return snapshot_id


def _discard(table: Table, batches: Sequence[_Batch]) -> None:
    for b in batches:
        for f in b.written.files:
            try:
                table.io.delete(f.file_path)
            except Exception:  # left for cleanup_orphans
                logger.info("could not delete uncommitted rewrite %s", f.file_path)


def erase_table(ts: TableSubjects, request_id: str, secret: bytes, *, subjects: int, commit_retries: int | None = None,
                workers: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> TableErasure:
    """Remove the subjects' rows from one table; commits until no file at the head holds a subject."""
    table = ts.table
    rep = TableErasure(table_name(table))
    checked: set[str] = set()  # files read and found clean (data files are immutable)
    pending: list[_Batch] = []  # written, not committed yet
    conflicts = 0
    workers = workers or min(4, os.cpu_count() or 1)
    columns = bloom_columns(table.schema(), table.properties)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ip-erase") as pool:
        while True:
            table.refresh()
            plan = plan_candidates(ts)
            rep.files_total = plan.files_total
            live = {t.file.file_path for t in plan.tasks}
            # A batch whose originals someone else removed meanwhile is redone from the files now live.
            stale = [b for b in pending if any(f.file_path not in live for f in b.originals)]
            _discard(table, stale)
            pending = [b for b in pending if b not in stale]
            done = {f.file_path for b in pending for f in b.originals}
            todo = [t for t in plan.tasks if t.file.file_path not in checked and t.file.file_path not in done]
            rep.files_read += len(todo)
            fresh = _rewrite(table, todo, ts, secret, columns, chunk_bytes=chunk_bytes, pool=pool, window=workers,
                             checked=checked) if todo else None
            if fresh is not None:
                pending.append(fresh)
            if not pending:
                return rep
            files_rewritten = sum(len(b.originals) for b in pending)
            props = {
                SUMMARY_REQUEST: request_id,
                SUMMARY_ROWS: str(sum(b.rows_removed for b in pending)),
                SUMMARY_FILES_REWRITTEN: str(files_rewritten),
                SUMMARY_FILES_ADDED: str(sum(len(b.written.files) for b in pending)),
                SUMMARY_SUBJECTS: str(subjects),
                SUMMARY_KEY_ID: key_id(secret),
                # Rows of the table itself, minus the subjects': its own snapshot is the source.
                **LineageRecord(op="erasure", engine="pyarrow", status=MAINTENANCE, sources=[
                    SourceRef.of(table, plan.snapshot_id)]).summary(),
            }
            checkpoint("erasure.before_commit")
            rep.commit_attempts += 1
            attempted: list[int] = []
            failure: BaseException | None = None
            try:
                sid = _commit(table, pending, columns, props, attempted)
            except Exception as exc:
                if not (retry.is_conflict(exc) or isinstance(exc, ValidationException)):
                    raise
                failure = exc
                if attempted and table.refresh().metadata.snapshot_by_id(attempted[-1]) is not None:
                    sid = attempted[-1]  # it landed after all: its files are live, never discard them
                else:
                    sid = None
            if sid is None:
                conflicts += 1
                logger.info("erase commit on %s lost to a concurrent writer (%s); re-planning", rep.table, failure)
                if conflicts >= retry.DEFAULT_POLICY.with_retries(commit_retries).attempts:
                    _discard(table, pending)
                    raise CommitConflictError(
                        f"erasing from {rep.table} lost to concurrent commits {conflicts} times; nothing of the last "
                        "attempt was committed. Run the request again (it resumes) or pause the writers."
                    ) from failure
                time.sleep(retry.DEFAULT_POLICY.delay(conflicts + 1))  # let the winner finish, then re-plan
                continue
            checkpoint("erasure.after_commit")
            rep.snapshot_ids.append(sid)
            rep.rows_removed += int(props[SUMMARY_ROWS])
            rep.files_rewritten += files_rewritten
            rep.files_added += int(props[SUMMARY_FILES_ADDED])
            checked.update(f.file_path for b in pending for f in b.written.files)  # written without the subjects
            pending = []
            committed = table.metadata.snapshot_by_id(sid)
            if committed is not None and committed.parent_snapshot_id == plan.snapshot_id:
                return rep  # nobody committed between our plan and our commit: nothing new to look at


def _table_subjects(catalog: Catalog, req: RequestState, subjects: Any | None, secret: bytes) -> list[TableSubjects]:
    tables: list[Table] = []
    for name in req.tables:
        try:
            tables.append(catalog.load_table(name))
        except NoSuchTableError:
            logger.warning("table %s of request %s no longer exists; nothing to do there", name, req.request_id)
    if subjects is None:
        return digest_subjects(tables, set(req.subjects))
    resolved = resolve_subjects(tables, subjects, secret)
    given = set().union(*(ts.digests for ts in resolved)) if resolved else set()
    if not given <= set(req.subjects):
        raise RequestConflictError(
            f"the subjects given do not match those recorded for request {req.request_id}; resume it with the "
            "same subject values, or without values (keyed-hash matching, every file is scanned)"
        )
    lineage = req.detail.get("lineage") or {}
    if lineage.get("followed"):  # values mapped downstream (lower(email), ...) are derived again, not stored
        roots = [t for t in tables if table_name(t) in set(lineage.get("roots", []))]
        resolved = with_fanout(resolved, as_values(subjects), secret, plan_fanout(catalog, roots, as_values(subjects)))
    return resolved


def process_erasure(catalog: Catalog, req: RequestState, subjects: Any | None, secret: bytes, *,
                    journal: Journal, commit_retries: int | None = None, workers: int | None = None,
                    resolved_subjects: list[TableSubjects] | None = None) -> ErasureReport:
    """Erase every table of a journaled request that is not erased yet (the resumable core).

    ``resolved_subjects`` (from :func:`submit_request`, same subjects) saves resolving them again.
    """
    t0 = time.perf_counter()
    report = ErasureReport(req.request_id, req.subject_count, {})
    if resolved_subjects is None or subjects is None:
        resolved_subjects = _table_subjects(catalog, req, subjects, secret)
    resolved = {ts.name: ts for ts in resolved_subjects}
    for name, state in req.tables.items():
        # Erased-but-unverified tables are planned again: rows of a subject committed by a writer that
        # raced the forget list are caught here (nothing matches otherwise, and nothing is rewritten).
        if state.status == "verified":
            report.tables[name] = TableErasure(name, rows_removed=state.rows, files_rewritten=state.files,
                                               snapshot_ids=[state.snapshot_id] if state.snapshot_id else [],
                                               skipped=f"already {state.status}")
            continue
        ts = resolved.get(name)
        if ts is None:  # dropped table: its rows are gone with it
            journal.record(req.request_id, TABLE_ERASED, table=name, rows=0, files=0,
                           detail={"note": "table no longer exists"})
            report.tables[name] = TableErasure(name, skipped="table no longer exists")
            continue
        forget_listed = _forget(catalog, ts, req.request_id, secret)
        checkpoint("erasure.after_forget")
        rep = erase_table(ts, req.request_id, secret, subjects=req.subject_count,
                          commit_retries=commit_retries, workers=workers)
        # Totals over every commit of this request, including those of a run that crashed before its event.
        done = erasure_snapshots(ts.table, req.request_id)
        rep.rows_removed = sum(r for _, r, _ in done)
        rep.files_rewritten = sum(f for _, _, f in done)
        rep.snapshot_ids = [s for s, _, _ in done]
        head = ts.table.metadata.current_snapshot_id
        journal.record(req.request_id, TABLE_ERASED, table=name,
                       snapshot_id=rep.snapshot_ids[-1] if rep.snapshot_ids else head,
                       rows=rep.rows_removed, files=rep.files_rewritten,
                       detail={"files_read": rep.files_read, "files_total": rep.files_total,
                               "commits": len(rep.snapshot_ids), "forget_listed": forget_listed})
        checkpoint("erasure.after_table")
        report.tables[name] = rep
    report.seconds = time.perf_counter() - t0
    return report
