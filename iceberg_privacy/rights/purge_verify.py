"""Verification of a purge: is any trace of the subjects left in the table's files, names and refs?

Split from purge.py (which expires, deletes and drives the request) because verification is its own question
with its own readers: every file under the table's roots and write paths is listed and read (Parquet rows by
identity column; manifests, manifest lists, metadata and statistics files for traces, see
:mod:`iceberg_privacy.rights.traces`), and what holds a trace is named: a branch (erased by running the request
again) or a tag (which only ``remove_tag`` releases). ``verify_table`` is also the ``verify`` of the Spark
engine's path (the files are read on executors).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pyiceberg.io import FileIO
from pyiceberg.table import Table

from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import identity_columns
from iceberg_privacy.errors import (
    RefHoldsSubjectError,
)
from iceberg_privacy.index.maintenance import live_data_files
from iceberg_privacy.index.orphans import referenced_files
from iceberg_privacy.rights.filework import FileScan, FileScanner, identity_names, scan_stored_file
from iceberg_privacy.rights.purge_foreign import (
    statistics_of,
)
from iceberg_privacy.rights.reports import RefHold, VerifyReport
from iceberg_privacy.rights.subjects import digest_subjects, refs_holding
from iceberg_privacy.rights.traces import (
    DELETE_FILE_TRACE,
    SubjectMatcher,
    Trace,
    partition_stats_traces,
    scan_file,
)
from iceberg_privacy.storage import (
    StoredFile,
    canonical,
    list_tree,
    other_table_roots,
    outside_roots,
    storage_errors,
    table_roots,
)

logger = logging.getLogger(__name__)


def refs_in_the_way(table: Table, digests: set[bytes], secret: bytes, request_id: str) -> None:
    """Refuse when a branch or tag (other than main) still reads rows of the subjects, naming each one with
    the command that drops it. Refs of a table that never held the subjects are never in the way."""
    table.refresh()
    ts = digest_subjects([table], digests)[0]
    head = table.metadata.current_snapshot()
    clean = ({e.data_file.file_path for m in head.manifests(table.io)
              for e in m.fetch_manifest_entry(table.io, discard_deleted=True)} if head is not None else set())
    held = refs_holding(ts, secret, clean=clean)  # the head's files were just erased: only the others are read
    if held:
        steps = "; ".join(h.advice for h in held)
        raise RefHoldsSubjectError(
            f"request {request_id}: {', '.join(f'{h.kind} {h.name!r}' for h in held)} of {table_name(table)} still "
            f"read rows of the subjects. A branch is erased by running the request again (`iceberg-privacy requests "
            f"run {request_id}`); a tag must be dropped or moved: {steps}. Then run the request (or purge) again",
            next_step=f"`iceberg-privacy requests run {request_id}` (erases branches); {steps}",
        )


def tags_holding_traces(table: Table, verify: VerifyReport) -> list[RefHold]:
    """Tags whose snapshot alone references a manifest or manifest list the verification found naming a subject.

    A tag on a snapshot made by a delete (another tool's ``DELETE``, an earlier erasure) reads no row of the
    subject, so it is not in the way by data, but its manifests list the removed file as a ``DELETED`` entry
    whose column bounds and partition tuple hold the id. The purge rewrites branch heads (the scrub), never a
    tag: running the request again cannot clear it, dropping or moving the tag does. So with the statistics files
    another engine registered for the tag's snapshot (partition tuples): a tag keeps them from expiring."""
    hits = {t.location for t in verify.traces
            if t.referenced and t.kind in ("manifest", "manifest-list", "partition-statistics", "statistics")}
    if not hits:
        return []
    md = table.metadata

    def files(snapshot_id: int) -> set[str]:
        snap = md.snapshot_by_id(snapshot_id)
        if snap is None:
            return set()
        return ({relative_to_table(table, snap.manifest_list)} | {relative_to_table(table, m.manifest_path) for m in snap.manifests(table.io)}
                | {relative_to_table(table, loc) for loc in statistics_of(md, {snapshot_id})})

    on_branches: set[str] = set()
    for ref in md.refs.values():
        if ref.snapshot_ref_type == "branch":
            on_branches |= files(ref.snapshot_id)
    return [RefHold(table_name(table), name, "tag", ref.snapshot_id) for name, ref in sorted(md.refs.items())
            if ref.snapshot_ref_type == "tag" and (files(ref.snapshot_id) - on_branches) & hits]


def relative_to_table(table: Table, location: str) -> str:
    base = canonical(table.location())
    key = canonical(location)
    return key[len(base):].lstrip("/") if key.startswith(base) else location


def _scan_here(table: Table, files: list[StoredFile], cols: dict[int, Any], secret: bytes,
               digests: set[bytes]) -> list[FileScan]:
    names = identity_names(table, cols)
    return [scan_stored_file(table.io, f, cols, secret, digests, names) for f in files]


def _exists(io: FileIO, location: str) -> bool:
    """Does ``location`` still exist? An error while asking counts as yes: only a clear "no" excuses a read."""
    try:
        return bool(io.new_input(location).exists())
    except Exception:
        return True


@storage_errors
def verify_table(table: Table, digests: set[bytes], secret: bytes, *, subjects: Iterable[Any] | None = None,
                 spark: Any | None = None) -> VerifyReport:
    """Look for the subjects (by keyed digest) in every file and name under the table location.

    Parquet files: rows whose identity columns (by field id) hash to a subject. Every other file:
    manifests (partition tuples, column bounds), manifest lists (partition summaries), metadata JSON
    (snapshot summaries, refs, paths) and any other file's embedded ``key=value`` paths, see
    :mod:`iceberg_privacy.rights.traces`. Every file and directory name. ``subjects`` (clear values, used
    in memory only) lets truncated string bounds be matched as prefixes. With ``spark`` the files are
    listed here and read on executors (the other checks stay here).
    """
    rep = VerifyReport(table_name(table))
    matcher = SubjectMatcher(table, digests, secret, subjects)
    cols = {c.field_id: c for c in identity_columns(table.schema(), table.properties)}
    files, dirs = list_roots(table)  # StorageError when a location cannot be listed
    referenced = referenced_files(table)
    # another table stored inside one of the roots: its files are checked by its own requests, not read here
    nested = other_table_roots(table_roots(table.location(), table.properties),
                               [f.location for f in files if canonical(f.location) not in referenced])
    files = [f for f in files if outside_roots(nested, f.location)]
    dirs = [d for d in dirs if outside_roots(nested, d)]
    files += _live_files_elsewhere(table, files)
    others: list[tuple[StoredFile, bytes]] = []
    clean: set[str] = set()
    scan: FileScanner = _scan_here
    if spark is not None:
        from iceberg_privacy.spark.rights import verify_scanner  # the core never imports Spark unless asked

        scan = verify_scanner(spark)
    scanned = list(zip(files, scan(table, files, cols, secret, digests), strict=True))
    # names after the rows: a truncate-partition value clean files also have is not a trace (explain)
    matcher.explain(table, {canonical(f.location) for f, got in scanned
                            if got.parquet and not got.unreadable and not got.found})
    for stored, got in scanned:
        rel = relative_to_table(table, stored.location)
        rep.names_checked += 1
        if (what := matcher.name(rel)) is not None:
            rep.traces.append(Trace(matcher.redact(rel), "name", what, canonical(stored.location) in referenced))
        if got.parquet:
            rep.files_scanned += 1
            rep.rows_scanned += got.rows
        if got.unreadable:
            if not _exists(table.io, stored.location):
                continue  # deleted since it was listed (a concurrent purge or cleanup): it holds nothing now
            rep.unreadable.append(matcher.redact(rel))
            continue
        if not got.parquet:
            others.append((stored, got.head))
            continue
        if got.found and got.deleted_rows:  # rows a delete file keeps in its ``row`` column: not live rows
            rep.traces.append(Trace(matcher.redact(rel), "position-delete", f"{got.found} deleted row(s) in its row "
                                    f"column{DELETE_FILE_TRACE}", canonical(stored.location) in referenced))
        elif got.found:
            rep.rows_found += got.found
            rep.files_with_subjects.append(matcher.redact(rel))
            rep.unreferenced_with_subjects += canonical(stored.location) not in referenced
        else:
            clean.add(canonical(stored.location))
    stats = {canonical(loc) for loc in statistics_of(table.metadata, None)}
    for stored, got in scanned:  # partition statistics (referenced, or left unreferenced) hold partition tuples
        key = canonical(stored.location)
        if not got.parquet or got.orc or got.unreadable or (key in referenced and key not in stats):
            continue
        rel = relative_to_table(table, stored.location)
        try:
            found = partition_stats_traces(matcher, table, stored.location)
        except Exception:
            if not _exists(table.io, stored.location):
                continue
            rep.unreadable.append(matcher.redact(rel))
            continue
        for what, unverifiable in dict.fromkeys(found):
            rep.traces.append(Trace(matcher.redact(rel), "partition-statistics", what, key in referenced, unverifiable))
    for stored, head in others:  # after the Parquet files: bounds of clean live files need no prefix check
        rel = relative_to_table(table, stored.location)
        try:
            kind, traces = scan_file(matcher, table, stored, head, clean)
        except Exception:
            if not _exists(table.io, stored.location):
                continue  # deleted since it was listed
            rep.unreadable.append(matcher.redact(rel))
            continue
        rep.other_files_scanned += 1
        for what, unverifiable in dict.fromkeys(traces):
            rep.traces.append(Trace(matcher.redact(rel), kind, what, canonical(stored.location) in referenced,
                                    unverifiable))
    for d in dirs:
        rel = relative_to_table(table, d)
        rep.names_checked += 1
        if (what := matcher.name(rel)) is not None:
            # Only the deepest directory naming a subject is reported, not each parent again.
            if not any(t.kind == "directory" and t.location.startswith(matcher.redact(rel) + "/") for t in rep.traces):
                rep.traces.append(Trace(matcher.redact(rel), "directory", what, False))
    rep.notes = sorted(matcher.notes)
    return rep


def list_roots(table: Table) -> tuple[list[StoredFile], list[str]]:
    """Files and directories under the table location and under every write path property outside it
    (``write.data.path``, ``write.metadata.path``: a crashed writer leaves its files there, not under the
    location)."""
    files: list[StoredFile] = []
    dirs: list[str] = []
    for root in table_roots(table.location(), table.properties):
        f, d = list_tree(table.io, root)
        files += f
        dirs += d
    return files, dirs


def _live_files_elsewhere(table: Table, listed: list[StoredFile]) -> list[StoredFile]:
    """Data files the table's snapshots reference outside every listed root (``add_files`` of files stored
    elsewhere, a write path changed since): they are read as well, never assumed clean."""
    seen = {canonical(f.location) for f in listed}
    return [StoredFile(path, int(df.file_size_in_bytes), None) for path, df in live_data_files(table).items()
            if canonical(path) not in seen]
