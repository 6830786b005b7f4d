"""Purge after an erasure: make the erased rows' bytes disappear, then prove it.

An erase commit only removes the rows from the *current* snapshot; older snapshots still reference
the original files. Per table of an erase request, ``purge``:

1. expires every snapshot older than the table's erase commit (they can reach erased rows; a branch or
   tag that still reads a subject's row is an error naming the call that drops it), through
   :func:`iceberg_privacy.expire_snapshots` (``maintenance.expire_planned``: a snapshot another process tags
   meanwhile is kept), which writes a compacted sidecar covering exactly the live files and deletes the
   superseded sidecars (so no sidecar covers a removed file);
2. drops dangling position delete files (another engine's, left applying to files the erasure rewrote) from
   the branch heads (:mod:`iceberg_privacy.rights.purge_foreign`, with the statistics below); deletes the files only expired snapshots referenced: data files, manifests, manifest
   lists, and the statistics / partition statistics other engines registered for them; drops
   every older ``metadata.json`` version from the metadata log and deletes it (their summaries and paths
   can name a subject), with Iceberg's ``write.metadata.previous-versions-max`` /
   ``write.metadata.delete-after-commit.enabled`` set for one commit and restored in the next; deletes
   orphans older than ``orphan_age`` (leftovers of crashed writers; younger files may belong to an
   in-flight commit and are left alone) and empty directories whose name holds a subject;
3. verifies EVERY file and name under the table location (listed, not read through Iceberg metadata,
   so an unreferenced file cannot hide): Parquet rows whose identity columns (by field id, so renames
   are safe) hash to a subject's keyed digest, and manifests, manifest lists, metadata JSON and names
   (:mod:`iceberg_privacy.rights.traces`). The report holds counts and redacted locations only.

The table is marked verified in the journal only when no row is found, and the request completed
only when every table is verified. A failed verification is journaled and raised.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.manifest import DataFileContent, ManifestEntryStatus
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.update import AddSnapshotUpdate

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.arguments import check_ages, check_catalog, check_engine
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import load_many, table_name
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    RefHoldsSubjectError,
    RequestBlockedError,
    RequestConflictError,
    StorageError,
    VerificationFailedError,
)
from iceberg_privacy.history import expired_leftover_kinds
from iceberg_privacy.index.maintenance import IndexReport, expire_planned
from iceberg_privacy.index.orphans import (
    CatalogListing,
    catalog_entries_sharing,
    catalog_listing,
    cleanup_orphans,
    referenced_files,
)
from iceberg_privacy.index.registry import referenced_sidecar_locations
from iceberg_privacy.lineage.record import MAINTENANCE, LineageRecord
from iceberg_privacy.properties import ERASURE_SCRUB_SUMMARY as SUMMARY_SCRUB
from iceberg_privacy.properties import PURGE_SAVED_PROPERTIES_PROPERTY
from iceberg_privacy.rights.branch_commit import BranchCommit, discard_quietly, discard_unlanded
from iceberg_privacy.rights.journal import (
    COMPLETED,
    ERASURE_STAGED,
    PURGE_PLANNED,
    TABLE_PURGED,
    TABLE_VERIFIED,
    VERIFY_FAILED,
    Journal,
    RequestState,
    check_not_renamed,
    erasure_snapshots,
)
from iceberg_privacy.rights.keyed import check_key_id, key_id, load_secret, location_digest, subjects_redacted
from iceberg_privacy.rights.purge_foreign import (
    drop_dangling_deletes,
    drop_dangling_partition_statistics,
    statistics_of,
)
from iceberg_privacy.rights.purge_verify import (  # verify_table: also imported from here by callers
    list_roots,
    refs_in_the_way,
    relative_to_table,
    tags_holding_traces,
    verify_table,
)
from iceberg_privacy.rights.reports import PurgeReport, RefHold, TablePurge, VerifyReport
from iceberg_privacy.rights.subjects import as_values
from iceberg_privacy.rights.traces import (
    DELETE_FILE_TRACE,
    SubjectMatcher,
)
from iceberg_privacy.storage import (
    canonical,
    catalog_io,
    delete_files,
    is_location,
    list_files,
    remove_empty_dir,
    storage_errors,
)

logger = logging.getLogger(__name__)




DEFAULT_ORPHAN_AGE = timedelta(days=3)
"""Unreferenced files younger than this may belong to a commit still in flight (a long Spark job):
they are never deleted by a purge (Iceberg's own orphan-file removal uses the same default). A
crash leftover younger than this that holds a subject fails the verification, whose message says
to purge again with a smaller ``orphan_age``."""


def _reachable(table: Table, snapshot_ids: set[int]) -> dict[str, str]:
    """location (full URI) -> kind of every file the given snapshots need (live data only, not DELETED entries)."""
    out: dict[str, str] = {}
    for sid in snapshot_ids:
        snap = table.metadata.snapshot_by_id(sid)
        if snap is None:
            continue
        out[snap.manifest_list] = "manifest-list"
        for m in snap.manifests(table.io):
            if m.manifest_path in out:  # snapshots share most manifests (each append carries the older ones): decode once
                continue
            out[m.manifest_path] = "manifest"
            for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
                out[e.data_file.file_path] = "data" if e.data_file.content == DataFileContent.DATA else "delete"  # v1: a plain int
    return out


def _rewritten_originals(table: Table, erase_ids: list[int]) -> dict[str, str]:
    """Data files the erase commits removed (their DELETED entries): known garbage even after a crash."""
    out: dict[str, str] = {}
    for sid in erase_ids:
        snap = table.metadata.snapshot_by_id(sid)
        for m in snap.manifests(table.io) if snap else []:
            if m.added_snapshot_id != sid:
                continue
            for e in m.fetch_manifest_entry(table.io, discard_deleted=False):
                if e.status == ManifestEntryStatus.DELETED:
                    out[e.data_file.file_path] = "data"
    return out


def _scrub_lost(table: Table, branch: str, tries: int, last: BaseException) -> Exception:
    return CommitConflictError(f"{table_name(table)}: metadata scrub of branch {branch} lost to concurrent commits "
                               f"{tries} times; run the purge again")


def _scrub_head(table: Table, delete_failures: dict[str, str] | None = None) -> int | None:
    """If the head of ``main`` or of any branch still lists the erased files as DELETED manifest entries
    (their column bounds can hold a subject's id), commit an empty append on that branch: it carries only
    manifests with live files. Returns the id of ``main``'s scrub commit, if one was made.

    The append is built once per branch head and committed until that branch moves: a try lost only to commits on
    other branches (the table's sequence number moved past the scrub's) is re-numbered, nothing read again
    (:mod:`iceberg_privacy.rights.branch_commit`). Manifest lists of lost tries are deleted; a failed delete goes to
    ``delete_failures``."""

    def step(branch: str, built: dict[int, BranchCommit]) -> int | None:
        md = table.refresh().metadata
        ref = md.refs.get(branch)
        head = md.snapshot_by_id(ref.snapshot_id) if ref is not None else None
        if head is None:
            return None
        pending = built.get(head.snapshot_id)
        # a second purge of this table may expire and delete the head read here once it moved: a lost race
        with retry.vanished_is_conflict(table):
            if pending is None:
                if not any(m.deleted_files_count for m in head.manifests(table.io)):
                    return None
                tx = table.transaction()
                producer = tx.update_snapshot(branch=branch, snapshot_properties={
                    SUMMARY_SCRUB: "1", **LineageRecord(op="scrub", engine="pyarrow", status=MAINTENANCE).summary()
                }).fast_append()
                producer.commit()  # writes its manifest list and stages it in ``tx``, which is never committed
                updates, _ = compat.staged(tx)
                snapshot = next(u.snapshot for u in updates if isinstance(u, AddSnapshotUpdate))
                pending = built[head.snapshot_id] = BranchCommit.of(table, branch, snapshot)
            elif pending.stale(md):  # only other branches moved: the same scrub, a new sequence number
                pending.renumber(table)
        return pending.commit(table)

    out = None
    branches = sorted(n for n, r in table.refresh().metadata.refs.items() if r.snapshot_ref_type == "branch")
    for branch in branches or [MAIN_BRANCH]:
        built: dict[int, BranchCommit] = {}
        try:
            sid = retry.run(functools.partial(step, branch, built),
                            exhausted=functools.partial(_scrub_lost, table, branch))
        except BaseException:
            discard_quietly(table, built.values())
            raise
        failed = discard_unlanded(table, built.values())
        if delete_failures is not None:
            delete_failures.update(failed)
        if branch == MAIN_BRANCH:
            out = sid
    return out


_SAVED_PROPERTIES = PURGE_SAVED_PROPERTIES_PROPERTY
_TRIM = {TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: "1", TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true"}


def _trim_metadata_log(table: Table) -> tuple[list[str], dict[str, str]]:
    """Drop every metadata version older than the purge from the metadata log and delete those files.

    Old ``metadata.json`` versions hold the expired snapshots: their summaries (``partitions.<field>=<id>``
    keys with ``write.summary.partition-limit`` set) and paths (``data/user_id=<id>/...``) can name a
    subject. Iceberg's own mechanism does it: one commit with ``write.metadata.previous-versions-max=1``
    and ``write.metadata.delete-after-commit.enabled=true`` (pyiceberg trims the log to the version
    before it, written after the expiry, and deletes the dropped versions), then one commit restoring
    the user's values of both. pyiceberg only warns when such a delete fails, so every dropped version
    is deleted again here through the FileIO and failures are returned, never swallowed.
    Returns (dropped versions gone, location -> why a dropped version could not be deleted).
    """

    def trim() -> list[str]:
        md = table.refresh().metadata
        saved = md.properties.get(_SAVED_PROPERTIES)
        before = [e.metadata_file for e in md.metadata_log]
        if saved is None:
            saved = json.dumps({k: md.properties.get(k) for k in _TRIM}, sort_keys=True)
        with table.transaction() as tx:
            tx.set_properties({**_TRIM, _SAVED_PROPERTIES: saved})
        return before

    def restore() -> None:
        md = table.refresh().metadata
        if _SAVED_PROPERTIES not in md.properties:
            return  # a concurrent purge of this table restored them already
        saved = json.loads(md.properties[_SAVED_PROPERTIES])
        try:
            with table.transaction() as tx:
                back = {k: v for k, v in saved.items() if v is not None}
                if back:
                    tx.set_properties(back)
                gone = [k for k, v in saved.items() if v is None and k in md.properties]
                tx.remove_properties(*gone, _SAVED_PROPERTIES)
        except KeyError as exc:  # pyiceberg re-applied the removal to a head where a concurrent purge removed it
            raise CommitFailedException(f"{table_name(table)}: properties changed while restoring them") from exc

    before = retry.run(trim, exhausted=lambda tries, last: CommitConflictError(
        f"{table_name(table)}: metadata log trim lost to concurrent commits {tries} times; run the purge again"))
    checkpoint("purge.after_metadata_trim")
    retry.run(restore, exhausted=lambda tries, last: CommitConflictError(
        f"{table_name(table)}: restoring the metadata properties lost to concurrent commits {tries} times; run the "
        "purge again"))
    md = table.refresh().metadata
    kept = {canonical(e.metadata_file) for e in md.metadata_log} | {canonical(table.metadata_location)}
    outcome = delete_files(table.io, [loc for loc in before if canonical(loc) not in kept])
    return outcome.deleted + outcome.already_gone, outcome.failed


def _clones_in_the_way(table: Table, request_id: str, listing: CatalogListing) -> None:
    """Refuse the purge while another entry of the catalog is a ``register_table`` copy of this table (same
    location, same uuid): it still reads the old snapshots' files and metadata versions the purge deletes (it
    would fail to load or scan afterwards), and it still holds the subjects' rows."""
    clones = catalog_entries_sharing(table, listing)
    if clones:
        name = table_name(table)
        raise RequestBlockedError(
            f"request {request_id}: another entry of the catalog uses the files of {name} (its metadata "
            f"{clones[0]}: a register_table copy); purging {name} would delete files and metadata versions that "
            "entry still reads (and its older snapshots may still hold rows of the subjects); nothing was deleted. "
            "Drop the entry no longer used (catalog.drop_table, without purge), then run the request again; a "
            "request that named the dropped entry then reports it renamed: submit a new one for the table that stays",
            next_step="drop one of the two catalog entries sharing the table's files (catalog.drop_table, without "
                      "purge), then run the request again, or submit a new one naming the entry that stays")


def _purge_table(table: Table, cutoff: int | None, orphan_age: timedelta, erase_ids: list[int],
                 planned: dict[str, str], plan: Callable[[dict[str, str]], None],
                 matcher: SubjectMatcher) -> TablePurge:
    """Keep only the head snapshot (plus refs newer than the erase), delete what the others alone reached."""
    name = table_name(table)
    rep = TablePurge(name)
    table.refresh()  # refs holding the subjects were refused by the caller (refs_in_the_way)
    originals = {**planned, **_rewritten_originals(table, erase_ids)}
    dangling = drop_dangling_deletes(table, plan, rep.delete_failures)  # their files are deleted below, with what only expired snapshots reach
    if dangling:
        logger.info("%s: dropped %d dangling position delete file(s) from the branch heads", name, dangling)
    rep.scrub_snapshot = _scrub_head(table, rep.delete_failures)

    def expire_step() -> tuple[dict[str, str], IndexReport]:
        md = table.refresh().metadata
        keep = {md.current_snapshot_id} | {r.snapshot_id for r in md.refs.values()}
        expire = {s.snapshot_id for s in md.snapshots} - keep
        with retry.vanished_is_conflict(table):  # another purge may have expired and deleted them meanwhile
            # what snapshots another process expired (pyiceberg's expire_snapshots deletes no file) reached, as the
            # older metadata versions in the log still list them: committed once, so no commit in flight can
            # make them live again; without this they are young orphans holding a subject and fail the verification
            leftovers = expired_leftover_kinds(table, statistics=True)
            before = {**leftovers, **_landed_commit_leftovers(table, md, leftovers),
                      **originals, **_reachable(table, expire), **statistics_of(md, expire),
                      # the sidecars the expiry supersedes: it deletes them after its commit, a crash between
                      # leaves them unreferenced, covering the erased files (deleted below if not referenced)
                      **dict.fromkeys(referenced_sidecar_locations(md), "sidecar")}
        # Durable before expiry: once the snapshots are gone, this list is the only way a re-run after a
        # crash knows which files to delete (keyed hashes of the paths: a path can hold an identifier).
        plan(before)
        # (expire_planned: a snapshot tagged by another process since ``md`` was read is kept, its files too)
        return before, expire_planned(table, expire)

    before, idx = retry.run(expire_step, exhausted=lambda tries, last: CommitConflictError(
        f"{name}: snapshot expiry lost to concurrent commits {tries} times; run the purge again"))
    rep.expired_snapshots, rep.sidecar = idx.expired_snapshots, idx.sidecar_path
    rep.deleted_by_kind["sidecar"] = len(idx.deleted_sidecars)
    rep.delete_failures.update(idx.delete_failures)
    checkpoint("purge.after_expire")

    def still_step() -> set[str]:
        table.refresh()
        with retry.vanished_is_conflict(table):
            return {canonical(p) for p in _reachable(table, {s.snapshot_id for s in table.metadata.snapshots})}

    drop_dangling_partition_statistics(table)
    still = retry.run(still_step, exhausted=lambda tries, last: CommitConflictError(
        f"{name}: reading the table's history lost to concurrent commits {tries} times; run the purge again"))
    still |= {canonical(loc) for loc in referenced_sidecar_locations(table.metadata)}
    still |= {canonical(loc) for loc in statistics_of(table.metadata, None)}
    doomed = {canonical(p): (p, kind) for p, kind in sorted(before.items())}
    outcome = delete_files(table.io, [p for key, (p, _) in sorted(doomed.items()) if key not in still])
    kinds = {p: kind for p, kind in doomed.values()}
    for p in outcome.deleted:
        rep.deleted_by_kind[kinds[p]] = rep.deleted_by_kind.get(kinds[p], 0) + 1
    rep.delete_failures.update(outcome.failed)
    checkpoint("purge.after_delete")
    dropped, failed = _trim_metadata_log(table)
    if dropped:
        rep.deleted_by_kind["metadata"] = len(dropped)
    rep.delete_failures.update(failed)
    found = cleanup_orphans(table, older_than=orphan_age)  # never lists a table nested in this one's location
    rep.shared_location = list(found.shared_with)
    if found.other_tables:
        logger.warning("%s: %d other table(s) located inside this table's location; their files are left alone",
                       name, found.other_tables)
    orphans = delete_files(table.io, found.orphans)
    if orphans.deleted or orphans.already_gone:
        rep.deleted_by_kind["orphan"] = len(orphans.deleted) + len(orphans.already_gone)
    rep.delete_failures.update(orphans.failed)
    dirs, failed = _remove_subject_dirs(table, matcher)
    if dirs:
        rep.deleted_by_kind["directory"] = dirs
    rep.delete_failures.update(failed)
    rep.deleted_files = sum(rep.deleted_by_kind.values())
    return rep


_RERUN = retry.RetryPolicy(attempts=5)
"""Whole-table re-runs after a history file vanished while the table moved: a concurrent purge settles in
one or two; a file missing for another reason (a damaged table) must not re-run the purge's commits for long."""

IN_FLIGHT_RECHECKS = retry.RetryPolicy(attempts=4, base_delay=0.5, max_delay=2.0)
"""Verifying again (after ~0.5, 1 and 2 s) when everything that names a subject is referenced by nothing: another
writer's commit in flight (staged, not yet committed or discarded: a second queue pass erasing the same table from
a head planned before this erasure) is unreferenced for a moment. A crashed writer's leftover fails after the last."""


def _only_unreferenced(v: VerifyReport) -> bool:
    """Did the verification find something, and only in files the table's metadata does not reference?"""
    return (not v.ok and not v.unreadable and v.unreferenced_with_subjects == len(v.files_with_subjects)
            and not any(t.referenced for t in v.traces))


def _lost(name: str, what: str, tries: int, last: BaseException) -> Exception:
    return CommitConflictError(f"{name}: {what} was re-run {tries} times because files vanished while the table "
                               f"changed (last: {last.__cause__ or last}); if no other purge or writer is running, "
                               "the table's metadata names missing files: check its storage, then run the purge again")


def _remove_subject_dirs(table: Table, matcher: SubjectMatcher) -> tuple[int, dict[str, str]]:
    """Remove the empty directories (local) or directory markers (object stores) whose names hold a
    subject, deepest first; a directory that still holds a file is left (and fails the verification)."""
    _, dirs = list_roots(table)
    removed, failed = 0, {}
    for d in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        if matcher.name(relative_to_table(table, d)) is None:
            continue
        why = remove_empty_dir(table.io, d)
        if why is None:
            removed += 1
        elif not why.endswith("it is not empty"):
            failed[d] = why
    return removed, failed


_MANIFEST_LIST = re.compile(r"/snap-\d+-\d+-(?P<uuid>[0-9a-f-]{36})\.avro$")
_COMMIT_MANIFEST = re.compile(r"/(?P<uuid>[0-9a-f-]{36})-m\d+\.avro$")


def _landed_commit_leftovers(table: Table, md: Any, expired: dict[str, str]) -> dict[str, str]:
    """Manifests that commits which LANDED wrote and left out of their snapshot (location -> ``manifest``).

    A writer names a commit's manifests ``<commit uuid>-m<n>.avro`` and its manifest list
    ``snap-<snapshot id>-<attempt>-<commit uuid>.avro`` (pyiceberg and Java alike). pyiceberg's merge append
    writes the manifest of the new files, then merges it into another one and commits only that: the first stays
    behind, unreferenced and young, with the column bounds of the rows it added (a subject's id). Once a snapshot
    of that commit uuid is in the metadata (current or an older version in the log), the commit is over, so no
    commit in flight can still reference a manifest of that uuid: it is a leftover whatever its age."""
    lists = [s.manifest_list for s in md.snapshots] + [loc for loc, kind in expired.items() if kind == "manifest-list"]
    landed = {m.group("uuid") for loc in lists if (m := _MANIFEST_LIST.search(canonical(loc)))}
    if not landed:
        return {}
    # (a manifest some retained snapshot references is kept by the caller, which deletes nothing still reachable)
    folders = {canonical(d).rstrip("/"): d for d in (
        f"{table.location().rstrip('/')}/metadata", table.location_provider().new_metadata_location("x")[:-2])}
    return {f.location: "manifest" for key, folder in folders.items() for f in list_files(table.io, folder)
            if "/" not in canonical(f.location)[len(key) + 1:]
            and (m := _COMMIT_MANIFEST.search(canonical(f.location))) is not None and m.group("uuid") in landed}


def _remove_staged_leftovers(table: Table, rows: list[dict[str, Any]], name: str, secret: bytes
                             ) -> tuple[int, dict[str, str]]:
    """Delete what erase commits of this request staged and never committed (a crash between staging
    and commit): their manifests list the rewritten files as deleted entries, whose column bounds can
    hold a subject's id, and they are younger than any orphan age.

    The journal's ``erasure-staged`` events name each staged commit by snapshot id and commit uuid, which
    are in the names pyiceberg and the library give its files (``<uuid>-m<n>.avro``,
    ``snap-<snapshot id>-<n>-<uuid>.avro``, ``<snapshot id>-<uuid>.privacy-sidecar.stats``); only files
    the table's metadata does not reference are deleted. A staged commit that can still land is kept: every
    file it replaces (its event's ``replaces``) is still live at a branch head, so another run of this request
    may be committing it right now (its commit would name deleted files: a head no reader can open). Once one
    of them is gone (the commit could only land while they all are live), or a later pass replaced them, it is
    a dead end and deleted.
    """
    marks: list[str] = []
    heads: list[set[str]] | None = None  # the keyed hashes of the data files live at each branch head
    for r in rows:
        if r["event"] == ERASURE_STAGED and r["table_name"] == name:
            detail = json.loads(r["detail"] or "{}")
            replaces = detail.get("replaces")
            replaces = {d for d in replaces if isinstance(d, str)} if isinstance(replaces, list) else set()
            if replaces:
                if heads is None:
                    heads = _live_digests_at_heads(table, secret)
                if any(replaces <= live for live in heads):
                    logger.info("%s: an erase commit of this request is staged and can still land (snapshot %s); "
                                "its files are kept", name, r["snapshot_id"])
                    continue
            if detail.get("commit_uuid"):
                marks.append(f"/{detail['commit_uuid']}-m")
            if r["snapshot_id"] is not None:
                marks += [f"/snap-{r['snapshot_id']}-", f"/{r['snapshot_id']}-"]
    if not marks:
        return 0, {}
    referenced = referenced_files(table)
    # the table's metadata folder, and write.metadata.path when set elsewhere: where the staged files were written
    folders = {canonical(d).rstrip("/"): d for d in (  # canonical key -> the location as written (listed)
        f"{table.location().rstrip('/')}/metadata", table.location_provider().new_metadata_location("x")[:-2])}
    doomed = [f.location for key, folder in folders.items() for f in list_files(table.io, folder)
              if canonical(f.location) not in referenced
              and any(m in canonical(f.location)[len(key):] for m in marks)]
    outcome = delete_files(table.io, doomed)
    return len(outcome.deleted) + len(outcome.already_gone), dict(outcome.failed)


def _live_digests_at_heads(table: Table, secret: bytes) -> list[set[str]]:
    """Per branch head, the keyed hashes (:func:`location_digest`) of the data files live there."""
    md = table.metadata
    out = []
    for sid in sorted({ref.snapshot_id for ref in md.refs.values() if ref.snapshot_ref_type == "branch"}):
        snap = md.snapshot_by_id(sid)
        if snap is None:
            continue
        out.append({location_digest(secret, canonical(e.data_file.file_path)) for m in snap.manifests(table.io)
                    for e in m.fetch_manifest_entry(table.io, discard_deleted=True)
                    if e.data_file.content == DataFileContent.DATA})
    return out


def _planned(table: Table, rows: list[dict[str, Any]], name: str, secret: bytes, known: Iterable[str] = ()
             ) -> dict[str, str]:
    """Locations (full URIs) of the files earlier runs, and the erase commits, journaled as about to be orphaned.

    Events hold keyed hashes of the paths (``file_digests``): ``known`` locations (the files the erase commits
    still in the history replaced) are hashed first; only when some digest is not among them are the files under
    the table location listed and hashed to find the rest. Events of versions before 0.3 hold clear paths (``files``);
    entries written without their scheme ("bucket/key") are not locations and are never resolved
    against the working directory.
    """
    out: dict[str, str] = {}
    wanted: dict[str, str] = {}
    for r in rows:
        if r["event"] != PURGE_PLANNED or r["table_name"] != name:
            continue
        detail = json.loads(r["detail"] or "{}")
        out.update({p: k for p, k in detail.get("files", {}).items() if is_location(p)})
        wanted.update(detail.get("file_digests", {}))
    for location in known:
        kind = wanted.pop(location_digest(secret, canonical(location)), None)
        if kind is not None:
            out[location] = kind
    if wanted:
        for stored in list_roots(table)[0]:
            kind = wanted.get(location_digest(secret, canonical(stored.location)))
            if kind is not None:
                out[stored.location] = kind
    return out


@storage_errors
def purge(catalog: Catalog, request_id: str, *, home: str | os.PathLike[str] | None = None,
          orphan_age: timedelta = DEFAULT_ORPHAN_AGE, raise_on_failure: bool = True,
          secret: bytes | None = None, subjects: Any | None = None, spark: Any | None = None) -> PurgeReport:
    """Expire, delete and verify for every erased table of ``request_id``; complete the request on success.

    Resumable like the erase: tables already purged are only verified again, verified ones skipped.
    Raises :class:`VerificationFailedError` (after journaling it) when a subject row, or a file or name
    holding a subject, is still found. ``subjects`` (the request's values, optional, never stored) let
    the verification match truncated column bounds as prefixes of them; without them such a bound of
    a leftover file fails the verification as not checkable. With ``spark`` the verification reads the
    listed files on executors (:func:`verify_table`).
    """
    t0 = time.perf_counter()
    check_catalog(catalog, "purge")
    check_engine("purge", spark=spark)
    if not isinstance(request_id, str):
        raise ConfigurationError(f"purge() takes the id of an erasure request (a str, e.g. report.request_id), got "
                                 f"{type(request_id).__name__}; `iceberg-privacy requests list` shows the ids")
    check_ages("purge", orphan_age=orphan_age)  # before anything is expired or deleted, not half-way
    secret = secret if secret is not None else load_secret(home, catalog=catalog)
    journal = Journal(catalog)
    req = journal.get(request_id)
    if req.kind != "erase":
        raise RequestConflictError(f"request {request_id} is an {req.kind} request; only erasures are purged")
    check_key_id(req.key_id, key_id(secret), f"request {request_id}")
    pending = [n for n, t in req.tables.items() if t.status == "pending"]
    if pending:
        raise RequestConflictError(
            f"request {request_id}: table(s) {', '.join(pending)} are not erased yet; run the erasure first "
            f"(iceberg_privacy.erase(..., request_id={request_id!r}) or `iceberg-privacy requests run {request_id}`)"
        )
    with subjects_redacted(secret, set(req.subjects)):  # a failed read or delete quotes a path holding an id
        return _purge_tables(catalog, journal, req, secret, subjects, orphan_age, raise_on_failure, spark, t0)


def _purge_tables(catalog: Catalog, journal: Journal, req: RequestState, secret: bytes, subjects: Any | None,
                  orphan_age: timedelta, raise_on_failure: bool, spark: Any | None, t0: float) -> PurgeReport:
    request_id = req.request_id
    report = PurgeReport(request_id, {})
    digests = set(req.subjects)
    values = as_values(subjects) if subjects is not None else None
    failed: list[str] = []
    tags_in_the_way: list[RefHold] = []
    dropped_left: dict[str, tuple[str, int]] = {}  # dropped table -> (its location, files still there)
    listings: list[CatalogListing] = []  # the catalog's tables, listed once when the first table is purged
    # every table to purge loaded in one pooled call (a round trip each on REST/Glue, in parallel); the pooled
    # loader's check: a 'no such table' for a table the catalog still lists (a REST 404 from a gateway) is a
    # CatalogError, never taken for a dropped table (whose advice is to delete its folder)
    to_load = [n for n, s in req.tables.items() if s.status != "verified"]
    loads = dict(zip(to_load, load_many(catalog, [tuple(n.split(".")) for n in to_load]), strict=True))
    for name, state in req.tables.items():
        if state.status == "verified":
            report.tables[name] = TablePurge(name, skipped="already verified")
            continue
        loaded = loads[name]
        if isinstance(loaded, NoSuchTableError):
            check_not_renamed(catalog, req, name)
            # A catalog may drop a table and leave its files (SqlCatalog's drop_table does): they still hold
            # the subject's old rows, so the table counts as verified only when nothing is left there.
            location = str((req.detail.get("table_locations") or {}).get(name) or "")
            left = list_files(catalog_io(catalog, location), location) if location else []
            if left:
                journal.record(request_id, VERIFY_FAILED, table=name,
                               detail={"note": "table dropped, its files remain", "files_left": len(left)})
                report.tables[name] = TablePurge(
                    name, skipped=f"table dropped, {len(left)} file(s) remain under {location}")
                dropped_left[name] = (location, len(left))
                failed.append(name)
                continue
            journal.record(request_id, TABLE_PURGED, table=name, detail={"note": "table no longer exists"})
            journal.record(request_id, TABLE_VERIFIED, table=name, detail={"note": "table no longer exists"})
            report.tables[name] = TablePurge(name, skipped="table no longer exists")
            continue
        if isinstance(loaded, Exception):
            raise loaded
        table = loaded

        def purge_step(table: Table = table, name: str = name, snapshot_id: int | None = state.snapshot_id) -> TablePurge:
            # Re-run from the top when another process (a second pass or purge of the same request) expired
            # and deleted history files this one was reading: every step below is idempotent.
            table.refresh()
            with retry.vanished_is_conflict(table):
                # The newest erase commit of this request is the cutoff (a re-run after a failed verification
                # may have added one); without any, the head at erase time.
                commits = erasure_snapshots(table, request_id)
                rows = journal.rows(request_id)  # read once: the planned files and the staged erase commits
                planned = _planned(table, rows, name, secret, _rewritten_originals(table, [c[0] for c in commits]))

                def plan(files: dict[str, str]) -> None:
                    digested = {location_digest(secret, canonical(p)): k for p, k in files.items()}
                    journal.append([journal.event(request_id, PURGE_PLANNED, table=name,
                                                  detail={"file_digests": digested})])

                refs_in_the_way(table, digests, secret, request_id)
                if not listings:
                    listings.append(catalog_listing(catalog))  # once per purge: every table of the catalog is loaded
                _clones_in_the_way(table, request_id, listings[0])
                matcher = SubjectMatcher(table, digests, secret, values)
                tp = _purge_table(table, commits[-1][0] if commits else snapshot_id, orphan_age,
                                  [c[0] for c in commits], planned, plan, matcher)
                staged, stuck = _remove_staged_leftovers(table, rows, name, secret)
            if staged:
                tp.deleted_by_kind["staged"] = staged
                tp.deleted_files += staged
            tp.delete_failures.update(stuck)
            # A failed delete names its location, which holds the id in an identity partition (data/email=<id>/),
            # and the error built from it is journaled (blocked) and logged: only redacted locations leave here.
            tp.delete_failures = {matcher.redact_text(loc): matcher.redact_text(why)
                                  for loc, why in tp.delete_failures.items()}
            return tp

        def verify_step(table: Table = table) -> VerifyReport:
            table.refresh()
            with retry.vanished_is_conflict(table):
                return verify_table(table, digests, secret, subjects=values, spark=spark)

        tp = retry.run(purge_step, exhausted=functools.partial(_lost, name, "the purge"), policy=_RERUN)
        journal.record(request_id, TABLE_PURGED, table=name, files=tp.deleted_files,
                       detail={"expired_snapshots": len(tp.expired_snapshots), "deleted": tp.deleted_by_kind})
        verify = retry.run(verify_step, exhausted=functools.partial(_lost, name, "verification"), policy=_RERUN)
        for attempt in retry.attempts(IN_FLIGHT_RECHECKS):  # the policy's pause before each look again
            if attempt > 1:
                verify = retry.run(verify_step, exhausted=functools.partial(_lost, name, "verification"), policy=_RERUN)
            if not _only_unreferenced(verify):
                break
        tp.verify = verify
        detail = {"files_scanned": tp.verify.files_scanned, "rows_scanned": tp.verify.rows_scanned,
                  "rows_found": tp.verify.rows_found, "files_with_subjects": len(tp.verify.files_with_subjects),
                  "unreadable": len(tp.verify.unreadable), "delete_failures": len(tp.delete_failures),
                  "other_files_scanned": tp.verify.other_files_scanned, "names_checked": tp.verify.names_checked,
                  "traces": len(tp.verify.traces)}
        if tp.verify.ok and not tp.delete_failures:
            journal.record(request_id, TABLE_VERIFIED, table=name, rows=0, files=tp.verify.files_scanned, detail=detail)
        else:
            journal.record(request_id, VERIFY_FAILED, table=name, rows=tp.verify.rows_found, detail=detail)
            failed.append(name)
            with retry.vanished_is_conflict(table):
                tags_in_the_way += tags_holding_traces(table.refresh(), tp.verify)
        report.tables[name] = tp
    if not failed:
        checkpoint("purge.before_complete")
        journal.record(request_id, COMPLETED)
        report.completed = True
    report.seconds = time.perf_counter() - t0
    if dropped_left and raise_on_failure:
        name, (location, count) = next(iter(dropped_left.items()))
        raise VerificationFailedError(
            f"request {request_id}: table {name} was dropped, but {count} of its file(s) remain under {location} "
            "(the catalog dropped it without deleting its files; pyiceberg's purge_table also leaves the sidecars) "
            "and may hold the subjects' rows or index entries. Delete that folder with your storage tools, then run "
            f"`iceberg-privacy requests run {request_id}`"
        )
    undeleted = {n: report.tables[n].delete_failures for n in failed if report.tables[n].delete_failures}
    if undeleted and raise_on_failure:
        name, fails = next(iter(undeleted.items()))
        raise StorageError(
            f"request {request_id}: the purge could not delete {sum(map(len, undeleted.values()))} file(s) of "
            f"{', '.join(undeleted)}, e.g. {next(iter(fails.values()))}. The request stays open: fix the storage "
            f"permission or location, then run `iceberg-privacy requests run {request_id}` (or purge again)"
        )
    if tags_in_the_way and raise_on_failure:
        steps = "; ".join(h.advice for h in tags_in_the_way)
        raise RefHoldsSubjectError(
            f"request {request_id}: {', '.join(f'tag {h.name!r} of {h.table}' for h in tags_in_the_way)} point(s) at a "
            "snapshot whose manifests or statistics name a subject (a data file deleted before the tag keeps its bounds "
            "and partition values there; another engine's partition statistics its tuples); running the request again "
            "cannot change a tag. Drop or "
            f"move it: {steps}. Then run the request (or purge) again",
            next_step=f"{steps}; then `iceberg-privacy requests run {request_id}`",
        )
    unreadable = [(n, loc) for n in failed if (v := report.tables[n].verify) is not None for loc in v.unreadable]
    if unreadable and raise_on_failure and not any(
            (v := report.tables[n].verify) is not None and (v.rows_found or v.traces) for n in failed):
        name, loc = unreadable[0]
        raise VerificationFailedError(
            f"request {request_id}: the verification could not read {len(unreadable)} file(s) under {name}, e.g. "
            f"{loc}: a corrupt or truncated file (a crashed writer's partial upload) or one in a format it does not "
            "know. It may hold a subject, so the request stays open. If no metadata references it and no writer is "
            f"running, delete it (`iceberg-privacy cleanup {name} --older-than 0s --delete`, or purge again with "
            "orphan_age=timedelta(0), CLI --orphan-age 0s); otherwise repair or restore it. Then run "
            f"`iceberg-privacy requests run {request_id}`"
        )
    traced = [t for n in failed if (v := report.tables[n].verify) is not None for t in v.traces]
    outside = [loc for n in failed if (v := report.tables[n].verify) is not None
               for loc in [*(t.location for t in v.traces if not t.referenced), *v.files_with_subjects]
               if is_location(loc)]  # listed under a write path outside the table location (a full URI)
    elsewhere = (
        f" {len(outside)} of them lie outside the table location (under write.data.path or write.metadata.path, e.g. "
        f"{outside[0]}): neither the purge nor cleanup deletes files there, because such a path may be shared with "
        "other tables; once you have checked that no table references them, delete them with your storage tools, "
        f"then run `iceberg-privacy requests run {request_id}`." if outside else "")
    shared = [(n, t.shared_location[0]) for n in failed if (t := report.tables[n]).shared_location]
    if shared:
        elsewhere += (
            f" The location of {shared[0][0]} also holds another table's metadata ({shared[0][1]}: a table dropped and "
            "created again at the same location, or two tables given one location), so neither the purge nor cleanup "
            "deletes unreferenced files there (they cannot be told from that table's). Once you have checked that no "
            "table references them, delete the files named above with your storage tools (and that table's other "
            f"leftovers), then run `iceberg-privacy requests run {request_id}`.")
    deletes = (
        ". An entry of a live delete file (another engine's merge-on-read DELETE) keeps the partition value and the "
        "path of the data file it applied to, which the erasure removed (and, in its optional row column, the deleted "
        "row itself): the request cannot drop it. Rewrite the "
        "table's delete files with that engine, which drops deletes of files no longer live (Spark: CALL "
        "<catalog>.system.rewrite_position_delete_files(table => 'db.t')), then run the request again"
        if any(DELETE_FILE_TRACE in t.what for t in traced) else "")
    if traced and raise_on_failure and not any(
            (v := report.tables[n].verify) is not None and v.rows_found for n in failed):
        shown = "; ".join(t.describe() for t in traced[:3])
        raise VerificationFailedError(
            f"request {request_id}: {len(traced)} file(s) or name(s) under {', '.join(failed)} still name a subject "
            f"(listed in the purge report): {shown}{'; ...' if len(traced) > 3 else ''}. A file not referenced by the "
            "table's metadata is a leftover (e.g. a manifest or data file a crashed writer wrote before committing): "
            "once no writer is running, delete it with `iceberg-privacy cleanup TABLE --older-than 0s --delete` "
            "(Python: iceberg_privacy.cleanup_orphans(table, older_than=timedelta(0), delete=True)) or purge again "
            f"with orphan_age=timedelta(0) (CLI: --orphan-age 0s), then `iceberg-privacy requests run {request_id}`. "
            "A truncated bound that is not checkable needs the subject values: purge(..., subjects=[...]). A "
            "referenced file or a directory holding files means rows of a subject are still live: run the request again"
            + deletes + elsewhere
        )
    verifies = [v for n in failed if (v := report.tables[n].verify) is not None]
    if failed and raise_on_failure and verifies and all(v.files_with_subjects and v.unreferenced_with_subjects == len(
            v.files_with_subjects) for v in verifies):
        # Every file with rows is an orphan: e.g. another process expired snapshots between the erase and the
        # purge (the erase commit with them), so the rewritten originals are unreferenced and younger than the
        # orphan age. Running the request again cannot help: nothing references them, so nothing re-erases them.
        names = ", ".join(failed)
        raise VerificationFailedError(
            f"request {request_id}: rows of the subjects are still in {names} ({sum(v.rows_found for v in verifies)} "
            f"rows), only in {sum(v.unreferenced_with_subjects for v in verifies)} file(s) not referenced by the "
            "table's metadata: orphans younger than the orphan age "
            f"({orphan_age}), e.g. files another process's snapshot expiry left between the erase and the purge, or "
            "a crashed writer's uncommitted files. Running the request again does not delete them. Once no writer is "
            f"running, delete them with `iceberg-privacy cleanup {failed[0]} --older-than 0s --delete` (Python: "
            "iceberg_privacy.cleanup_orphans(table, older_than=timedelta(0), delete=True)) or purge again with "
            f"orphan_age=timedelta(0) (CLI: `iceberg-privacy purge {request_id} --orphan-age 0s`), which "
            "verifies and completes it." + elsewhere
        )
    if failed and raise_on_failure:
        raise VerificationFailedError(
            f"request {request_id}: rows of the subjects are still in {', '.join(failed)} "
            f"({sum(v.rows_found for n in failed if (v := report.tables[n].verify) is not None)} rows; files are "
            "listed in the purge report). "
            "Likely rows a writer committed without the forget list (run the request again: `iceberg-privacy "
            f"requests run {request_id}` erases and purges them), or an uncommitted file of a crashed writer younger "
            f"than the orphan age ({orphan_age}): once no writer is running, purge again with a smaller orphan_age "
            "(CLI: --orphan-age-hours)" + elsewhere
        )
    return report
