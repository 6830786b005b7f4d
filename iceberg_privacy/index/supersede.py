"""What a compaction's commit supersedes: the bases it replaces and the sidecars it may delete afterwards.

Split from :mod:`iceberg_privacy.index.maintenance` (which builds and commits the compacted sidecar) because
deciding what a commit makes garbage is its own concern: every rule here errs towards keeping a file (a
reference that cannot be read or told apart stays; a file is deleted only once no metadata references it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index import exact
from iceberg_privacy.index.registry import PROPERTY_COMPACTED, is_sidecar_path, referenced_sidecar_locations
from iceberg_privacy.storage import canonical


def unregister_former_bases(table: Table, tx: Transaction, md: TableMetadata, has_exact: bool, keep: int | None) -> None:
    """Drop, in the compaction's commit, the statistics entries naming compacted sidecars it supersedes.

    A compacted sidecar is registered on the current or newest snapshot: maybe a branch or tag head, a rolled-back
    snapshot, or one the main line has moved past. Replacing only the property left that entry behind, so the old
    base stayed referenced (never deleted, probed as a delta) as long as its snapshot lived, for ever on a ref
    head; after an erasure it held the subject's keys and every purge failed its verification. Superseded: the
    property's sidecar and, with an exact column, any sidecar whose exact meta records a covered snapshot (only
    a base does: ones earlier versions left). The new base covers every retained snapshot's files, so they are
    then deleted as unreferenced. ``keep``: the new base's snapshot (its entry is replaced, not removed)."""
    current = md.properties.get(PROPERTY_COMPACTED)
    bases = {canonical(current)} if current else set()
    drop: set[int] = set()
    for stat in tx.table_metadata.statistics:  # after this commit's expiry, which drops expired snapshots' entries
        if stat.snapshot_id == keep or not is_sidecar_path(stat.statistics_path):
            continue
        if canonical(stat.statistics_path) in bases:
            drop.add(stat.snapshot_id)
        elif has_exact:
            try:
                idx, _ = exact.CACHE.get(table.io, stat.statistics_path, stat.file_size_in_bytes)
            except SidecarError:
                continue  # unreadable: cannot tell a base from a delta; a delta's reference must stay
            if idx is not None and idx.covered_snapshot_id is not None:
                drop.add(stat.snapshot_id)
    for sid in sorted(drop):  # one update each: pyiceberg's remove_statistics keeps only the last one chained
        tx.update_statistics().remove_statistics(sid).commit()


def referenced_right_before(io: Any, committed: TableMetadata, read_at: str) -> set[str]:
    """Sidecars the metadata this commit replaced referenced, when that is not the metadata the attempt read.

    A compaction's updates carry no requirement, so a REST catalog applies them on top of a rival compaction
    that committed in between: the rival's base, registered on the same newest snapshot, lost its references
    to this commit but was never among this attempt's inputs, and stayed on storage with its keys (a young
    orphan the purge's verification fails on). Read from the log entry of this commit's metadata; unreadable:
    left to the orphan sweep."""
    from pyiceberg.serializers import FromInputFile  # noqa: PLC0415 - only when a rival committed in between

    log = committed.metadata_log
    if not log or canonical(log[-1].metadata_file) == canonical(read_at):
        return set()
    try:
        return referenced_sidecar_locations(FromInputFile.table_metadata(io.new_input(log[-1].metadata_file)))
    except Exception:  # noqa: BLE001 - gone or unreadable: nothing is deleted on a guess
        return set()


def own_sidecars(location: str, paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split ``paths`` into the sidecars this table wrote (a sidecar's name under its ``location``, where
    :func:`new_sidecar_location` puts them) and the rest, which nothing here may delete: a
    ``privacy.sidecar.compacted`` set by hand or copied with another table's properties may name another
    table's sidecar, or any file at all (a data file once went with a compaction)."""
    root = canonical(location).rstrip("/") + "/"
    own: list[str] = []
    foreign: list[str] = []
    for p in paths:
        (own if is_sidecar_path(p) and canonical(p).startswith(root) else foreign).append(p)
    return own, foreign
