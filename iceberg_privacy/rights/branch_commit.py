"""A snapshot built once for one branch head, committed there until that branch moves.

A snapshot takes the table's next sequence number when it is built, and its manifest list records it. Any commit to
any branch between the build and the commit makes it stale: pyiceberg (and so SqlCatalog, which applies the updates to
its current metadata) refuses a snapshot whose sequence number is not above the table's last ("Cannot add snapshot
with sequence number N older than last sequence number M"), although the branch it goes to did not move. Rebuilding
the whole commit from the top on every try (reading the head's manifests again, deciding again) makes the window
between reading the metadata and committing longer than a busy writer's gap, and the commit never gets through.

So a lost try is re-based cheaply instead: when the branch is still at the head the snapshot was built on, only a
new manifest list is written with the table's next sequence number (the manifests it lists are kept: a manifest
written by this commit inherits its sequence number from the manifest list, see the Iceberg spec, "Sequence Number
Inheritance"; the others keep theirs), and nothing is read again. A commit loses for real only when its branch
moved, and the caller then builds it again on the new head.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pyiceberg.manifest import UNASSIGNED_SEQ, ManifestFile, write_manifest_list
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import (
    AddSnapshotUpdate,
    AssertRefSnapshotId,
    AssertTableUUID,
    SetSnapshotRefUpdate,
)

from iceberg_privacy.storage import canonical, delete_files

logger = logging.getLogger(__name__)


@dataclass
class BranchCommit:
    """One snapshot for ``branch``, built on its head ``head`` (the snapshot's parent)."""

    branch: str
    head: int
    snapshot: Snapshot
    manifests: list[ManifestFile]  # what its manifest list lists (read once)
    written: list[str] = field(default_factory=list)  # every manifest list written for it
    renumbered: int = 0

    @classmethod
    def of(cls, table: Table, branch: str, snapshot: Snapshot, manifests: list[ManifestFile] | None = None
           ) -> BranchCommit:
        assert snapshot.parent_snapshot_id is not None
        listed = snapshot.manifests(table.io) if manifests is None else manifests
        return cls(branch, snapshot.parent_snapshot_id, snapshot, list(listed), [snapshot.manifest_list])

    def stale(self, metadata: TableMetadata) -> bool:
        """Has the table's last sequence number reached the snapshot's (format v2+), so it cannot be added?"""
        last = getattr(metadata, "last_sequence_number", None)
        seq = self.snapshot.sequence_number
        return metadata.format_version >= 2 and last is not None and seq is not None and last >= seq

    def renumber(self, table: Table, before_write: Callable[[str], None] | None = None) -> None:
        """Give the snapshot the table's next sequence number (``table.metadata`` just read, the branch still at
        ``head``): one new manifest list, the same manifests. ``before_write`` gets its location first."""
        md = table.metadata
        sid = self.snapshot.snapshot_id
        seq = md.next_sequence_number()
        listed = []
        for m in self.manifests:
            if m.added_snapshot_id == sid:  # written by this commit: its sequence number comes from the list
                m = copy.copy(m)
                m.sequence_number = UNASSIGNED_SEQ
                m.min_sequence_number = UNASSIGNED_SEQ
            listed.append(m)
        path = table.location_provider().new_metadata_location(f"snap-{sid}-{len(self.written)}-{uuid.uuid4()}.avro")
        if before_write is not None:
            before_write(path)
        self.written.append(path)
        codec = md.properties.get(TableProperties.WRITE_AVRO_COMPRESSION, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT)
        with write_manifest_list(format_version=md.format_version, output_file=table.io.new_output(path),
                                 snapshot_id=sid, parent_snapshot_id=self.head, sequence_number=seq,
                                 avro_compression=codec) as writer:  # type: ignore[arg-type]  # the table's codec name
            writer.add_manifests(listed)
        old = self.snapshot
        self.snapshot = Snapshot(  # type: ignore[call-arg]  # pydantic model populated by field name
            snapshot_id=sid, parent_snapshot_id=self.head, sequence_number=seq,
            timestamp_ms=max(int(time.time() * 1000), old.timestamp_ms), manifest_list=path, summary=old.summary,
            schema_id=old.schema_id, first_row_id=old.first_row_id)
        self.renumbered += 1

    def commit(self, table: Table) -> int:
        """Commit the snapshot as the new head of the branch if the branch is still at ``head`` (compare-and-swap).
        A stale sequence number is refused (a conflict for :func:`iceberg_privacy._internal.retry.run`)."""
        updates = (AddSnapshotUpdate(snapshot=self.snapshot),
                   SetSnapshotRefUpdate(  # type: ignore[call-arg]  # pydantic model populated by field name
                       snapshot_id=self.snapshot.snapshot_id, parent_snapshot_id=self.head, ref_name=self.branch,
                       type=SnapshotRefType.BRANCH))
        requirements = (AssertTableUUID(uuid=table.metadata.table_uuid),
                        AssertRefSnapshotId(snapshot_id=self.head, ref=self.branch))  # type: ignore[call-arg]
        table.catalog.commit_table(table, requirements, updates)
        return self.snapshot.snapshot_id


def discard_unlanded(table: Table, commits: Iterable[BranchCommit]) -> dict[str, str]:
    """Delete the manifest lists written for ``commits`` that no snapshot of the table references (lost tries).
    Reads the table again first: a list is kept when any snapshot references it, or when the table cannot be read
    (a commit whose outcome is unknown may have landed). Returns location -> why a delete failed."""
    written = [p for c in commits for p in c.written]
    if not written:
        return {}
    md = table.refresh().metadata
    live = {canonical(s.manifest_list) for s in md.snapshots}
    return delete_files(table.io, [p for p in written if canonical(p) not in live]).failed


def discard_quietly(table: Table, commits: Iterable[BranchCommit]) -> None:
    """:func:`discard_unlanded` on the way out of an error, which stays the one raised (failures are logged)."""
    try:
        failed = discard_unlanded(table, commits)
    except Exception as exc:  # noqa: BLE001 - the commit's own error is the one to report
        failed = {"(the table could not be read)": str(exc)}
    for loc, why in failed.items():
        logger.warning("could not delete %s, a manifest list of a purge commit that did not land (%s); the purge "
                       "run again, or `iceberg-privacy cleanup TABLE --delete`, removes it", loc, why)
