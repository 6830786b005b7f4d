"""What other engines leave in a table that names a subject after an erasure, and how the purge removes it.

Why its own module: the library's own files (rewritten data files, manifests, sidecars, metadata versions) are
removed by the purge's main path (:mod:`iceberg_privacy.rights.purge`); these are files another engine
registered or wrote, each needing its own commit and care:

- ``statistics`` and ``partition-statistics`` files of expired snapshots (Trino's and Spark's NDV sketches;
  Spark's and Java's partition statistics, one row per partition tuple: an identity partition's values in
  clear). pyiceberg's expiry keeps the ``partition-statistics`` entries, so they are dropped here.
- *dangling* position delete files: another engine's merge-on-read ``DELETE`` of a file the erasure rewrote keeps
  naming the old path, stays live, and in an identity partition its manifest entry keeps the subject's value.
  pyiceberg cannot commit the removal of a delete file, so a manifest list without them is written here.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import Table

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import table_name
from iceberg_privacy.errors import CommitConflictError
from iceberg_privacy.index.registry import referenced_sidecar_locations
from iceberg_privacy.lineage.record import MAINTENANCE, LineageRecord
from iceberg_privacy.properties import ERASURE_SCRUB_SUMMARY as SUMMARY_SCRUB
from iceberg_privacy.rights.branch_commit import BranchCommit, discard_quietly, discard_unlanded
from iceberg_privacy.storage import canonical


def statistics_of(md: Any, snapshot_ids: set[int] | None) -> dict[str, str]:
    """location -> kind of the ``statistics`` and ``partition-statistics`` files registered for
    ``snapshot_ids`` (None: every snapshot), other than the library's own sidecars (expiry handles those).

    Other engines register them (Trino's and Spark's NDV sketches: hashes of column values; Spark's and
    Java's partition statistics: one row per partition tuple, so an identity partition's values in clear).
    Expiring their snapshot makes them unreferenced, younger than any orphan age: the purge deletes them
    with the other files the expired snapshots alone reached."""
    ours = {canonical(loc) for loc in referenced_sidecar_locations(md)}
    out: dict[str, str] = {}
    for kind, entries in (("statistics", md.statistics), ("partition-statistics", md.partition_statistics)):
        for s in entries:
            if (snapshot_ids is None or s.snapshot_id in snapshot_ids) and canonical(s.statistics_path) not in ours:
                out[s.statistics_path] = kind
    return out


def drop_dangling_partition_statistics(table: Table) -> None:
    """Remove the ``partition-statistics`` entries whose snapshot is gone.

    pyiceberg's snapshot expiry drops the ``statistics`` of the snapshots it removes but keeps their
    ``partition-statistics``, so the expired snapshots' partition statistics (partition tuples: an identity
    partition's values) would stay referenced, and never deleted, after the purge."""

    def step() -> None:
        md = table.refresh().metadata
        alive = {s.snapshot_id for s in md.snapshots}
        gone = sorted({p.snapshot_id for p in md.partition_statistics if p.snapshot_id not in alive})
        if not gone:
            return
        try:
            with table.transaction() as tx:
                compat.remove_partition_statistics(tx, gone)
        except ValueError as exc:  # a concurrent purge removed one first: read the head again
            raise CommitFailedException(f"{table_name(table)}: partition statistics changed meanwhile") from exc

    retry.run(step, exhausted=lambda tries, last: CommitConflictError(
        f"{table_name(table)}: removing the expired snapshots' partition statistics lost to concurrent commits "
        f"{tries} times; run the purge again"))


_POS_PATH_ID = 2147483546
"""Field id of ``file_path`` in a position delete file (Iceberg spec, reserved ids)."""


def _delete_targets(io: FileIO, delete_file: Any) -> set[str] | None:
    """Data files a position delete file applies to: from its ``file_path`` bounds when they name one file, else
    read from the file (``file_path`` column only). None for an equality delete file (it applies by value)."""
    if delete_file.content != DataFileContent.POSITION_DELETES:
        return None
    low = (delete_file.lower_bounds or {}).get(_POS_PATH_ID)
    high = (delete_file.upper_bounds or {}).get(_POS_PATH_ID)
    if low is not None and low == high:
        return {bytes(low).decode("utf-8")}
    import pyarrow.parquet as pq

    with io.new_input(delete_file.file_path).open(seekable=True) as fh:
        pf = pq.ParquetFile(fh)
        name = next((f.name for f in pf.schema_arrow
                     if (f.metadata or {}).get(b"PARQUET:field_id") == str(_POS_PATH_ID).encode()), "file_path")
        return {str(v) for v in pf.read(columns=[name]).column(0).unique().to_pylist() if v is not None}


def _dangling_lost(table: Table, branch: str, tries: int, last: BaseException) -> Exception:
    return CommitConflictError(f"{table_name(table)}: dropping dangling delete files of branch {branch} lost to "
                               f"concurrent commits {tries} times; run the purge again")


def drop_dangling_deletes(table: Table, plan: Callable[[dict[str, str]], None],
                          delete_failures: dict[str, str] | None = None) -> int:
    """Commit, on each branch whose head has them, a snapshot without the position-delete manifests whose every
    live entry applies only to data files no longer live there. Returns how many delete files were dropped.

    Another engine's merge-on-read ``DELETE`` leaves a position delete file; when the erasure rewrites the data
    file it applied to, the delete file still lists the old path and stays live ("dangling"): in an identity
    partition its manifest entry keeps the subject's partition value, and its rows the path that holds it.
    pyiceberg cannot commit the removal of a delete file, so the new snapshot's manifest list is written here
    (the erasure's rebase does the same) with the other manifests unchanged; a manifest that also holds a live
    delete file for a live data file is kept, and the verification names what it still holds.

    ``plan`` journals each manifest list before it is written: its partition summaries hold the kept manifests'
    bounds (the erase commit's manifests list the erased files as deleted entries), so one a crash left
    uncommitted names the subject, and a re-run of the purge deletes it (unless a commit references it).

    Each snapshot is built once per branch head: a try lost only to other branches' commits is re-numbered
    (:mod:`iceberg_privacy.rights.branch_commit`). Lists of lost tries are deleted; a failed delete goes to
    ``delete_failures``.
    """
    from pyiceberg.manifest import ManifestContent, write_manifest_list
    from pyiceberg.table.snapshots import Operation, Snapshot, Summary, update_snapshot_summaries

    def step(branch: str, built: dict[int, tuple[BranchCommit, int]]) -> int:
        md = table.refresh().metadata
        ref = md.refs.get(branch)
        head = md.snapshot_by_id(ref.snapshot_id) if ref is not None else None
        if head is None or md.format_version != 2:  # v1 has no delete files; v3 snapshots also track row ids
            return 0
        if head.snapshot_id in built:  # built on this very head: only the sequence number may be stale
            pending, count = built[head.snapshot_id]
            if pending.stale(md):
                pending.renumber(table, before_write=lambda path: plan({path: "manifest-list"}))
            pending.commit(table)
            checkpoint("purge.after_dangling_commit")
            return count
        with retry.vanished_is_conflict(table):
            manifests = head.manifests(table.io)
            if not any(m.content == ManifestContent.DELETES for m in manifests):
                return 0
            live = {canonical(e.data_file.file_path) for m in manifests if m.content == ManifestContent.DATA
                    for e in m.fetch_manifest_entry(table.io, discard_deleted=True)}
            keep, dropped = [], []
            for m in manifests:
                entries = m.fetch_manifest_entry(table.io, discard_deleted=True) \
                    if m.content == ManifestContent.DELETES else None
                targets = [_delete_targets(table.io, e.data_file) for e in entries or []]
                if entries and all(t is not None and t and not {canonical(x) for x in t} & live for t in targets):
                    dropped += [e.data_file for e in entries]
                else:
                    keep.append(m)
        if not dropped:
            return 0
        snapshot_id, seq = md.new_snapshot_id(), md.next_sequence_number()
        path = table.location_provider().new_metadata_location(f"snap-{snapshot_id}-0-{uuid.uuid4()}.avro")
        plan({path: "manifest-list"})  # durable before the file exists: a crash from here on leaves it named
        with write_manifest_list(format_version=md.format_version, output_file=table.io.new_output(path),
                                 snapshot_id=snapshot_id, parent_snapshot_id=head.snapshot_id, sequence_number=seq,
                                 avro_compression="deflate") as writer:
            writer.add_manifests(keep)
        checkpoint("purge.dangling_staged")  # the manifest list is written, not referenced
        summary = update_snapshot_summaries(Summary(operation=Operation.DELETE, **{
            "removed-delete-files": str(len(dropped)),
            "removed-position-deletes": str(sum(int(f.record_count) for f in dropped)),
            "removed-files-size": str(sum(int(f.file_size_in_bytes) for f in dropped)),
            SUMMARY_SCRUB: "1", **LineageRecord(op="scrub", engine="pyarrow", status=MAINTENANCE).summary()}),
            previous_summary=head.summary.additional_properties if head.summary else None)
        snap = Snapshot(  # type: ignore[call-arg]  # pydantic model populated by field name
            snapshot_id=snapshot_id, parent_snapshot_id=head.snapshot_id, sequence_number=seq,
            timestamp_ms=max(int(time.time() * 1000), head.timestamp_ms), manifest_list=path, summary=summary,
            schema_id=head.schema_id)
        pending = BranchCommit.of(table, branch, snap, keep)
        built[head.snapshot_id] = (pending, len(dropped))
        pending.commit(table)  # a try lost to another branch's commits is re-numbered by the next (above)
        checkpoint("purge.after_dangling_commit")
        return len(dropped)

    total = 0
    branches = sorted(n for n, r in table.refresh().metadata.refs.items() if r.snapshot_ref_type == "branch")
    for branch in branches:
        built: dict[int, tuple[BranchCommit, int]] = {}
        try:
            total += retry.run(functools.partial(step, branch, built),
                               exhausted=functools.partial(_dangling_lost, table, branch))
        except BaseException:  # lost tries' manifest lists are journaled by ``plan``: a purge run again deletes them
            discard_quietly(table, [c for c, _ in built.values()])
            raise
        failed = discard_unlanded(table, [c for c, _ in built.values()])
        if delete_failures is not None:
            delete_failures.update(failed)
    return total
