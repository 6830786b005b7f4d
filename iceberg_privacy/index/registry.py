"""Where a table's sidecars are registered, how readers find them, and which one covers a file.

A sidecar is keyed by data-file *path*, not by snapshot: data files are immutable, so any readable
sidecar that lists a file can answer for it at any snapshot. Each sidecar is referenced from up to
three places, all written in the same atomic commit as whatever made it:

* the **statistics list** (``metadata.statistics``): an entry for the snapshot that added it, with an
  *empty* blob-metadata list. Vanilla pyiceberg accepts this (it rejects unknown blob types) and
  Java's orphan-file cleanup treats the file as reachable.
* the **snapshot summary** of that snapshot: ``privacy.sidecar.path`` / ``.bytes`` / ``.files`` /
  ``.columns``. Survives Spark's ``compute_table_stats`` replacing the statistics entry.
* the table property ``privacy.sidecar.compacted`` (+ ``-bytes``) for a compacted sidecar covering
  all live files. Survives snapshot expiry.

Readers try them in that order of usefulness (compacted first) and stop once every file is covered.
Any reference that is missing, unreadable or corrupt is skipped with a warning: its files are then
*scanned*, never skipped. Losing references costs speed only; ``backfill``/``compact`` restore it.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyiceberg.io import FileIO
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.statistics import StatisticsFile

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index.puffin import PuffinFooter
from iceberg_privacy.index.sidecar import CACHE, FILE_SUFFIX, LEGACY_SUFFIXES, BloomGroup, Sidecar
from iceberg_privacy.properties import SIDECAR_BYTES_SUMMARY as SUMMARY_BYTES
from iceberg_privacy.properties import SIDECAR_COLUMNS_SUMMARY as SUMMARY_COLUMNS
from iceberg_privacy.properties import SIDECAR_COMPACTED_BYTES_PROPERTY as PROPERTY_COMPACTED_BYTES
from iceberg_privacy.properties import SIDECAR_COMPACTED_PROPERTY as PROPERTY_COMPACTED
from iceberg_privacy.properties import SIDECAR_FILES_SUMMARY as SUMMARY_FILES
from iceberg_privacy.properties import SIDECAR_PATH_SUMMARY as SUMMARY_PATH

logger = logging.getLogger(__name__)



class SidecarWarning(UserWarning):
    """A sidecar could not be used; the files it covers are scanned instead."""


@dataclass(frozen=True)
class SidecarRef:
    location: str
    size: int | None
    source: str  # "property", "statistics" or "summary"
    snapshot_id: int | None


def is_sidecar_path(path: str) -> bool:
    """Is this a sidecar's name (the current ``.privacy-sidecar.stats`` or a legacy suffix)?"""
    return path.endswith((FILE_SUFFIX, *LEGACY_SUFFIXES))


def new_sidecar_location(metadata: TableMetadata, snapshot_id: int) -> str:
    return f"{metadata.location.rstrip('/')}/metadata/{snapshot_id}-{uuid.uuid4()}{FILE_SUFFIX}"


def statistics_entry(snapshot_id: int, location: str, footer: PuffinFooter) -> StatisticsFile:
    """The metadata ``statistics`` entry that makes a sidecar reachable without naming its blobs."""
    return StatisticsFile(  # type: ignore[call-arg]  # pydantic model populated by field name
        snapshot_id=snapshot_id,
        statistics_path=location,
        file_size_in_bytes=footer.file_size,
        file_footer_size_in_bytes=footer.footer_size,
        blob_metadata=[],
    )


def summary_properties(location: str, footer: PuffinFooter, files: int, columns: list[str]) -> dict[str, str]:
    return {
        SUMMARY_PATH: location,
        SUMMARY_BYTES: str(footer.file_size),
        SUMMARY_FILES: str(files),
        SUMMARY_COLUMNS: ",".join(columns),
    }


def _size(value: str | None) -> int | None:
    """A recorded byte size, or None when absent or malformed (then the size is not checked)."""
    try:
        return int(value) if value else None
    except ValueError:
        return None


def sidecar_refs(metadata: TableMetadata) -> list[SidecarRef]:
    """Every sidecar the metadata references, most useful first, without duplicates."""
    refs: list[SidecarRef] = []
    props = metadata.properties
    if props.get(PROPERTY_COMPACTED):
        refs.append(SidecarRef(props[PROPERTY_COMPACTED], _size(props.get(PROPERTY_COMPACTED_BYTES)), "property", None))
    seq = {s.snapshot_id: s.sequence_number or 0 for s in metadata.snapshots}
    stats = sorted(
        (s for s in metadata.statistics if is_sidecar_path(s.statistics_path)),
        key=lambda s: seq.get(s.snapshot_id, -1),
        reverse=True,
    )
    refs += [SidecarRef(s.statistics_path, s.file_size_in_bytes, "statistics", s.snapshot_id) for s in stats]
    for snap in sorted(metadata.snapshots, key=lambda s: s.sequence_number or 0, reverse=True):
        extra = snap.summary.additional_properties if snap.summary else {}
        if SUMMARY_PATH in extra:
            refs.append(SidecarRef(extra[SUMMARY_PATH], _size(extra.get(SUMMARY_BYTES)), "summary", snap.snapshot_id))
    seen: set[str] = set()
    unique = []
    for r in refs:
        if r.location not in seen:
            seen.add(r.location)
            unique.append(r)
    return unique


def referenced_sidecar_locations(metadata: TableMetadata) -> set[str]:
    return {r.location for r in sidecar_refs(metadata)}


@dataclass
class Assignment:
    """Files of one bloom group that a probe must test, with their column positions in the group."""

    sidecar: Sidecar
    group: BloomGroup
    positions: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@dataclass
class Coverage:
    assignments: list[Assignment]
    uncovered: set[str]
    sidecars_opened: int
    bytes_read: int
    warnings: list[str]
    requests: int = 0  # reads sent to storage (opens and ranged reads), footer and directories included


def warn(message: str) -> str:
    logger.warning(message)
    warnings.warn(message, SidecarWarning, stacklevel=3)
    return message


def resolve_coverage(io: FileIO, metadata: TableMetadata, field_id: int, paths: set[str],
                     expected: Mapping[str, tuple[int, int]] | None = None) -> Coverage:
    """Find, for each data file path, a readable sidecar group holding its filter for ``field_id``.

    ``expected`` (path -> the live file's record count and byte size): a sidecar whose record of the file
    differs describes other bytes at that path (a path reused after the file left the table, e.g. by
    ``add_files``): its filter is stale and is not used (another sidecar may cover the file, else it is scanned).
    """
    remaining = set(paths)
    by_group: dict[tuple[str, int], Assignment] = {}
    opened, bytes_read, requests, notes = 0, 0, 0, []
    for ref in sidecar_refs(metadata):
        if not remaining:
            break
        sc: Sidecar | None = None
        before = before_requests = 0
        try:
            sc, opened_now = CACHE.get(io, ref.location, ref.size)
            if not opened_now:  # a fresh open fetched footer and file list: count them all
                before, before_requests = sc.bytes_read, sc.reader.requests
            matched = [p for p in remaining if p in sc.ordinal_of] if len(remaining) < len(sc.ordinal_of) else [
                f.path for f in sc.files if f.path in remaining
            ]
            if not matched:
                continue
            groups = sc.groups(field_id)
        except SidecarError as exc:
            notes.append(warn(f"ignoring sidecar ({ref.source}) {ref.location}: {exc}; its files will be scanned"))
            continue
        finally:
            if sc is not None:
                bytes_read += sc.bytes_read - before
                requests += sc.reader.requests - before_requests
        opened += 1
        where: dict[int, tuple[int, int]] = {}
        for gi, g in enumerate(groups):
            for pos, ordinal in enumerate(g.ordinals.tolist()):
                where[ordinal] = (gi, pos)
        stale = 0
        for p in matched:
            hit = where.get(sc.ordinal_of[p])
            if hit is None:
                continue  # this sidecar predates the column's configuration; another may cover it
            if expected is not None and p in expected:
                rec = sc.files[sc.ordinal_of[p]]
                if (rec.record_count, rec.file_size_in_bytes) != tuple(expected[p]):
                    stale += 1
                    continue
            gi, pos = hit
            a = by_group.setdefault((sc.location, gi), Assignment(sc, groups[gi]))
            a.positions.append(pos)
            a.paths.append(p)
            remaining.discard(p)
        if stale:
            notes.append(warn(f"sidecar ({ref.source}) {ref.location} describes {stale} file(s) whose record count or "
                              "size differ from the table's (a reused path): its filters for them are stale and "
                              "not used; those files are scanned unless another sidecar covers them"))
    return Coverage(list(by_group.values()), remaining, opened, bytes_read, notes, requests)


def outside_writes(metadata: TableMetadata) -> list[int]:
    """Snapshots of the current branch that added data files without this library, newest first.

    Every commit the library makes that adds data files (append, overwrite, Spark, derive, erasure
    rewrites) stamps ``privacy.*`` keys into its snapshot summary; a snapshot that added files
    without any was written by pyiceberg's own ``append``/``overwrite`` or another engine. Its rows
    were not screened by the forget list and its files have no filters (lookups scan them).
    """
    out: list[int] = []
    snap = metadata.current_snapshot()
    while snap is not None:
        props = snap.summary.additional_properties if snap.summary is not None else {}
        if int(props.get("added-data-files", "0") or 0) > 0 and not any(k.startswith("privacy.") for k in props):
            out.append(snap.snapshot_id)
        snap = metadata.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    return out
