"""Access requests: export every row of the subjects, one file per table plus a manifest.

Each table declaring identity columns (or each table named) is planned with the pruning planner
(one plan per identity column, candidate files unioned) and only the candidate files are read. The
rows of the subjects are written to ``<out>/<namespace.table>.parquet`` (or ``.jsonl``), and
``<out>/manifest.json`` lists per table the snapshot read, the row count, the files read and the
file's SHA-256, so the person (or an auditor) can check what they received. Output is
deterministic: rows in data-file path order then file order, JSON with sorted keys.

The request is journaled before any read, like an erasure; re-running the same request id exports
again (the files are overwritten, the journal records each table once).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.io import FileIO
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType

from iceberg_privacy._internal import jsontext
from iceberg_privacy.errors import ConfigurationError
from iceberg_privacy.rights.filework import candidate_rows as _rows
from iceberg_privacy.rights.filework import no_rows
from iceberg_privacy.rights.journal import COMPLETED, TABLE_EXPORTED, Journal, RequestState
from iceberg_privacy.rights.reports import MANIFEST, AccessReport, TableExport
from iceberg_privacy.rights.subjects import (
    CandidatePlan,
    TableSubjects,
    match_mask,
    plan_candidates,
    resolve_subjects,
)
from iceberg_privacy.storage import (
    canonical,
    catalog_io,
    child,
    is_local,
    local_path,
    table_roots,
    write_location,
)

FORMATS = ("parquet", "jsonl")


def _encode(rows: pa.Table, fmt: str) -> bytes:
    if fmt == "parquet":
        buf = pa.BufferOutputStream()
        pq.write_table(rows, buf)
        return buf.getvalue().to_pybytes()
    # a float column may hold NaN/infinity, which bare is not JSON: the subject's copy must parse anywhere
    return "".join(jsontext.dumps(rec, default=_json_default, sort_keys=True) + "\n"
                   for rec in rows.to_pylist()).encode()


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


def _with_branches(ts: TableSubjects, plan: CandidatePlan) -> CandidatePlan:
    """``plan`` (the head of ``main``) plus the candidate files only another branch reads: a branch is live data
    (an erasure erases it too), so the person's rows there are theirs to receive. Each file is read once."""
    md = ts.table.metadata
    by_path = {t.file.file_path: t for t in plan.tasks}
    for name, ref in sorted(md.refs.items()):
        if name == MAIN_BRANCH or ref.snapshot_ref_type != SnapshotRefType.BRANCH or md.snapshot_by_id(ref.snapshot_id) is None:
            continue
        for task in plan_candidates(ts, ref.snapshot_id).tasks:
            by_path.setdefault(task.file.file_path, task)
    if len(by_path) == len(plan.tasks):
        return plan
    return CandidatePlan(plan.snapshot_id, [by_path[p] for p in sorted(by_path)], plan.files_total, plan.per_column)


def _read(location: str, io: FileIO | None) -> bytes | None:
    """The bytes at a local path or FileIO location, None when nothing is there."""
    if io is None:
        try:
            with open(local_path(location), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
    inp = io.new_input(location)
    if not inp.exists():
        return None
    with inp.open() as fh:
        return fh.read()


def _claim(report: AccessReport, io: FileIO | None, req: RequestState, names: list[str], format: str) -> None:
    """Make ``report.out`` this request's export folder, or refuse when it holds another export.

    A ``manifest.json`` naming this request (an earlier run, or one a crash interrupted) is ours to overwrite; one
    naming another request, one that does not parse, or export files without a manifest are another export's, never
    overwritten silently. The folder is claimed by writing a provisional manifest (``"partial": true``, no tables)
    before any table file, so an interrupted export is known as this request's when it is run again.
    """
    def refuse(why: str) -> None:
        raise ConfigurationError(
            f"access output {report.out} {why}: an export is never overwritten by another request's. Pass another "
            f"out (an empty folder per request), or delete that export once it was delivered, then run request "
            f"{req.request_id} again; nothing was exported")

    def check_owner(raw: bytes) -> None:
        try:
            owner = json.loads(raw).get("request_id")
        except (ValueError, AttributeError):
            owner = None
        if owner != req.request_id:
            refuse(f"already holds {MANIFEST} of {'request ' + repr(owner) if isinstance(owner, str) else 'something else'}")

    raw = _read(report.manifest_path, io)
    if raw is not None:
        check_owner(raw)
        return
    taken = [n for n in names if _read(child(report.out, n), io) is not None]
    if taken:
        refuse(f"already holds {', '.join(taken)} without a {MANIFEST} of request {req.request_id!r}")
    provisional = (json.dumps({"request_id": req.request_id, "received": req.received.isoformat(), "format": format,
                               "tables": [], "partial": True}, indent=2, sort_keys=True) + "\n").encode()
    if io is not None:  # an object store has no create-if-absent through FileIO: a concurrent claim is not detected
        write_location(report.manifest_path, provisional, io)
        return
    # A local folder is claimed atomically: another export claiming it between the read above and this write (two
    # processes, one out) must not be overwritten, or the two exports' files mix under one request's manifest.
    path = local_path(report.manifest_path)
    tmp = write_location(f"{path}.{os.getpid()}-{os.urandom(4).hex()}.claim", provisional)
    try:
        os.link(local_path(tmp), path)  # fails when the manifest exists
    except FileExistsError:
        check_owner(_read(report.manifest_path, None) or b"")
    except OSError:  # a filesystem without hard links: claimed by a plain write, as on an object store
        write_location(report.manifest_path, provisional)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_path(tmp))


RowsOf = Callable[[TableSubjects, CandidatePlan, bytes], pa.Table]


def _engine_rows(spark: Any | None) -> RowsOf:
    if spark is None:
        return _rows
    from iceberg_privacy.spark.rights import access_rows  # the core never imports Spark unless asked

    return access_rows(spark)


class SharedRows:
    """The rows of many access requests (a queue pass), each table planned and read ONCE for all of them.

    ``values`` are every subject value of the requests (their linked identifiers included). The first request
    exporting a table plans that table for all the values (Bloom-pruned, branches included) and reads the
    candidate files once; each request then keeps, in memory, the rows its own subjects match (the same mask a
    one-request read applies). The candidate files of one request are a subset of the shared plan's (more values
    only keep more files) and the read keeps each file's rows in file order, files in path order, so a request
    receives exactly the rows, in the order, a read of its own would give. A request matched by keyed hash only
    (``by_digest``), or a table whose head moved since the shared read, is read on its own.
    """

    def __init__(self, values: Sequence[Any], secret: bytes, *, spark: Any | None = None) -> None:
        self.values = list(values)
        self.secret = secret
        self.read: RowsOf = _engine_rows(spark)
        self._rows: dict[tuple[str, int], tuple[int | None, pa.Table]] = {}  # (name, id(table)) -> (snapshot, rows)

    def __call__(self, ts: TableSubjects, plan: CandidatePlan, secret: bytes) -> pa.Table:
        if ts.by_digest or not plan.tasks or secret != self.secret:
            return self.read(ts, plan, secret)
        key = (ts.name, id(ts.table))
        if key not in self._rows:
            union = resolve_subjects([ts.table], self.values, self.secret, strict=False)
            if not union or union[0].by_digest:
                return self.read(ts, plan, secret)
            uplan = _with_branches(union[0], plan_candidates(union[0], cached_manifests=True))
            self._rows[key] = (uplan.snapshot_id, self.read(union[0], uplan, self.secret))
        snapshot_id, rows = self._rows[key]
        if snapshot_id != plan.snapshot_id:
            return self.read(ts, plan, secret)
        mine = rows.filter(pa.array(match_mask(rows, ts, secret))) if rows.num_rows else rows
        return mine if mine.num_rows else no_rows(ts.table.metadata)


def export_subjects(catalog: Catalog, req: RequestState, resolved: Sequence[TableSubjects], secret: bytes, *,
                    journal: Journal, out: str | os.PathLike[str], format: str = "parquet",
                    spark: Any | None = None, shared: SharedRows | None = None,
                    events: list[dict[str, Any]] | None = None) -> AccessReport:
    """Export the rows of a journaled access request's subjects and complete the request.

    Writes one ``<table>.parquet``/``.jsonl`` per table and ``manifest.json`` (table, snapshot id,
    row count, sha256) under ``out``. Unknown subjects give empty files, not an error. With ``spark``
    executors read the candidate files and keep the subjects' rows; this process writes the export.

    A queue pass exporting many requests passes ``shared`` (each table read once for all of them) and
    ``events``: the request's ``table-exported``/``completed`` events are then added to that list, for the
    caller to journal in one commit with the other requests' (instead of three commits per request); the
    request is complete only once the caller has appended them.
    """
    rows_of: RowsOf = shared if shared is not None else _engine_rows(spark)
    t0 = time.perf_counter()
    outdir = os.fspath(out)
    # An export under a table location (or a write path of the table outside it, which the purge's verification
    # lists too) is that table's orphan: purged, and a trace forever. canonical() resolves every spelling of a
    # local folder (relative, /x, file:/x, file:///x) to one key.
    target = canonical(outdir).rstrip("/") + "/"
    for ts in resolved:
        for root in table_roots(ts.table.location(), ts.table.properties):
            if target.startswith(canonical(root).rstrip("/") + "/"):
                raise ConfigurationError(
                    f"access output {outdir} is inside the location of table {ts.name} ({root}): the export would "
                    "be taken for a leftover of that table (deleted by a purge, and failing the verification of an "
                    "erasure of the same person). Write it outside every table location and write path"
                )
    io = None if is_local(outdir) else catalog_io(catalog, outdir)  # the catalog's endpoint and credentials
    report = AccessReport(req.request_id, outdir)
    _claim(report, io, req, [f"{ts.name}.{format}" for ts in resolved], format)
    for ts in sorted(resolved, key=lambda t: t.name):
        # a queue pass plans every request at the same heads: each manifest decoded once, not per request
        plan = _with_branches(ts, plan_candidates(ts, cached_manifests=shared is not None))
        rows = rows_of(ts, plan, secret)
        data = _encode(rows, format)
        sha = hashlib.sha256(data).hexdigest()
        path = write_location(child(outdir, f"{ts.name}.{format}"), data, io)
        report.tables[ts.name] = TableExport(ts.name, plan.snapshot_id, rows.num_rows, str(path), sha,
                                             len(plan.tasks), plan.files_total, plan.explain())
        step = dict(table=ts.name, snapshot_id=plan.snapshot_id, rows=rows.num_rows, files=len(plan.tasks),
                    detail={"sha256": sha, "format": format})
        if events is None:
            journal.record(req.request_id, TABLE_EXPORTED, **step)
        else:
            events.append(journal.event(req.request_id, TABLE_EXPORTED, **step))
    manifest = {
        "request_id": req.request_id,
        "received": req.received.isoformat(),
        "format": format,
        "tables": [
            {"table": t.table, "snapshot_id": t.snapshot_id, "rows": t.rows, "file": t.path.rstrip("/").rsplit("/", 1)[-1],
             "sha256": t.sha256, "files_read": t.files_read, "files_total": t.files_total}
            for t in report.tables.values()
        ],
    }
    write_location(report.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), io)
    if events is None:
        journal.record(req.request_id, COMPLETED)
    else:
        events.append(journal.event(req.request_id, COMPLETED))
    report.seconds = time.perf_counter() - t0
    return report
