"""Erasure: remove every row of the subjects by rewriting only the files that hold them.

Per table, in one pass for thousands of subjects: plan candidate files with the pruning planner
(manifests + Bloom sidecars, every identity column, unioned), read each candidate once, drop the
matching rows with one vectorized ``is_in`` per column, write the remaining rows as new data files
with their Bloom filters, and commit ONE copy-on-write overwrite (delete the files that had matches,
add their rewrites, a new sidecar covering the new files). Files without a match are not rewritten.

The snapshot summary records ``privacy.erasure.request-id`` and counts, never an identifier. The
request is journaled before any work (:mod:`iceberg_privacy.journal`), and the subjects go on the
table's forget list first, so rows of theirs ingested while the erase runs are dropped at write.
Concurrent commits are retried against the new snapshot (re-planned: new files may hold subjects),
and after a commit that landed on a newer snapshot than it planned on, the table is planned again
until no file holds a subject.

Physical removal from old snapshots and the final verification are :func:`iceberg_privacy.purge`.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, Transaction
from sqlalchemy.exc import OperationalError

from iceberg_privacy import forget
from iceberg_privacy.config import BloomColumn, bloom_columns
from iceberg_privacy.errors import CommitConflictError, RequestConflictError
from iceberg_privacy.ingest import (
    DEFAULT_CHUNK_BYTES,
    WrittenFiles,
    finish_staged,
    stage_sidecar,
    write_data_files,
)
from iceberg_privacy.journal import DEFAULT_DEADLINE, TABLE_ERASED, Journal, RequestState
from iceberg_privacy.keyed import key_id, load_secret
from iceberg_privacy.lineage.fanout import Fanout, plan_fanout
from iceberg_privacy.lineage.record import MAINTENANCE, LineageRecord, SourceRef
from iceberg_privacy.storage import storage_errors
from iceberg_privacy.subjects import (
    TableSubjects,
    as_values,
    digest_subjects,
    match_mask,
    plan_candidates,
    resolve_subjects,
    subject_tables,
    table_name,
)

logger = logging.getLogger(__name__)

SUMMARY_REQUEST = "privacy.erasure.request-id"
SUMMARY_ROWS = "privacy.erasure.rows-removed"
SUMMARY_FILES_REWRITTEN = "privacy.erasure.files-rewritten"
SUMMARY_FILES_ADDED = "privacy.erasure.files-added"
SUMMARY_SUBJECTS = "privacy.erasure.subjects"
SUMMARY_KEY_ID = "privacy.erasure.key-id"

# Test seam: called with a stage name ("after_submit", "after_forget", "before_commit", "after_commit",
# "after_table") so tests can crash a run at a precise point. None in normal use.
_FAULT_HOOK: Callable[[str], None] | None = None


def _fault(stage: str) -> None:
    if _FAULT_HOOK is not None:
        _FAULT_HOOK(stage)


@dataclass
class TableErasure:
    """What erasing the subjects from one table did."""

    table: str
    rows_removed: int = 0
    files_rewritten: int = 0  # data files that held subject rows and were replaced
    files_added: int = 0
    files_read: int = 0  # candidate files read (rewritten + Bloom false positives)
    files_total: int = 0
    snapshot_ids: list[int] = field(default_factory=list)
    commit_attempts: int = 0
    skipped: str | None = None  # why nothing was done (already erased in an earlier run, ...)


@dataclass
class ErasureReport:
    """Outcome of :func:`erase` (and of the purge, when asked for)."""

    request_id: str
    subjects: int
    tables: dict[str, TableErasure]
    seconds: float = 0.0
    purge: Any = None  # PurgeReport when erase(..., purge=True)
    lineage: Fanout | None = None  # erase(..., follow_lineage=True): downstream tables, exempt releases, warnings

    @property
    def rows_removed(self) -> int:
        return sum(t.rows_removed for t in self.tables.values())

    def __str__(self) -> str:
        lines = [f"erase request {self.request_id}: {self.subjects} subject(s), {self.rows_removed} row(s) removed "
                 f"in {self.seconds:.2f}s"]
        for t in self.tables.values():
            note = f" ({t.skipped})" if t.skipped else ""
            lines.append(f"  {t.table}: {t.rows_removed} rows, {t.files_rewritten} files rewritten of {t.files_read} "
                         f"read / {t.files_total}, snapshots {t.snapshot_ids or '-'}{note}")
        if self.lineage is not None:
            for rel in self.lineage.exempt:
                lines.append(f"  exempt: {rel.table} is a DP release of {rel.source} (release {rel.release_id or '?'}, "
                             f"snapshot {rel.snapshot_id}); aggregated with differential privacy, not erased")
            lines += [f"  warning: {w}" for w in self.lineage.warnings]
        if self.purge is not None:
            lines.append(str(self.purge))
        return "\n".join(lines)


@dataclass
class _Batch:
    """Candidate files that held subject rows, and the files their remaining rows were written to."""

    originals: list[DataFile]
    written: WrittenFiles
    rows_removed: int


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def _forget(catalog: Catalog, ts: TableSubjects, request_id: str, secret: bytes) -> bool:
    """Put the subjects on the table's forget list before any rewrite, so rows of theirs that a
    concurrent writer commits from now on are dropped (see :func:`iceberg_privacy.ingest.recheck_forget`)."""
    if ts.digests:
        forget.add(catalog, ts.table, sorted(ts.digests), request_id, secret_key_id=key_id(secret))
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
    attempted.append(producer._snapshot_id)
    added = [f for b in batches for f in b.written.files]
    filters = [flt for b in batches for flt in b.written.filters]
    for b in batches:
        for f in b.originals:
            producer.delete_data_file(f)
    for f in added:
        producer.append_data_file(f)
    snapshot_id = producer._snapshot_id
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


def erasure_snapshots(table: Table, request_id: str) -> list[tuple[int, int, int]]:
    """(snapshot id, rows removed, files rewritten) of the table's commits for this request, oldest first."""
    out = []
    for snap in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0):
        extra = snap.summary.additional_properties if snap.summary else {}
        if extra.get(SUMMARY_REQUEST) == request_id:
            out.append((snap.snapshot_id, int(extra.get(SUMMARY_ROWS, 0)), int(extra.get(SUMMARY_FILES_REWRITTEN, 0))))
    return out


def erase_table(ts: TableSubjects, request_id: str, secret: bytes, *, subjects: int, max_commit_retries: int = 10,
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
            _fault("before_commit")
            rep.commit_attempts += 1
            attempted: list[int] = []
            failure: BaseException | None = None
            try:
                sid = _commit(table, pending, columns, props, attempted)
            except (CommitFailedException, ValidationException, OperationalError) as exc:  # SQLite: locked
                failure = exc
                if attempted and table.refresh().metadata.snapshot_by_id(attempted[-1]) is not None:
                    sid = attempted[-1]  # it landed after all: its files are live, never discard them
                else:
                    sid = None
            if sid is None:
                conflicts += 1
                logger.info("erase commit on %s lost to a concurrent writer (%s); re-planning", rep.table, failure)
                if conflicts > max_commit_retries:
                    _discard(table, pending)
                    raise CommitConflictError(
                        f"erasing from {rep.table} lost to concurrent commits {conflicts} times; nothing of the last "
                        "attempt was committed. Run the request again (it resumes) or pause the writers."
                    ) from failure
                continue
            _fault("after_commit")
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
        resolved = _with_fanout(resolved, as_values(subjects), secret, plan_fanout(catalog, roots, as_values(subjects)))
    return resolved


def _with_fanout(resolved: list[TableSubjects], values: list[Any], secret: bytes, fan: Fanout) -> list[TableSubjects]:
    """Add the values subjects have downstream (through recorded expressions) to each table's subjects."""
    out = []
    for ts in resolved:
        extra = fan.values.get(ts.name)
        out.append(resolve_subjects([ts.table], values + extra, secret, strict=False)[0] if extra else ts)
    return out


def process_erasure(catalog: Catalog, req: RequestState, subjects: Any | None, secret: bytes, *,
                    journal: Journal, max_commit_retries: int = 10, workers: int | None = None,
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
        _fault("after_forget")
        rep = erase_table(ts, req.request_id, secret, subjects=req.subject_count,
                          max_commit_retries=max_commit_retries, workers=workers)
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
        _fault("after_table")
        report.tables[name] = rep
    report.seconds = time.perf_counter() - t0
    return report


def submit_request(catalog: Catalog, kind: str, subjects: Any, tables: Sequence[str | Table] | None = None, *,
                   request_id: str | None = None, secret: bytes | None = None, home: str | os.PathLike[str] | None = None,
                   deadline: timedelta = DEFAULT_DEADLINE, journal: Journal | None = None,
                   follow_lineage: bool = False,
                   ) -> tuple[RequestState, list[TableSubjects], bytes, Fanout | None]:
    """Validate the subjects and tables, and record the request durably (no data work).

    With ``follow_lineage`` the downstream tables lineage reaches are part of the request too.
    """
    secret = secret if secret is not None else load_secret(home, catalog=catalog)  # refuse to start without a secret
    journal = journal or Journal(catalog)
    rid = request_id or new_request_id()
    existing = journal.find(rid)
    if existing is not None and not tables:
        targets = [catalog.load_table(n) for n in existing.tables if catalog.table_exists(n)]
    else:
        targets = subject_tables(catalog, tables)
    values = as_values(subjects)
    fan: Fanout | None = None
    followed = existing.detail.get("lineage") if existing is not None else None
    if follow_lineage or (followed or {}).get("followed"):
        roots = targets if not followed else [t for t in targets if table_name(t) in set(followed.get("roots", []))]
        fan = plan_fanout(catalog, roots, values)
        for w in fan.warnings:
            logger.warning("erasure fan-out: %s", w)
        known = {table_name(t) for t in targets}
        targets = targets + [catalog.load_table(n) for n in fan.tables if n not in known and catalog.table_exists(n)]
    resolved = resolve_subjects(targets, values, secret)
    if fan is not None:
        resolved = _with_fanout(resolved, values, secret, fan)
    digests: set[bytes] = set().union(*(ts.digests for ts in resolved)) if resolved else set()
    if followed and existing is not None and set(existing.subjects) < digests:
        raise RequestConflictError(
            f"the lineage changed since request {rid} was submitted (it now reaches more values or tables): finish "
            f"it as recorded (`iceberg-privacy requests run {rid}`), then submit a new request for what is new"
        )
    req = journal.submit(rid, kind, digests, len(set(map(repr, values))), [ts.name for ts in resolved], key_id(secret),
                         deadline=deadline, existing=existing, detail={"lineage": fan.to_json()} if fan else None)
    return req, resolved, secret, fan


@storage_errors
def erase(catalog: Catalog, subjects: Any, tables: Sequence[str | Table] | None = None, *,
          request_id: str | None = None, purge: bool = False, home: str | os.PathLike[str] | None = None,
          deadline: timedelta = DEFAULT_DEADLINE, max_commit_retries: int = 10, workers: int | None = None,
          follow_lineage: bool = False) -> ErasureReport:
    """Erase every row of ``subjects`` from the tables declaring identity columns (or those named).

    The request is journaled before work starts; running it again with the same ``request_id``
    resumes it and erases nothing twice. Unknown subjects are not an error (zero rows). With
    ``purge=True`` old snapshots and unreferenced files are removed and every file is verified
    (see :func:`iceberg_privacy.purge`); otherwise call ``purge`` later to complete the request.
    ``follow_lineage=True`` also erases from every table derived from these (``report.lineage`` lists
    them, the DP releases left alone as exempt, and any flow lineage could not follow).
    """
    journal = Journal(catalog)
    req, resolved, secret, fan = submit_request(catalog, "erase", subjects, tables, request_id=request_id, home=home,
                                                deadline=deadline, journal=journal, follow_lineage=follow_lineage)
    if req.kind != "erase":
        raise RequestConflictError(f"request {req.request_id} is an {req.kind} request, not an erasure")
    _fault("after_submit")
    report = process_erasure(catalog, req, as_values(subjects), secret, journal=journal,
                             max_commit_retries=max_commit_retries, workers=workers,
                             resolved_subjects=[ts for ts in resolved if ts.name in req.tables])
    report.lineage = fan
    if purge:
        from iceberg_privacy.purge import purge as run_purge

        report.purge = run_purge(catalog, req.request_id, home=home)
    return report


@storage_errors
def run_request(catalog: Catalog, request_id: str, subjects: Any | None = None, *, purge: bool = True,
                out: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None) -> Any:
    """Resume (or start) a journaled request: erase what is left, then purge and verify.

    Without ``subjects`` an erasure matches rows by keyed digest (every file read, no Bloom pruning),
    since the journal holds no clear-text ids; with them it is pruned and checked against the journal.
    An access request needs the subjects again and ``out``.
    """
    journal = Journal(catalog)
    req = journal.get(request_id)
    if req.kind == "access":
        if subjects is None or out is None:
            raise RequestConflictError(
                f"request {request_id} is an access request: re-run it with the subject values and an output "
                "directory (the journal keeps only keyed hashes, which cannot be exported)"
            )
        from iceberg_privacy.access import access

        return access(catalog, subjects, request_id=request_id, out=out, home=home)
    secret = load_secret(home, catalog=catalog)
    if req.key_id != key_id(secret):
        raise RequestConflictError(
            f"request {request_id} was recorded with secret key id {req.key_id}, the configured secret has key id "
            f"{key_id(secret)}: configure the secret the request was made with"
        )
    report = process_erasure(catalog, req, None if subjects is None else as_values(subjects), secret, journal=journal)
    if purge and journal.get(request_id).completed is None:
        from iceberg_privacy.purge import purge as run_purge

        report.purge = run_purge(catalog, request_id, home=home)
    return report
