"""Purge after an erasure: make the erased rows' bytes disappear, then prove it.

An erase commit only removes the rows from the *current* snapshot; older snapshots still reference
the original files. Per table of an erase request, ``purge``:

1. expires every snapshot older than the table's erase commit (they can reach erased rows; a branch or
   tag that still reads a subject's row is an error naming the call that drops it), through
   :func:`iceberg_privacy.expire_snapshots`, which writes a compacted sidecar covering exactly the
   live files and deletes the superseded sidecars (so no sidecar covers a removed file);
2. deletes the files only expired snapshots referenced: data files, manifests, manifest lists, and
   orphans older than ``orphan_age`` (leftovers of crashed writers; younger files may belong to an
   in-flight commit and are left alone). Old ``metadata.json`` files are kept: they hold schemas,
   properties and snapshot summaries, no row values, and the metadata log still lists them;
3. verifies: reads EVERY Parquet file under the table location with pyarrow (not through Iceberg
   metadata, so an unreferenced file cannot hide), and counts rows whose identity columns (found by
   field id, so renames are safe) hash to a subject's keyed digest. The report holds counts only.

The table is marked verified in the journal only when no row is found, and the request completed
only when every table is verified. A failed verification is journaled and raised.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import identity_columns
from iceberg_privacy.errors import (
    CommitConflictError,
    RefHoldsSubjectError,
    RequestConflictError,
    StorageError,
    VerificationFailedError,
)
from iceberg_privacy.identities import extract_identities, rows_matching
from iceberg_privacy.index.maintenance import IndexReport, cleanup_orphans, expire_snapshots
from iceberg_privacy.index.registry import referenced_sidecar_locations
from iceberg_privacy.lineage.record import MAINTENANCE, LineageRecord
from iceberg_privacy.properties import ERASURE_SCRUB_SUMMARY as SUMMARY_SCRUB
from iceberg_privacy.rights.journal import (
    COMPLETED,
    PURGE_PLANNED,
    TABLE_PURGED,
    TABLE_VERIFIED,
    VERIFY_FAILED,
    Journal,
    erasure_snapshots,
)
from iceberg_privacy.rights.keyed import check_key_id, key_id, load_secret
from iceberg_privacy.rights.reports import PurgeReport, TablePurge, VerifyReport
from iceberg_privacy.rights.subjects import digest_subjects, digest_value_set, refs_holding
from iceberg_privacy.storage import canonical, delete_files, is_location, list_files, storage_errors

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
            out[m.manifest_path] = "manifest"
            for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
                out[e.data_file.file_path] = "data" if e.data_file.content.value == 0 else "delete"
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


def _scrub_head(table: Table) -> int | None:
    """If the head still lists the erased files as DELETED manifest entries (their column bounds can hold a
    subject's id), commit an empty append: it carries only manifests with live files. Returns its id."""

    def step() -> int | None:
        head = table.refresh().metadata.current_snapshot()
        if head is None or not any(m.deleted_files_count for m in head.manifests(table.io)):
            return None
        tx = table.transaction()
        producer = tx.update_snapshot(snapshot_properties={
            SUMMARY_SCRUB: "1", **LineageRecord(op="scrub", engine="pyarrow", status=MAINTENANCE).summary()}).fast_append()
        producer.commit()
        tx.commit_transaction()
        return compat.producer_snapshot_id(producer)

    return retry.run(step, exhausted=lambda tries, last: CommitConflictError(
        f"{table_name(table)}: metadata scrub lost to concurrent commits {tries} times; run the purge again"))


def _purge_table(table: Table, cutoff: int | None, orphan_age: timedelta, erase_ids: list[int],
                 planned: dict[str, str], plan: Callable[[dict[str, str]], None]) -> TablePurge:
    """Keep only the head snapshot (plus refs newer than the erase), delete what the others alone reached."""
    name = table_name(table)
    rep = TablePurge(name)
    table.refresh()  # refs holding the subjects were refused by the caller (_refs_in_the_way)
    originals = {**planned, **_rewritten_originals(table, erase_ids)}
    rep.scrub_snapshot = _scrub_head(table)

    def expire_step() -> tuple[dict[str, str], IndexReport]:
        md = table.refresh().metadata
        keep = {md.current_snapshot_id} | {r.snapshot_id for r in md.refs.values()}
        expire = {s.snapshot_id for s in md.snapshots} - keep
        before = {**originals, **_reachable(table, expire)}
        # Durable before expiry: once the snapshots are gone, this list is the only way a re-run after a
        # crash knows which files to delete (paths only, no identifiers).
        plan(before)
        return before, expire_snapshots(table, snapshot_ids=expire)

    before, idx = retry.run(expire_step, exhausted=lambda tries, last: CommitConflictError(
        f"{name}: snapshot expiry lost to concurrent commits {tries} times; run the purge again"))
    rep.expired_snapshots, rep.sidecar = idx.expired_snapshots, idx.sidecar_path
    rep.deleted_by_kind["sidecar"] = len(idx.deleted_sidecars)
    rep.delete_failures.update(idx.delete_failures)
    checkpoint("purge.after_expire")
    table.refresh()
    still = {canonical(p) for p in _reachable(table, {s.snapshot_id for s in table.metadata.snapshots})}
    still |= {canonical(loc) for loc in referenced_sidecar_locations(table.metadata)}
    doomed = {canonical(p): (p, kind) for p, kind in sorted(before.items())}
    outcome = delete_files(table.io, [p for key, (p, _) in sorted(doomed.items()) if key not in still])
    kinds = {p: kind for p, kind in doomed.values()}
    for p in outcome.deleted:
        rep.deleted_by_kind[kinds[p]] = rep.deleted_by_kind.get(kinds[p], 0) + 1
    rep.delete_failures.update(outcome.failed)
    checkpoint("purge.after_delete")
    orphans = cleanup_orphans(table, older_than=orphan_age, delete=True)
    if orphans.deleted:
        rep.deleted_by_kind["orphan"] = len(orphans.deleted)
    rep.delete_failures.update(orphans.delete_failures)
    rep.deleted_files = sum(rep.deleted_by_kind.values())
    return rep


def _refs_in_the_way(table: Table, digests: set[bytes], secret: bytes, request_id: str) -> None:
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


def _field_columns(schema: object, field_ids: dict[int, str]) -> dict[str, str]:
    """Top-level Parquet column name -> current identity column name, matched by Iceberg field id."""
    out: dict[str, str] = {}
    for f in schema:  # type: ignore[attr-defined]
        fid = (f.metadata or {}).get(b"PARQUET:field_id")
        if fid is not None and int(fid) in field_ids:
            out[f.name] = field_ids[int(fid)]
    return out


@storage_errors
def verify_table(table: Table, digests: set[bytes], secret: bytes) -> VerifyReport:
    """Scan every Parquet file under the table location for rows of the subjects (by keyed digest)."""
    rep = VerifyReport(table_name(table))
    cols = {c.field_id: c for c in identity_columns(table.schema(), table.properties)}
    for stored in list_files(table.io, table.location()):  # StorageError when the location cannot be listed
        if stored.size < 8:
            continue
        try:
            with table.io.new_input(stored.location).open(seekable=True) as fh:
                if fh.read(4) != b"PAR1":
                    continue
                fh.seek(0)
                pf = pq.ParquetFile(fh)
                rep.files_scanned += 1
                rep.rows_scanned += pf.metadata.num_rows
                mapping = _field_columns(pf.schema_arrow, {fid: c.name for fid, c in cols.items()})
                data = pf.read(columns=list(mapping)) if mapping else None
        except Exception:
            rep.unreadable.append(stored.location)
            continue
        if data is None:
            continue
        found = np.zeros(data.num_rows, dtype=bool)
        for pcol, name in mapping.items():
            arr = data.column(pcol)
            values, _ = extract_identities(arr)
            value_set = digest_value_set(values, cols[next(f for f, c in cols.items() if c.name == name)].leaf_type,
                                         secret, digests)
            if len(value_set):
                found |= rows_matching(arr, value_set)
        n = int(found.sum())
        if n:
            rep.rows_found += n
            rep.files_with_subjects.append(stored.location)
    return rep


@storage_errors
def purge(catalog: Catalog, request_id: str, *, home: str | os.PathLike[str] | None = None,
          orphan_age: timedelta = DEFAULT_ORPHAN_AGE, raise_on_failure: bool = True,
          secret: bytes | None = None) -> PurgeReport:
    """Expire, delete and verify for every erased table of ``request_id``; complete the request on success.

    Resumable like the erase: tables already purged are only verified again, verified ones skipped.
    Raises :class:`VerificationFailedError` (after journaling it) when a subject row is still found.
    """
    t0 = time.perf_counter()
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
    report = PurgeReport(request_id, {})
    digests = set(req.subjects)
    failed: list[str] = []
    for name, state in req.tables.items():
        if state.status == "verified":
            report.tables[name] = TablePurge(name, skipped="already verified")
            continue
        try:
            table = catalog.load_table(name)
        except NoSuchTableError:
            journal.record(request_id, TABLE_PURGED, table=name, detail={"note": "table no longer exists"})
            journal.record(request_id, TABLE_VERIFIED, table=name, detail={"note": "table no longer exists"})
            report.tables[name] = TablePurge(name, skipped="table no longer exists")
            continue
        # The newest erase commit of this request is the cutoff (a re-run after a failed verification
        # may have added one); without any, the head at erase time.
        commits = erasure_snapshots(table, request_id)
        # Paths only (no identifiers). Entries a version before 0.2 wrote without their scheme
        # ("bucket/key") are not locations: never resolve them against the working directory.
        planned = {p: k for r in journal.rows(request_id) if r["event"] == PURGE_PLANNED and r["table_name"] == name
                   for p, k in json.loads(r["detail"] or "{}").get("files", {}).items() if is_location(p)}

        def plan(files: dict[str, str], name: str = name) -> None:
            journal.append([journal.event(request_id, PURGE_PLANNED, table=name, detail={"files": files})])

        _refs_in_the_way(table, digests, secret, request_id)
        tp = _purge_table(table, commits[-1][0] if commits else state.snapshot_id, orphan_age, [c[0] for c in commits],
                          planned, plan)
        journal.record(request_id, TABLE_PURGED, table=name, files=tp.deleted_files,
                       detail={"expired_snapshots": len(tp.expired_snapshots), "deleted": tp.deleted_by_kind})
        tp.verify = verify_table(table, digests, secret)
        detail = {"files_scanned": tp.verify.files_scanned, "rows_scanned": tp.verify.rows_scanned,
                  "rows_found": tp.verify.rows_found, "files_with_subjects": len(tp.verify.files_with_subjects),
                  "unreadable": len(tp.verify.unreadable), "delete_failures": len(tp.delete_failures)}
        if tp.verify.ok and not tp.delete_failures:
            journal.record(request_id, TABLE_VERIFIED, table=name, rows=0, files=tp.verify.files_scanned, detail=detail)
        else:
            journal.record(request_id, VERIFY_FAILED, table=name, rows=tp.verify.rows_found, detail=detail)
            failed.append(name)
        report.tables[name] = tp
    if not failed:
        checkpoint("purge.before_complete")
        journal.record(request_id, COMPLETED)
        report.completed = True
    report.seconds = time.perf_counter() - t0
    undeleted = {n: report.tables[n].delete_failures for n in failed if report.tables[n].delete_failures}
    if undeleted and raise_on_failure:
        name, fails = next(iter(undeleted.items()))
        raise StorageError(
            f"request {request_id}: the purge could not delete {sum(map(len, undeleted.values()))} file(s) of "
            f"{', '.join(undeleted)}, e.g. {next(iter(fails.values()))}. The request stays open: fix the storage "
            f"permission or location, then run `iceberg-privacy requests run {request_id}` (or purge again)"
        )
    if failed and raise_on_failure:
        raise VerificationFailedError(
            f"request {request_id}: rows of the subjects are still in {', '.join(failed)} "
            f"({sum(v.rows_found for n in failed if (v := report.tables[n].verify) is not None)} rows; files are "
            "listed in the purge report). "
            "Likely rows a writer committed without the forget list (run the request again: `iceberg-privacy "
            f"requests run {request_id}` erases and purges them), or an uncommitted file of a crashed writer younger "
            f"than the orphan age ({orphan_age}): once no writer is running, purge again with a smaller orphan_age "
            "(CLI: --orphan-age-hours)"
        )
    return report
