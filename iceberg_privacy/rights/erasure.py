"""Erasure: remove every row of the subjects by rewriting only the files that hold them.

Per table, in one pass for thousands of subjects: plan candidate files with the pruning planner
(manifests + Bloom sidecars, every identity column, unioned), read each candidate once, drop the
matching rows with one vectorized ``is_in`` per column, write the remaining rows as new data files
with their Bloom filters, and commit ONE copy-on-write overwrite (delete the files that had matches,
add their rewrites, a new sidecar covering the new files). Files without a match are not rewritten.

The snapshot summary records ``privacy.erasure.request-id`` and counts, never an identifier. The
request is journaled before any work (:mod:`iceberg_privacy.rights.journal`), and the subjects go on the
table's forget list first, so rows of theirs ingested while the erase runs are dropped at write.
A commit that loses to a concurrent writer is rebased: if the files it replaces are still live, the
same rewrite is re-committed on the new head (one new manifest list, no data read again); otherwise
that part is re-planned. After a commit that landed on a newer snapshot than it was planned on, the
table is planned again until no file holds a subject. Branches holding a subject are erased too, and
tags holding one are reported (see :func:`process_erasure`).

Physical removal from old snapshots and the final verification are :func:`iceberg_privacy.rights.purge`.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.manifest import UNASSIGNED_SEQ, write_manifest_list
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Operation, Snapshot, Summary, update_snapshot_summaries
from pyiceberg.table.update import (
    AddSnapshotUpdate,
    AssertRefSnapshotId,
    AssertTableUUID,
    SetSnapshotRefUpdate,
)

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import load_many
from iceberg_privacy.config import BloomColumn, bloom_columns
from iceberg_privacy.datafiles import DEFAULT_CHUNK_BYTES, WrittenFiles, write_batches
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    RefHoldsSubjectError,
    RequestBlockedError,
    RequestConflictError,
)
from iceberg_privacy.lineage.fanout import plan_fanout
from iceberg_privacy.lineage.record import MAINTENANCE, LineageRecord, SourceRef
from iceberg_privacy.properties import ERASURE_FILES_ADDED_SUMMARY as SUMMARY_FILES_ADDED
from iceberg_privacy.properties import ERASURE_FILES_REWRITTEN_SUMMARY as SUMMARY_FILES_REWRITTEN
from iceberg_privacy.properties import ERASURE_KEY_ID_SUMMARY as SUMMARY_KEY_ID
from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY as SUMMARY_REQUEST
from iceberg_privacy.properties import ERASURE_ROWS_SUMMARY as SUMMARY_ROWS
from iceberg_privacy.properties import ERASURE_SUBJECTS_SUMMARY as SUMMARY_SUBJECTS
from iceberg_privacy.properties import SIDECAR_PATH_SUMMARY as SIDECAR_SUMMARY_PATH
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.filework import Batch as _Batch
from iceberg_privacy.rights.filework import Rewrite, load_candidate
from iceberg_privacy.rights.filework import prefetch as _prefetch
from iceberg_privacy.rights.journal import (
    ERASURE_STAGED,
    PURGE_PLANNED,
    TABLE_ERASED,
    Journal,
    RequestState,
    check_not_renamed,
    erasure_snapshots,
)
from iceberg_privacy.rights.keyed import key_id, location_digest
from iceberg_privacy.rights.linked import relink
from iceberg_privacy.rights.reports import ErasureReport, RefHold, TableErasure
from iceberg_privacy.rights.subjects import (
    CandidatePlan,
    TableSubjects,
    as_values,
    digest_subjects,
    match_mask,
    plan_candidates,
    refs_holding,
    refuse_equality_deletes,
    resolve_subjects,
    table_name,
    with_fanout,
)
from iceberg_privacy.storage import canonical
from iceberg_privacy.write import finish_staged, stage_sidecar

logger = logging.getLogger(__name__)




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
    return load_candidate(table.io, table.metadata, task, lambda data: match_mask(data, ts, secret),
                          [c.column.field_id for c in ts.columns], probe_first=ts.by_digest)


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

    batch.written = write_batches(table.io, table.metadata, kept(), columns, chunk_bytes=chunk_bytes,
                                  where=table_name(table))
    return batch if batch.originals else None


def engine_rewrite(spark: Any | None) -> Rewrite:
    """The rewrite of ``spark`` (imported only then: the core never imports Spark), else the local one."""
    if spark is None:
        return _rewrite
    from iceberg_privacy.spark.rights import erasure_rewrite

    return erasure_rewrite(spark)


@dataclass
class _Staged:
    """An erase commit built once (manifests, manifest list, sidecar) and committed as often as it must be:
    after a lost race it is rebased onto the new head by writing only a new manifest list."""

    snapshot: Snapshot
    base: int | None  # the head it was built on
    base_manifests: set[str]  # manifest paths of ``base``
    others: tuple[Any, ...]  # further updates of the same commit (the sidecar's statistics entry)
    written: list[str] = field(default_factory=list)  # manifest lists written for it (cleanup)
    # read once: a rebase that only re-numbers (the branch did not move, another branch's commit overtook the
    # sequence number) then writes one manifest list and reads nothing, so its window before the commit stays short
    own_manifests: list[Any] | None = None  # of ``snapshot`` as staged
    head_manifests: dict[int, list[Any]] = field(default_factory=dict)  # by head snapshot id


StagingHook = Callable[[int, str, dict[str, str]], None]
"""Called with (snapshot id, commit uuid, files it leaves behind) of an erase commit before any of its metadata files
is written. The files (location -> kind) are the data files it replaces, the manifests of the head it is built on
(their column bounds can hold a subject's id) and the table's manifest lists (partition summaries can too)."""


def _stage(table: Table, batches: list[_Batch], columns: list[BloomColumn], props: dict[str, str],
           branch: str, on_stage: StagingHook | None = None) -> _Staged:
    """Build one overwrite on ``branch`` (delete the rewritten files, add their replacements and a sidecar)
    with pyiceberg's producer, without committing it.

    Its manifests list the rewritten files as deleted entries, whose column bounds can hold a subject's
    id: ``on_stage`` records the snapshot id and commit uuid first (the journal does), so a purge after a
    crash between staging and commit finds those files by name and deletes them. It gets the replaced files'
    locations too: once the commit lands they are garbage holding the subjects' rows, and another process's snapshot
    expiry may remove every snapshot that names them before this request's purge reads the history.
    """
    base = _head(table, branch)
    parent = table.metadata.snapshot_by_id(base) if base is not None else None
    base_manifests = {m.manifest_path for m in parent.manifests(table.io)} if parent else set()
    tx: Transaction = compat.without_commit_retries(table).transaction()
    commit_uuid = uuid.uuid4()
    producer = tx.update_snapshot(snapshot_properties=dict(props), branch=branch).overwrite(commit_uuid=commit_uuid)
    if on_stage is not None:
        left = {s.manifest_list: "manifest-list" for s in table.metadata.snapshots}
        left.update(dict.fromkeys(sorted(base_manifests), "manifest"))
        left.update({f.file_path: "data" for b in batches for f in b.originals})
        on_stage(compat.producer_snapshot_id(producer), str(commit_uuid), left)
    checkpoint("erasure.staging")  # built on the head read just now; another process may move it from here on
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
    updates, _ = compat.staged(tx)
    snap = next(u.snapshot for u in updates if isinstance(u, AddSnapshotUpdate))
    others = tuple(u for u in updates if not isinstance(u, (AddSnapshotUpdate, SetSnapshotRefUpdate)))
    return _Staged(snap, base, base_manifests, others, [snap.manifest_list])


def _rebase(table: Table, st: _Staged, head: int) -> Snapshot:
    """The staged snapshot re-parented on ``head`` (only appends landed since its base): its own manifests,
    plus the manifests those appends added; one new manifest list, nothing else is written."""
    md = table.metadata
    new_head = md.snapshot_by_id(head)
    assert new_head is not None
    if st.own_manifests is None:
        st.own_manifests = st.snapshot.manifests(table.io)
    own = st.own_manifests
    if head not in st.head_manifests:
        st.head_manifests = {head: new_head.manifests(table.io)}
    head_manifests = st.head_manifests[head]
    on_head = {m.manifest_path for m in head_manifests}
    mine = []
    for m in own:
        if m.added_snapshot_id == st.snapshot.snapshot_id:  # written by this commit: sequence number re-assigned
            m = copy.copy(m)
            m.sequence_number = UNASSIGNED_SEQ
            m.min_sequence_number = UNASSIGNED_SEQ
        elif m.manifest_path not in on_head:
            # carried from the base but dropped since: only a manifest of DELETED entries can be (_rebase_allowed),
            # e.g. the previous erasure's, dropped by its purge's scrub. Its entries' bounds can hold that subject's
            # id, and once expired it is gone from storage: listing it again would name the subject, or break the table.
            continue
        mine.append(m)
    appended = [m for m in head_manifests if m.manifest_path not in st.base_manifests]
    seq = md.next_sequence_number()
    path = table.location_provider().new_metadata_location(
        f"snap-{st.snapshot.snapshot_id}-{len(st.written)}-{uuid.uuid4()}.avro")
    with write_manifest_list(format_version=md.format_version, output_file=table.io.new_output(path),
                             snapshot_id=st.snapshot.snapshot_id, parent_snapshot_id=head, sequence_number=seq,
                             avro_compression="deflate") as writer:
        writer.add_manifests(appended + mine)
    st.written.append(path)
    own_summary = st.snapshot.summary
    assert own_summary is not None  # pyiceberg's producer always writes one
    extra = {k: v for k, v in own_summary.additional_properties.items() if not k.startswith("total-")}
    summary = update_snapshot_summaries(Summary(operation=own_summary.operation, **extra),
                                        previous_summary=new_head.summary.additional_properties
                                        if new_head.summary else None)
    return Snapshot(  # type: ignore[call-arg]  # pydantic model populated by field name
        snapshot_id=st.snapshot.snapshot_id, parent_snapshot_id=head, sequence_number=seq,
                    timestamp_ms=max(int(time.time() * 1000), new_head.timestamp_ms), manifest_list=path,
                    summary=summary, schema_id=st.snapshot.schema_id, first_row_id=st.snapshot.first_row_id)


def _rebase_allowed(table: Table, st: _Staged, head: int | None) -> bool:
    """May the staged rewrite keep the manifests it was staged with on ``head``? Only when the commits since its
    base kept every base manifest that lists live files, and wrote only manifests of files they added. A
    manifest-merging append (Java's and Spark's default past 100 manifests) rewrites base manifests into one that
    lists their files as EXISTING, the files this rewrite replaces among them: keeping ours next to it would list
    them live again (the subject's rows back)."""
    new_head = table.metadata.snapshot_by_id(head) if head is not None else None
    base = table.metadata.snapshot_by_id(st.base) if st.base is not None else None
    if new_head is None or (st.base is not None and base is None):
        return False
    on_head = {m.manifest_path: m for m in new_head.manifests(table.io)}
    live_base = {m.manifest_path for m in (base.manifests(table.io) if base is not None else [])
                 if m.has_added_files() or m.has_existing_files()}
    if not live_base <= on_head.keys():
        return False
    return all(not m.has_existing_files() and not (m.deleted_files_count or 0)
               for path, m in on_head.items() if path not in st.base_manifests)


def _stale_sequence(table: Table, snapshot: Snapshot) -> bool:
    """Has the table's last sequence number reached ``snapshot``'s (format v2+), so it cannot be added?"""
    md = table.metadata
    last = getattr(md, "last_sequence_number", None)  # format v2+ only
    return last is not None and snapshot.sequence_number is not None and last >= snapshot.sequence_number


def _commit(table: Table, st: _Staged, snapshot: Snapshot, branch: str) -> int:
    """Commit ``snapshot`` as the new head of ``branch`` if the branch is still at its parent (compare-and-swap)."""
    updates = (AddSnapshotUpdate(snapshot=snapshot),
               SetSnapshotRefUpdate(  # type: ignore[call-arg]  # pydantic model populated by field name
                   snapshot_id=snapshot.snapshot_id, parent_snapshot_id=snapshot.parent_snapshot_id,
                   ref_name=branch, type=SnapshotRefType.BRANCH), *st.others)
    requirements = (AssertTableUUID(uuid=table.metadata.table_uuid),
                    AssertRefSnapshotId(  # type: ignore[call-arg]  # pydantic model populated by field name
                        snapshot_id=snapshot.parent_snapshot_id, ref=branch))
    table.catalog.commit_table(table, requirements, updates)
    return snapshot.snapshot_id


def _unstage(table: Table, st: _Staged) -> None:
    """Delete what a staged commit that never landed wrote (manifests, manifest lists, sidecar)."""
    paths = list(st.written) + [m.manifest_path for m in st.snapshot.manifests(table.io)
                                if m.added_snapshot_id == st.snapshot.snapshot_id]
    extra = st.snapshot.summary.additional_properties if st.snapshot.summary else {}
    if extra.get(SIDECAR_SUMMARY_PATH):
        paths.append(extra[SIDECAR_SUMMARY_PATH])
    for p in paths:
        try:
            table.io.delete(p)
        except Exception as exc:  # not raised: the commit's own error is the one to report
            logger.warning("could not delete %s, written by an erase commit that did not land (%s); "
                           "`iceberg-privacy cleanup TABLE --delete` or the request's purge removes it", p, exc)


def _discard(table: Table, batches: Sequence[_Batch]) -> None:
    for b in batches:
        for f in b.written.files:
            try:
                table.io.delete(f.file_path)
            except Exception as exc:  # not raised: the commit's own error is the one to report
                logger.warning("could not delete %s, a rewrite of an erase commit that did not land (%s); "
                               "`iceberg-privacy cleanup TABLE --delete` removes it", f.file_path, exc)


def _head(table: Table, branch: str) -> int | None:
    ref = table.metadata.refs.get(branch)
    return ref.snapshot_id if ref is not None else None


def _live_paths(table: Table, snapshot_id: int | None) -> set[str]:
    snap = table.metadata.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snap is None:
        return set()
    return {e.data_file.file_path for m in snap.manifests(table.io)
            for e in m.fetch_manifest_entry(table.io, discard_deleted=True)}


def _still_live(table: Table, branch: str, base: int | None, originals: set[str]) -> bool:
    """Are all ``originals`` (live at ``base``) still live at the branch head?

    Cheap when only appends landed since ``base`` (they cannot remove a file): the snapshot chain is
    walked, no manifest is read. Otherwise the head's manifests are read.
    """
    md = table.metadata
    sid = _head(table, branch)
    while sid is not None and sid != base:
        snap = md.snapshot_by_id(sid)
        if snap is None or snap.summary is None or snap.summary.operation != Operation.APPEND:
            return originals <= _live_paths(table, _head(table, branch))
        sid = snap.parent_snapshot_id
    if sid != base:  # history rewritten (rollback, set-current-snapshot): look at the head itself
        return originals <= _live_paths(table, _head(table, branch))
    return True


def _only_appends_since(table: Table, branch: str, base: int | None) -> bool:
    """Did only appends land on the branch since ``base`` (the walk from its head reaches ``base`` through APPEND
    snapshots)? Only then may a staged rewrite be re-parented by :func:`_rebase`, which keeps the manifests it was
    staged with (the base's) and adds the ones the appends wrote: after any other commit (another erasure's
    rewrite, a delete, a compaction) those manifests list files that commit removed, and re-parenting resurrected
    them (rows of another request's subject back, other rows twice)."""
    md = table.metadata
    sid = _head(table, branch)
    while sid is not None and sid != base:
        snap = md.snapshot_by_id(sid)
        if snap is None or snap.summary is None or snap.summary.operation != Operation.APPEND:
            return False
        sid = snap.parent_snapshot_id
    return sid == base


def _commit_rebasing(table: Table, pending: list[_Batch], columns: list[BloomColumn], props: dict[str, str], *,
                     branch: str, base: int | None, rep: TableErasure, policy: retry.RetryPolicy,
                     on_stage: StagingHook | None = None) -> int | None:
    """Commit ``pending``; on a conflict, re-commit the same rewrite on the new head as long as every
    file it replaces is still live there (no data is read or written again, only a new manifest list).

    Returns the committed snapshot id, or None when a replaced file was removed or changed by someone
    else (the caller re-plans). Raises :class:`CommitConflictError` when every try lost.
    """
    originals = {f.file_path for b in pending for f in b.originals}
    last: BaseException | None = None
    try:
        # Staging reads the manifests of the head the rewrite was planned on; another pass's purge may have
        # expired that snapshot and deleted them meanwhile (the head moved): a lost race, so re-plan.
        with retry.vanished_is_conflict(table):
            st = _stage(table, pending, columns, props, branch, on_stage)
    except CommitFailedException as exc:
        logger.info("the history the erasure of %s was planned on vanished (%s); re-planning", rep.table, exc)
        return None
    if st.base != base:  # the head moved while the rewrite was written
        base = st.base
        if not _still_live(table, branch, base, originals):
            _unstage(table, st)
            return None
    snapshot = st.snapshot
    sid = snapshot.snapshot_id
    for attempt in retry.attempts(policy):
        if attempt > 1:  # after the policy's pause: look at the head now, not before the pause
            table.refresh()
            if table.metadata.snapshot_by_id(sid) is not None:
                return sid  # it landed after all: its files are live, never discard them
            try:
                with retry.vanished_is_conflict(table):  # the head read here was expired and purged meanwhile
                    if not _still_live(table, branch, st.base, originals):
                        logger.info("a file the erasure of %s replaces was changed meanwhile; re-planning", rep.table)
                        _unstage(table, st)
                        return None
                    head = _head(table, branch)
                    if head != snapshot.parent_snapshot_id and not (_only_appends_since(table, branch, st.base)
                                                                     and _rebase_allowed(table, st, head)):
                        # another rewrite landed (our files still live): stage the same batches again on the new
                        # head, whose manifests pyiceberg's producer reads (no data is read or written again)
                        logger.info("a commit other than an append landed on %s; staging the erasure again", rep.table)
                        _unstage(table, st)
                        return None
                    # Re-parent when the branch moved; re-number when only another branch's commits advanced
                    # the table's sequence number (a snapshot must be newer than every snapshot of the table).
                    if head is not None and (head != snapshot.parent_snapshot_id or _stale_sequence(table, snapshot)):
                        snapshot = _rebase(table, st, head)
                        rep.rebased += 1
                        logger.debug("erase commit on %s lost (%s); rebased onto %s (try %d)", rep.table, last, head,
                                     attempt)
            except CommitFailedException as exc:
                logger.info("the history the erasure of %s was rebased on vanished (%s); re-planning", rep.table, exc)
                _unstage(table, st)
                return None
        checkpoint("erasure.before_commit")
        rep.commit_attempts += 1
        try:
            return _commit(table, st, snapshot, branch)
        except Exception as exc:
            if not (retry.is_conflict(exc) or isinstance(exc, ValidationException)):
                if table.refresh().metadata.snapshot_by_id(sid) is not None:
                    return sid
                raise
            last = exc
    if table.refresh().metadata.snapshot_by_id(sid) is not None:
        return sid
    _unstage(table, st)
    _discard(table, pending)
    raise CommitConflictError(
        f"erasing from {rep.table}{'' if branch == MAIN_BRANCH else f' (branch {branch})'} lost to concurrent "
        f"commits {policy.attempts} times in a row (retries exhausted); nothing of it was committed. Run the "
        "request again (it resumes), or slow or pause the writers, or raise commit_retries."
    ) from last

def erase_table(ts: TableSubjects, request_id: str, secret: bytes, *, subjects: int, commit_retries: int | None = None,
                workers: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                branch: str = MAIN_BRANCH, on_stage: StagingHook | None = None,
                rewrite: Rewrite | None = None) -> TableErasure:
    """Remove the subjects' rows from one branch of a table; commits until no file at its head holds a subject.

    ``rewrite`` reads and rewrites the candidate files (default: in this process, see :class:`Rewrite`);
    planning and the commit (forget list, lineage, sidecar, rebase and retries) stay here either way.

    A lost commit is rebased (:func:`_commit_rebasing`); a commit that landed on a newer snapshot than
    the one it was planned on is followed by another pass over the files that arrived meanwhile (a
    writer outside the library may have added rows of the subjects; known-clean files are not read again).
    """
    table = ts.table
    rep = TableErasure(table_name(table))
    checked: set[str] = set()  # files read and found clean (data files are immutable)
    pending: list[_Batch] = []  # written, not committed yet
    workers = workers or min(4, os.cpu_count() or 1)
    columns = bloom_columns(table.schema(), table.properties)
    policy = retry.DEFAULT_POLICY.with_retries(commit_retries)
    passes = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ip-erase") as pool:
        while True:
            passes += 1
            table.refresh()
            head = _head(table, branch)
            plan = plan_candidates(ts, head) if head is not None else CandidatePlan(None, [])
            rep.files_total = max(rep.files_total, plan.files_total)  # a later pass plans on our own, smaller commit
            live = {t.file.file_path for t in plan.tasks}
            # A batch whose originals someone else removed meanwhile is redone from the files now live.
            # So is one written under another partition spec than the table's now (evolved meanwhile): staged on
            # this head, its files would be listed under the new spec with the old spec's partition values, and a
            # query on the partition column would prune the rows left in them away.
            spec = table.metadata.default_spec_id
            stale = [b for b in pending if any(f.file_path not in live for f in b.originals)
                     or (b.written.files and b.written.spec_id is not None and b.written.spec_id != spec)]
            _discard(table, stale)
            pending = [b for b in pending if b not in stale]
            done = {f.file_path for b in pending for f in b.originals}
            todo = [t for t in plan.tasks if t.file.file_path not in checked and t.file.file_path not in done]
            rep.files_read += len(todo)
            fresh = (rewrite or _rewrite)(table, todo, ts, secret, columns, chunk_bytes=chunk_bytes, pool=pool, window=workers,
                             checked=checked) if todo else None
            if fresh is not None:
                pending.append(fresh)
            if not pending:
                return rep
            if passes > policy.attempts:
                _discard(table, pending)
                raise CommitConflictError(
                    f"erasing from {rep.table}: rows of the subjects kept arriving or the files it rewrites kept "
                    f"changing over {passes - 1} passes (retries exhausted); stop the writers that add them (or put "
                    "them on the library's write path, which honours the forget list), then run the request again"
                )
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
            sid = _commit_rebasing(table, pending, columns, props, branch=branch, base=plan.snapshot_id, rep=rep,
                                   policy=policy, on_stage=on_stage)
            if sid is None:
                continue  # a replaced file changed: re-plan (its batch is discarded above)
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


def _refuse_equality_deletes(req: RequestState, tables: list[Table]) -> None:
    """Refused at submit, but a table can gain equality delete files while its request waits (queued, or blocked):
    pyiceberg cannot apply them, so the request stops before anything is read or committed, journaled as blocked
    (by the caller's ``blocking``) with the compaction that drops them, not a bare ValueError half-way."""
    try:
        refuse_equality_deletes([t for t in tables if (st := req.tables.get(table_name(t))) is None
                                 or st.status != "verified"])
    except ConfigurationError as exc:
        raise RequestBlockedError(str(exc).replace("; nothing was recorded or changed", "; nothing was changed")
                                  ) from exc


def _table_subjects(catalog: Catalog, req: RequestState, subjects: Any | None, secret: bytes) -> list[TableSubjects]:
    tables: list[Table] = []
    # pooled, and a 'no such table' for a table the catalog still lists is a CatalogError (load_many), as below
    for name, loaded in zip(req.tables, load_many(catalog, [tuple(n.split(".")) for n in req.tables]), strict=True):
        if isinstance(loaded, NoSuchTableError):
            logger.warning("table %s of request %s no longer exists; nothing to do there", name, req.request_id)
        elif isinstance(loaded, Exception):
            raise loaded
        else:
            tables.append(loaded)
    _refuse_equality_deletes(req, tables)  # before anything reads them (linked identifiers, planning)
    if subjects is None:
        return digest_subjects(tables, set(req.subjects))
    subjects = as_values(subjects)
    recorded = req.detail.get("linked") or {}
    if recorded.get("digests"):  # the subject's other identifiers (rights/linked.py): read them again
        linked = relink(tables, subjects, secret, recorded)
        if not linked.complete:  # their source rows are gone: the journal's keyed hashes still know them
            logger.info("request %s: %d linked identifier(s) can no longer be read; matching by keyed hash",
                        req.request_id, sum(li.value is None for li in linked.identifiers))
            return digest_subjects(tables, set(req.subjects))
        subjects = subjects + linked.values
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
        resolved = with_fanout(resolved, subjects, secret, plan_fanout(catalog, roots, subjects))
    return resolved


def _tag_refusal(request_id: str, tags: list[RefHold]) -> RefHoldsSubjectError:
    steps = "; ".join(h.advice for h in tags)
    return RefHoldsSubjectError(
        f"request {request_id}: {len(tags)} tag(s) point at snapshots that still hold rows of the subjects "
        f"({', '.join(f'{h.table}@{h.name}' for h in tags)}), so the purge could not remove them; nothing was "
        f"erased. Drop or move them first: {steps}; then run the request again "
        f"(`iceberg-privacy requests run {request_id}`), or erase without purge and purge later",
        next_step=f"{steps}; then `iceberg-privacy requests run {request_id}`",
    )


def process_erasure(catalog: Catalog, req: RequestState, subjects: Any | None, secret: bytes, *,
                    journal: Journal, commit_retries: int | None = None, workers: int | None = None,
                    resolved_subjects: list[TableSubjects] | None = None, refuse_tags: bool = False,
                    spark: Any | None = None) -> ErasureReport:
    """Erase every table of a journaled request that is not erased yet (the resumable core).

    Before anything is committed, every branch and tag of every table is checked for rows of the
    subjects (their snapshot is planned and read like the head). Branches are live data: each one that
    holds a subject is erased too (one commit per branch). Tags are immutable history: they are reported
    (``TableErasure.tags``, with the command that drops them), and with ``refuse_tags`` (a purge follows)
    the request is refused up front, before any commit, with that advice.

    ``resolved_subjects`` (from :func:`submit_request`, same subjects) saves resolving them again.
    With ``spark`` (a SparkSession) executors read and rewrite the candidate files; the driver plans and commits.
    """
    rewrite = engine_rewrite(spark)
    t0 = time.perf_counter()
    report = ErasureReport(req.request_id, req.subject_count, {})
    if resolved_subjects is None or subjects is None:
        resolved_subjects = _table_subjects(catalog, req, subjects, secret)
    else:
        _refuse_equality_deletes(req, [ts.table for ts in resolved_subjects])
    resolved = {ts.name: ts for ts in resolved_subjects}
    holds: dict[str, list[RefHold]] = {}
    for name, state in req.tables.items():
        if state.status != "verified" and (ts := resolved.get(name)) is not None:
            holds[name] = refs_holding(ts, secret)
    tags = [h for hs in holds.values() for h in hs if h.kind == "tag"]
    if tags and refuse_tags:
        raise _tag_refusal(req.request_id, tags)
    for name, state in req.tables.items():
        # Erased-but-unverified tables are planned again: rows of a subject committed by a writer that
        # raced the forget list are caught here (nothing matches otherwise, and nothing is rewritten).
        if state.status == "verified":
            report.tables[name] = TableErasure(name, rows_removed=state.rows, files_rewritten=state.files,
                                               snapshot_ids=[state.snapshot_id] if state.snapshot_id else [],
                                               skipped=f"already {state.status}")
            continue
        ts = resolved.get(name)
        if ts is None:  # dropped table: its rows are gone with it (a renamed one blocks the request instead)
            report.tables[name] = _dropped(catalog, journal, req, name)
            continue
        try:
            report.tables[name] = _erase_one(catalog, journal, req, ts, secret, holds.get(name, []),
                                             commit_retries=commit_retries, workers=workers, rewrite=rewrite)
        except NoSuchTableError:
            # confirmed by the catalog's listing (load_many): a table it still lists is a CatalogError, one that
            # loads again means another table (the forget list's?) is what is missing
            again = load_many(catalog, [tuple(name.split("."))])[0]
            if isinstance(again, Exception) and not isinstance(again, NoSuchTableError):
                raise again from None
            if not isinstance(again, Exception):
                raise
            # dropped while its request ran (after submit): as a table dropped before it
            logger.warning("table %s of request %s was dropped during the erasure", name, req.request_id)
            report.tables[name] = _dropped(catalog, journal, req, name)
    report.seconds = time.perf_counter() - t0
    return report


def _dropped(catalog: Catalog, journal: Journal, req: RequestState, name: str) -> TableErasure:
    """A table of the request that no longer exists: its rows are gone with it (its files, which a catalog's drop
    may leave, are checked by the purge); a renamed one blocks the request instead (check_not_renamed)."""
    check_not_renamed(catalog, req, name)
    journal.record(req.request_id, TABLE_ERASED, table=name, rows=0, files=0,
                   detail={"note": "table no longer exists"})
    return TableErasure(name, skipped="table no longer exists")


def _erase_one(catalog: Catalog, journal: Journal, req: RequestState, ts: TableSubjects, secret: bytes,
               holds: list[RefHold], *, commit_retries: int | None, workers: int | None, rewrite: Any
               ) -> TableErasure:
    """Erase one table of a request: forget list, every branch holding a subject, then the head; journaled."""
    name = ts.name
    forget_listed = _forget(catalog, ts, req.request_id, secret)
    checkpoint("erasure.after_forget")

    def staging(snapshot_id: int, commit_uuid: str, left: dict[str, str], name: str = name) -> None:
        # What the commit leaves behind is journaled for the purge with it (keyed hashes of the paths, which can
        # hold an id): another process's snapshot expiry (a scheduled expire_snapshots, a second purge) may expire
        # the erase commit's parent before this request's purge runs, and then no snapshot names those files.
        # Unplanned, they were orphans younger than the orphan age, and the purge failed its verification until
        # someone deleted them by hand. Files that stay live (a commit that never lands, manifests the new head
        # keeps) are never deleted: the purge deletes a planned file only when no retained snapshot references it.
        # ``replaces``: the files the commit deletes (keyed hashes). It can land only while they are all live, so
        # a purge keeps its staged files until then: another run of this request may be about to commit them.
        replaces = sorted(location_digest(secret, canonical(p)) for p, kind in left.items() if kind == "data")
        events = [journal.event(req.request_id, ERASURE_STAGED, table=name, snapshot_id=snapshot_id,
                                detail={"commit_uuid": commit_uuid, "replaces": replaces})]
        if left:
            events.append(journal.event(req.request_id, PURGE_PLANNED, table=name, detail={"file_digests": {
                location_digest(secret, canonical(p)): kind for p, kind in left.items()}}))
        journal.append(events)

    branches: dict[str, list[int]] = {}
    for hold in holds:
        if hold.kind == "branch":
            branches[hold.name] = erase_table(ts, req.request_id, secret, subjects=req.subject_count,
                                              commit_retries=commit_retries, workers=workers,
                                              branch=hold.name, on_stage=staging, rewrite=rewrite).snapshot_ids
    rep = erase_table(ts, req.request_id, secret, subjects=req.subject_count,
                      commit_retries=commit_retries, workers=workers, on_stage=staging, rewrite=rewrite)
    rep.branches = branches
    rep.tags = [h for h in holds if h.kind == "tag"]
    for h in rep.tags:
        logger.warning("request %s: %s", req.request_id, h)
    # Totals over every commit of this request, including those of a run that crashed before its event. Another
    # process's snapshot expiry may already have removed this run's own commits from the history: what this run
    # counted as it committed is then the better lower bound (never report fewer rows than were removed).
    done = erasure_snapshots(ts.table, req.request_id)
    rep.rows_removed = max(rep.rows_removed, sum(r for _, r, _ in done))
    rep.files_rewritten = max(rep.files_rewritten, sum(f for _, _, f in done))
    rep.snapshot_ids = [s for s, _, _ in done] + [s for s in rep.snapshot_ids if s not in {d[0] for d in done}]
    head = ts.table.metadata.current_snapshot_id
    journal.record(req.request_id, TABLE_ERASED, table=name,
                   snapshot_id=rep.snapshot_ids[-1] if rep.snapshot_ids else head,
                   rows=rep.rows_removed, files=rep.files_rewritten,
                   detail={"files_read": rep.files_read, "files_total": rep.files_total,
                           "commits": len(rep.snapshot_ids), "forget_listed": forget_listed,
                           "rebased": rep.rebased, "branches": sorted(branches),
                           "tags": [h.name for h in rep.tags]})
    checkpoint("erasure.after_table")
    return rep
