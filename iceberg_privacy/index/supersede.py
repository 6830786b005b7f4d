"""What a compaction's commit supersedes: the bases it replaces and the sidecars it may delete afterwards.

Split from :mod:`iceberg_privacy.index.maintenance` (which builds and commits the compacted sidecar) because
deciding what a commit makes garbage is its own concern: every rule here errs towards keeping a file (a
reference that cannot be read or told apart stays; a file is deleted only once no metadata references it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyiceberg.manifest import DataFile, FileFormat
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy.config import BloomColumn
from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index import exact
from iceberg_privacy.index.files_blob import ColumnInfo
from iceberg_privacy.index.registry import PROPERTY_COMPACTED, is_sidecar_path, referenced_sidecar_locations
from iceberg_privacy.index.sidecar import CACHE
from iceberg_privacy.storage import canonical


def already_compact(table: Table, md: TableMetadata, columns: list[BloomColumn], live: dict[str, DataFile]) -> str | None:
    """The base's location when compacting again would write the same base and supersede nothing, else None.

    A scheduled ``sidecars compact`` on a quiet table rewrote the base and committed a new metadata version each
    run (growing the metadata log, racing the writers' commits for nothing). Nothing to do means all of: the base
    is registered on the current snapshot (so no commit came after it) and no former base is left to unregister
    (older snapshots' deltas stay referenced by their snapshots whatever a compaction does), it covers exactly the live files (same paths, row counts and sizes), it was written for today's
    column configuration (names, fpp, ndv; the same exact columns) in the current exact-index format, and its exact
    index covers the current snapshot, and every column has a filter (and exact keys) for every live file.
    Anything unreadable or different: compact (the answer is never at stake, only the work)."""
    base = md.properties.get(PROPERTY_COMPACTED)
    current = md.current_snapshot_id
    if not base or current is None:
        return None
    entry = next((s for s in md.statistics if s.snapshot_id == current), None)
    if entry is None or canonical(entry.statistics_path) != canonical(base):
        return None
    if _former_bases(table, md.statistics, {canonical(base)}, any(c.exact for c in columns), keep=current):
        return None  # a compaction would unregister (and then delete) those
    try:
        sidecar, _ = CACHE.get(table.io, entry.statistics_path, entry.file_size_in_bytes)
        idx, _ = exact.CACHE.get(table.io, entry.statistics_path, entry.file_size_in_bytes)
    except (SidecarError, OSError):
        return None
    # another engine's ORC/Avro files have no row groups to index: never in the exact index (index/build.py), so
    # without a Bloom column they have no entry in the sidecar at all
    parquet = {p: f for p, f in live.items() if f.file_format == FileFormat.PARQUET}
    listed = live if any(c.bloom for c in columns) else parquet
    if {(f.path, f.record_count, f.file_size_in_bytes) for f in sidecar.files} != {
            (p, f.record_count, f.file_size_in_bytes) for p, f in listed.items()} or len(sidecar.files) != len(listed):
        return None
    if dict(sidecar.columns) != {c.field_id: ColumnInfo(c.field_id, c.name, c.fpp, c.ndv) for c in columns}:
        return None
    try:  # every file has its filter: a partly covered base is compacted again (reported, and counted, as such)
        if any(sum(g.num_files for g in sidecar.groups(c.field_id)) != (len(live) if c.bloom else 0) for c in columns):
            return None  # (an exact-only column's Bloom filters are dropped by the next compaction)
    except (SidecarError, OSError):
        return None
    exact_ids = {c.field_id for c in columns if c.exact}
    if not exact_ids:
        return base if idx is None else None
    if (idx is None or set(idx.columns) != exact_ids or idx.covered_snapshot_id != current
            or idx.num_files != len(parquet)):
        return None
    return base if idx.meta_version == exact._META_VERSION else None


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
    # after this commit's expiry, which drops expired snapshots' entries
    for sid in sorted(_former_bases(table, tx.table_metadata.statistics, bases, has_exact, keep)):
        tx.update_statistics().remove_statistics(sid).commit()  # one update each: pyiceberg keeps only the last chained


def _former_bases(table: Table, statistics: Iterable[Any], bases: set[str], has_exact: bool, keep: int | None) -> set[int]:
    """Snapshots whose statistics entry names a superseded base (see :func:`unregister_former_bases`)."""
    drop: set[int] = set()
    for stat in statistics:
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
    return drop


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
