"""History upkeep of the library's own append-mostly tables: the request journal, the request queue, the DP ledger.

Why one module: each of these tables takes one commit per event (a submit, a claim, a reservation), so left
alone it grows by one snapshot, one manifest list, one manifest and one small data file per commit; pyiceberg
copies every snapshot of the metadata at each commit and a scan opens every file, so both get slower with
history. The bound is the same for all of them: merge the head's small files in one commit, expire every
snapshot but the head (and ref heads), delete what only the expired snapshots reached, delete old orphans. What
differs per table is a :class:`HistoryPolicy` (the sort key of the merged file, how many snapshots trigger an
automatic upkeep when ``privacy.history.maintain-every`` is not set, which files count as small, the error
class of the pillar). Two copies of this had drifted apart: the ledger's left the replaced files on storage
because its readers did not survive a file vanishing under them. Now every reader of these tables goes through
:func:`read`, and every writer through :func:`commit` (or :func:`lost_to_upkeep`), so a race with an upkeep
is a lost race retried from the new head through the one retry helper, never an error, and the upkeep deletes
at once.

What the upkeep never touches: rows (every event is carried over) and table properties other than Iceberg's
metadata-log bound (:data:`METADATA_PROPERTIES`); the DP ledger keeps its spend, open reservations and memo in
its properties, written by its own compare-and-swap commits, and the merge commit asserts the head it read, so
it never lands over an event it did not carry.

Layering: this sits with the commit path (the merged file is written by :func:`iceberg_privacy.datafiles.write_data_files`,
expiry and the orphan sweep are :mod:`iceberg_privacy.index.maintenance`'s); the pillars rights/ and dp/ import
it and it imports no pillar.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import Table

from iceberg_privacy._internal import retry
from iceberg_privacy._internal.arguments import check_ages
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.errors import CommitConflictError, IcebergPrivacyError
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY, HISTORY_MAINTENANCE_SUMMARY

if TYPE_CHECKING:
    from iceberg_privacy.index.orphans import OrphanReport

logger = logging.getLogger(__name__)

COMPACT_BELOW_BYTES = 8 * 1024 * 1024
"""Data files smaller than this are merged by the upkeep; bigger ones are left alone (so each upkeep rewrites
only what arrived since the last, until the merged file itself grows past it)."""
ORPHAN_AGE = timedelta(hours=1)
"""Unreferenced files under the table location older than this are deleted by the upkeep: what a killed writer
or upkeep wrote but never committed (for the queue: ciphertext). Younger ones may be an in-flight commit of
another process and are left for the next upkeep."""
METADATA_PROPERTIES = {"write.metadata.delete-after-commit.enabled": "true",
                       "write.metadata.previous-versions-max": "16",
                       "write.parquet.row-group-limit": "16384"}
"""Iceberg's own properties, set by the upkeep on every table it maintains: the bound on old ``metadata.json``
files, and row groups of 16,384 rows in the merged file, which is sorted by the policy's key, so that a read of
one request's events (``EqualTo``/``In`` on ``request_id``) decodes the row groups whose min/max hold it instead
of the whole file (measured on a journal of 200,000 requests, ~400,000 events in one merged file, load 13: one
``Journal.find`` 291 ms with one row group, 27 ms with these)."""

AUTO_RETRIES = 3
"""Retries of each step of an automatic upkeep (``quiet``: the trigger after a commit, the end of a queue pass)
before it gives up until the next trigger: it runs on a writer's path, which must not wait out a long race."""

Load = Callable[[], Table | None]
Exhausted = Callable[[int, BaseException], Exception]


@dataclass(frozen=True)
class HistoryPolicy:
    """What differs between the tables the upkeep maintains."""

    what: str  # "the request journal": named in messages
    sort_by: str  # column the merged file is sorted by (readers filtering on it prune by column bounds)
    every_default: int  # snapshots that trigger the automatic upkeep when the table sets no maintain-every
    error: type[IcebergPrivacyError] = CommitConflictError  # raised when reads keep losing to upkeeps
    compact_below_bytes: int = COMPACT_BELOW_BYTES


@dataclass
class HistoryReport:
    """What one upkeep of the journal, the queue or a DP ledger did (see :func:`maintain_history`)."""

    table: str
    compacted_files: int = 0  # small data files merged
    written_files: int = 0  # files they were merged into
    rows: int = 0  # rows carried over (all of them: nothing is dropped)
    expired_snapshots: int = 0
    deleted_files: int = 0  # data files, manifests and manifest lists only the expired snapshots reached
    orphans_deleted: int = 0  # unreferenced files older than the orphan age (killed writers)
    delete_failures: dict[str, str] = field(default_factory=dict)  # location -> why it is still there
    snapshots_before: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        out = (f"{self.table}: merged {self.compacted_files} small file(s) into {self.written_files} ({self.rows} rows), "
               f"expired {self.expired_snapshots} of {self.snapshots_before} snapshot(s), deleted {self.deleted_files} "
               f"file(s) + {self.orphans_deleted} orphan(s) ({self.seconds:.2f}s)")
        if self.delete_failures:
            out += (f"; {len(self.delete_failures)} file(s) could NOT be deleted (the next upkeep retries them as "
                    f"orphans): " + "; ".join(list(self.delete_failures.values())[:3]))
        return out


# ------------------------------------------------------------------------------------ readers and writers
@contextmanager
def lost_to_upkeep(table: Table) -> Iterator[None]:
    """Around a commit to one of these tables: a concurrent upkeep that merged or expired what the commit was
    built on is a lost race (retried from a fresh load), not an error. That is a manifest that vanished
    (:func:`retry.vanished_is_conflict`) or pyiceberg's rebase refusing a base snapshot that was expired
    (``ValidationException``: the commit did not land)."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    with retry.vanished_is_conflict(table):
        try:
            yield
        except ValidationException as exc:
            raise CommitFailedException(f"the commit was built on history a concurrent upkeep removed: {exc}") from exc


def read[T](load: Load, read_head: Callable[[Table], T], policy: HistoryPolicy, *, empty: T,
            first: Table | None = None) -> T:
    """``read_head(table)`` on a fresh load (``empty`` when the table or its head does not exist), read again from
    the new head when a file vanished because an upkeep (or a shred) expired and deleted it meanwhile.
    ``first``: a version the caller already loaded, used for the first try."""
    given = [first] if first is not None else []

    def step() -> T:
        table = given.pop() if given else load()
        if table is None or table.current_snapshot() is None:
            return empty
        with retry.vanished_is_conflict(table):
            return read_head(table)

    return retry.run(step, exhausted=lambda n, last: policy.error(
        f"reading {policy.what} lost to its concurrent upkeep {n} times ({last}); run the command again"))


CACHE_MAX_ROWS = 100_000
"""A table whose head holds more rows than this is never cached by :func:`head_rows` (its readers scan with a
filter, pruned by the sorted merged file's row groups, instead of holding the whole table in memory)."""
CACHE_MAX_STEPS = 64
"""At most this many snapshots are caught up incrementally; a cache further behind is rebuilt by a full scan."""


@dataclass(frozen=True)
class _Cached:
    snapshot_id: int
    schema_id: int
    rows: pa.Table


_HEADS: dict[str, _Cached] = {}  # table uuid -> the rows of the newest head read in this process
_HEADS_LOCK = threading.Lock()


def head_rows(table: Table) -> pa.Table | None:
    """Every row of ``table``'s current snapshot, from a per-process cache kept by snapshot: a queue pass reads
    the request journal a dozen times, each time one commit (one small appended file) after the last, and a full
    scan decodes every manifest and opens every data file each time. Here a head already read is answered from
    memory, and a head reached from it by appends only (snapshot operation ``append``: data files added, nothing
    removed, per the Iceberg spec) reads just the files those snapshots added. Anything else (a merge, a delete,
    a schema change, an expired or unknown path, more than :data:`CACHE_MAX_STEPS` appends) is a full scan.
    Snapshot ids are never reused within a table and the key is the table's uuid, so another process's commits
    are seen as soon as the caller's load sees them; a cache entry is never newer than what the caller loaded.
    Returns None (the caller scans with its filter) for a table larger than :data:`CACHE_MAX_ROWS` rows; a head
    the cache cannot vouch for (a full scan's row count disagreeing with the snapshot summary's total) is
    returned from that scan and not cached (scanning it again would give the same rows)."""
    snap = table.current_snapshot()
    if snap is None:
        return None
    summary = snap.summary.additional_properties if snap.summary is not None else {}
    try:
        total = int(summary.get("total-records", "-1"))
    except ValueError:
        return None
    if total < 0 or total > CACHE_MAX_ROWS or summary.get("total-delete-files", "0") != "0":
        return None
    key, schema_id = str(table.metadata.table_uuid), table.metadata.current_schema_id
    with _HEADS_LOCK:
        hit = _HEADS.get(key)
    if hit is not None and hit.snapshot_id == snap.snapshot_id and hit.schema_id == schema_id:
        return hit.rows
    rows = None
    if hit is not None and hit.schema_id == schema_id:
        steps = _appends_since(table, snap.snapshot_id, hit.snapshot_id)
        if steps is not None:
            added = added_rows(table, steps)
            if added is not None and added.schema.equals(hit.rows.schema):
                rows = pa.concat_tables([hit.rows, added])
                if rows.num_rows != total:  # a summary we do not understand: the full scan below decides
                    rows = None
    if rows is None:
        rows = table.scan().to_arrow()
        if rows.num_rows != total:  # another engine's deletes: right for this read, not vouched for to cache
            return rows
    with _HEADS_LOCK:
        _HEADS[key] = _Cached(snap.snapshot_id, schema_id, rows)
    return rows


def all_rows(table: Table) -> pa.Table:
    """Every row of the head: :func:`head_rows` when it can answer, else a scan."""
    rows = head_rows(table)
    return rows if rows is not None else table.scan().to_arrow()


def _appends_since(table: Table, head: int, since: int) -> list[int] | None:
    """Snapshot ids from just after ``since`` up to ``head`` (oldest first) when every one of them is an append;
    None otherwise."""
    from pyiceberg.table.snapshots import Operation

    path: list[int] = []
    sid: int | None = head
    while sid != since:
        if sid is None or len(path) >= CACHE_MAX_STEPS:
            return None
        snap = table.metadata.snapshot_by_id(sid)
        if snap is None or snap.summary is None or snap.summary.operation != Operation.APPEND:
            return None
        path.append(sid)
        sid = snap.parent_snapshot_id
    return path[::-1]


def added_rows(table: Table, snapshot_ids: list[int]) -> pa.Table | None:
    """The rows of the data files the given append snapshots added, projected to the current schema (None: an
    append that added a delete manifest, which the spec does not allow: read in full instead). Also the forget
    list's incremental read (:mod:`iceberg_privacy.rights.forget_store`)."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.manifest import ManifestContent, ManifestEntryStatus
    from pyiceberg.table import FileScanTask

    wanted = set(snapshot_ids)
    tasks: list[FileScanTask] = []
    for sid in snapshot_ids:
        snap = table.metadata.snapshot_by_id(sid)
        assert snap is not None  # the caller found it in the metadata
        for m in snap.manifests(table.io):
            if m.added_snapshot_id != sid:
                continue
            if m.content != ManifestContent.DATA:
                return None
            tasks += [FileScanTask(e.data_file) for e in m.fetch_manifest_entry(table.io, discard_deleted=True)
                      if e.status == ManifestEntryStatus.ADDED and e.snapshot_id in wanted]
    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue(), case_sensitive=True).to_table(tasks)


def commit[T](load: Callable[[], Table], change: Callable[[Table], T], policy: HistoryPolicy, *,
              exhausted: Exhausted, upkeep: Callable[[], object]) -> T:
    """``change(table)`` (which commits) on a fresh load, retried through the one retry helper when it lost to
    another writer or to an upkeep (:func:`lost_to_upkeep`); then, when the table is due
    (:func:`due_for_upkeep`), ``upkeep()``: the automatic trigger, after the commit has landed."""

    def step() -> tuple[T, Table]:
        table = load()
        with lost_to_upkeep(table):
            return change(table), table

    result, table = retry.run(step, exhausted=exhausted)
    if due_for_upkeep(table, policy):
        upkeep()
    return result


def append(create: Load, data: pa.Table, policy: HistoryPolicy, *, exhausted: Exhausted,
           upkeep: Callable[[], object]) -> None:
    """Append ``data`` to the table ``create()`` loads (creating it), through :func:`commit`."""

    def load() -> Table:
        table = create()
        if table is None:
            raise policy.error(f"{policy.what} could not be created; check the catalog's permissions")
        return table

    commit(load, lambda table: table.append(data), policy, exhausted=exhausted, upkeep=upkeep)


# ------------------------------------------------------------------------------------ when
def maintain_every(table: Table, policy: HistoryPolicy) -> int:
    """The table's automatic upkeep threshold (:data:`HISTORY_MAINTAIN_EVERY_PROPERTY`, else the policy's
    default), 0 = off."""
    raw = table.properties.get(HISTORY_MAINTAIN_EVERY_PROPERTY)
    try:
        return max(0, int(raw)) if raw is not None else policy.every_default
    except ValueError:
        logger.warning("%s=%r on %s is not a whole number; using %d", HISTORY_MAINTAIN_EVERY_PROPERTY, raw,
                       ".".join(table.name()), policy.every_default)
        return policy.every_default


def due_for_upkeep(table: Table, policy: HistoryPolicy) -> bool:
    every = maintain_every(table, policy)
    return every > 0 and len(table.metadata.snapshots) >= every


# ------------------------------------------------------------------------------------ the upkeep
def maintain(load: Load, policy: HistoryPolicy, *, orphan_age: timedelta = ORPHAN_AGE,
             quiet: bool = False, only_if_due: bool = False) -> HistoryReport | None:
    """:func:`maintain_history`; ``quiet``: log a failure instead of raising it (the automatic trigger after a
    commit that already landed: its upkeep failing must not turn it into an error; the next one retries), with
    :data:`AUTO_RETRIES` retries per step; ``only_if_due``: see :func:`maintain_history`."""
    check_ages("maintain", orphan_age=orphan_age)  # before the merge and the expiry, not at the orphan sweep
    steps = retry.DEFAULT_POLICY.with_retries(AUTO_RETRIES) if quiet else retry.DEFAULT_POLICY
    try:
        return maintain_history(load, policy, orphan_age=orphan_age, steps=steps, only_if_due=only_if_due)
    except Exception:
        if not quiet:
            raise
        logger.warning("upkeep of %s failed; the next one retries", policy.what, exc_info=True)
        return None


def maintain_history(load: Load, policy: HistoryPolicy, *, orphan_age: timedelta = ORPHAN_AGE,
                     steps: retry.RetryPolicy = retry.DEFAULT_POLICY, only_if_due: bool = False) -> HistoryReport | None:
    """Bound the history of one of the library's append-mostly tables.

    Every row stays; only the table's own history goes: (1) the small data files of the head are merged into
    one (sorted by ``policy.sort_by``) in one overwrite commit, (2) every snapshot but the head (and ref heads)
    is expired, (3) the files only expired snapshots reached are deleted, (4) unreferenced files older than
    ``orphan_age`` are deleted. Each commit is retried through the one retry helper (policy ``steps``); a
    crash between any two steps leaves the table at the old or the new snapshot with the same rows and
    properties, and the next upkeep finishes the job. Returns None when the table does not exist.

    ``only_if_due`` (the automatic trigger after a commit): stop, with what was done so far, as soon as a fresh
    load of the table is no longer due (:func:`due_for_upkeep`), checked at the start and, when this upkeep
    expired nothing, before the orphan sweep (a listing of the whole table location): when several writers
    cross the threshold together, the first upkeep's expiry makes the others' work redundant, and each used
    to redo all of it.
    """
    t0 = time.perf_counter()
    table = load()
    if table is None:
        return None
    rep = HistoryReport(".".join(table.name()), snapshots_before=len(table.metadata.snapshots))
    if only_if_due and not due_for_upkeep(table, policy):
        rep.seconds = time.perf_counter() - t0
        return rep
    _metadata_properties(load, rep.table, steps)
    rep.compacted_files, rep.written_files, rep.rows = retry.run(
        lambda: _compact_once(load, policy), policy=steps, exhausted=lambda n, last: CommitConflictError(
            f"merging the small files of {rep.table} lost to concurrent commits {n} times ({last}); nothing was "
            "lost (the merge is one commit): it runs again at the next upkeep"))
    checkpoint("history.after_compact")
    rep.expired_snapshots, rep.deleted_files, failed = expire_history(load, what=rep.table, steps=steps)
    rep.delete_failures.update(failed)
    checkpoint("history.after_expire")
    if only_if_due and rep.expired_snapshots == 0 and (fresh := load()) is not None and not due_for_upkeep(fresh, policy):
        rep.seconds = time.perf_counter() - t0  # another upkeep expired the history (and sweeps after it)
        return rep
    orphans = retry.run(
        lambda: _sweep_orphans(load, orphan_age), policy=steps, exhausted=lambda n, last: CommitConflictError(
            f"listing the orphans of {rep.table} lost to concurrent upkeeps {n} times ({last}); the next upkeep "
            "does it"))
    if orphans is not None:
        rep.orphans_deleted = len(orphans.deleted)
        rep.delete_failures.update(orphans.delete_failures)
    rep.seconds = time.perf_counter() - t0
    if rep.delete_failures:
        logger.warning("%s", rep)
    return rep


def _metadata_properties(load: Load, what: str, steps: retry.RetryPolicy) -> None:
    def step() -> None:
        t = load()
        if t is not None and any(t.properties.get(k) != v for k, v in METADATA_PROPERTIES.items()):
            t.transaction().set_properties(METADATA_PROPERTIES).commit_transaction()

    retry.run(step, policy=steps, exhausted=lambda n, last: CommitConflictError(
        f"setting the metadata-log bound of {what} lost to concurrent commits {n} times; it is set at the next upkeep"))


def _sweep_orphans(load: Load, orphan_age: timedelta) -> OrphanReport | None:
    from iceberg_privacy.index.orphans import cleanup_orphans

    fresh = load()
    if fresh is None:
        return None
    with retry.vanished_is_conflict(fresh):  # another upkeep expired and deleted manifests we were listing
        return cleanup_orphans(fresh, older_than=orphan_age, delete=True)


def _compact_once(load: Load, policy: HistoryPolicy) -> tuple[int, int, int]:
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    from iceberg_privacy.datafiles import write_data_files
    from iceberg_privacy.storage import delete_files

    table = load()
    if table is None or table.current_snapshot() is None:
        return 0, 0, 0
    with retry.vanished_is_conflict(table):  # another upkeep may have merged and deleted them meanwhile
        tasks = [t for t in table.scan().plan_files()
                 if not t.delete_files and t.file.file_size_in_bytes < policy.compact_below_bytes]
        if len(tasks) < 2:
            return 0, 0, 0
        data = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue(), case_sensitive=True).to_table(tasks)
    if policy.sort_by in data.column_names and data.num_rows:
        data = data.sort_by([(policy.sort_by, "ascending")])
    written = write_data_files(table.io, table.metadata, data, [], where=".".join(table.name()))
    checkpoint("history.after_write")
    try:
        # The overwrite asserts the head it read (a compare-and-swap table refuses it when any event landed since;
        # pyiceberg's own rebase, on the others, re-reads the new head's manifests, which another upkeep may delete).
        with retry.vanished_is_conflict(table):
            tx = table.transaction()
            with tx.update_snapshot(snapshot_properties={HISTORY_MAINTENANCE_SUMMARY: str(len(tasks))}).overwrite() as ow:
                for task in tasks:
                    ow.delete_data_file(task.file)
                for f in written.files:
                    ow.append_data_file(f)
            tx.commit_transaction()
    except Exception as exc:
        # Refused commits never landed: our files are unreferenced, delete them (for the queue they hold ciphertext).
        if isinstance(exc, ValidationException) or retry.is_conflict(exc):
            outcome = delete_files(table.io, [f.file_path for f in written.files])
            if outcome.failed:
                logger.warning("upkeep of %s: could not delete its uncommitted merge file(s) %s (the next upkeep "
                               "deletes them as orphans)", ".".join(table.name()), outcome.failed)
            if isinstance(exc, ValidationException):  # rebased onto a head where another upkeep merged them
                raise CommitFailedException(f"another upkeep merged the same files: {exc}") from exc
        raise
    return len(tasks), len(written.files), data.num_rows


def expire_history(load: Load, *, what: str, steps: retry.RetryPolicy = retry.DEFAULT_POLICY
                   ) -> tuple[int, int, dict[str, str]]:
    """Expire every snapshot but the head (and ref heads); delete what only the expired ones reached.
    Returns (snapshots expired, files deleted, files that could not be deleted)."""
    from iceberg_privacy.index.maintenance import expire_snapshots
    from iceberg_privacy.storage import canonical, delete_files

    def step() -> tuple[set[str], int]:
        t = load()
        if t is None:
            return set(), 0
        md = t.metadata
        keep = {md.current_snapshot_id} | {r.snapshot_id for r in md.refs.values()}
        expire = {s.snapshot_id for s in md.snapshots} - keep
        with retry.vanished_is_conflict(t):  # a second upkeep may have expired and deleted them meanwhile
            before = files_of(t, expire, deleted_too=True) | expired_leftovers(t)
        if expire:
            expire_snapshots(t, snapshot_ids=expire)
        return before, len(expire)

    before, expired = retry.run(step, policy=steps, exhausted=lambda n, last: CommitConflictError(
        f"expiring the snapshots of {what} lost to concurrent commits {n} times; run it again"))
    checkpoint("history.expired_not_deleted")  # committed; what only the expired snapshots reached is still there
    t = load()
    if t is None:
        return expired, 0, {}
    still = retry.run(lambda: still_referenced(load), policy=steps, exhausted=lambda n, last: CommitConflictError(
        f"reading the history of {what} lost to concurrent commits {n} times; run it again"))
    outcome = delete_files(t.io, sorted(p for p in before if canonical(p) not in still))
    return expired, len(outcome.deleted), dict(outcome.failed)


def expired_leftovers(table: Table) -> set[str]:
    """Files reached by snapshots that the older metadata versions in the log still list and the current metadata
    no longer has (see :func:`expired_leftover_kinds`)."""
    return set(expired_leftover_kinds(table))


def expired_leftover_kinds(table: Table, *, statistics: bool = False) -> dict[str, str]:
    """location -> kind (``manifest-list``, ``manifest``, ``data``, ``delete``; with ``statistics``, also the
    ``statistics`` / ``partition-statistics`` files and the sidecars those versions registered, for any snapshot:
    another engine's ``set_statistics`` replaces a snapshot's file; the caller keeps what the current metadata
    still references) of the files reached by snapshots that the older metadata versions in the log still list
    and the current metadata no longer has: an earlier expiry committed, then its process died before deleting
    them. Unreferenced and young, no later expiry would name them and only the orphan sweep (after :data:`ORPHAN_AGE`, at an upkeep that
    may not come for long) would delete them; for the queue they hold the ciphertext of requests already
    shredded. A metadata file, manifest list or manifest already gone (:func:`iceberg_privacy.storage.is_missing`:
    another upkeep deleting it right now; on S3 also between its HEAD and its GET) is skipped: that part of the
    deletion was done."""
    from pyiceberg.serializers import FromInputFile

    from iceberg_privacy.index.registry import referenced_sidecar_locations as sidecar_locations
    from iceberg_privacy.storage import is_missing

    def unless_gone[R](read: Callable[..., R], *args: Any) -> R | None:
        try:
            return read(*args)
        except OSError as exc:
            if is_missing(exc):
                return None
            raise

    seen = {s.snapshot_id for s in table.metadata.snapshots}
    out: dict[str, str] = {}
    for entry in reversed(table.metadata.metadata_log):  # newest first: the likeliest to list what a crash left
        md = unless_gone(FromInputFile.table_metadata, table.io.new_input(entry.metadata_file))
        if md is None:
            continue
        gone = {snap.snapshot_id for snap in md.snapshots if snap.snapshot_id not in seen}
        if statistics:  # every version's entries: another engine's set_statistics may have replaced one since
            for kind, files in (("statistics", md.statistics), ("partition-statistics", md.partition_statistics)):
                out.update((f.statistics_path, kind) for f in files)
            out.update((loc, "sidecar") for loc in sidecar_locations(md) if loc not in out)
        for snap in md.snapshots:
            if snap.snapshot_id not in gone:
                continue
            seen.add(snap.snapshot_id)
            manifests = unless_gone(snap.manifests, table.io)
            if manifests is None:
                continue
            out[snap.manifest_list] = "manifest-list"
            for m in manifests:
                if m.manifest_path in out:
                    continue
                entries = unless_gone(m.fetch_manifest_entry, table.io, False)
                if entries is None:
                    continue
                out[m.manifest_path] = "manifest"
                for e in entries:  # v1 manifests hold the content as a plain int
                    out[e.data_file.file_path] = "data" if e.data_file.content == DataFileContent.DATA else "delete"
    return out


def still_referenced(load: Load) -> set[str]:
    from iceberg_privacy.storage import canonical

    table = load()
    if table is None:
        return set()
    with retry.vanished_is_conflict(table):
        snapshots = {s.snapshot_id for s in table.metadata.snapshots}
        return {canonical(p) for p in files_of(table, snapshots, deleted_too=False)}


def files_of(table: Table, snapshot_ids: set[int], *, deleted_too: bool) -> set[str]:
    """Manifest lists, manifests and data files the given snapshots reach."""
    out: set[str] = set()
    for sid in snapshot_ids:
        snap = table.metadata.snapshot_by_id(sid)
        if snap is None:
            continue
        out.add(snap.manifest_list)
        for m in snap.manifests(table.io):
            if m.manifest_path in out:  # snapshots share most manifests: each is decoded once
                continue
            out.add(m.manifest_path)
            out.update(e.data_file.file_path for e in m.fetch_manifest_entry(table.io, discard_deleted=not deleted_too))
    return out
