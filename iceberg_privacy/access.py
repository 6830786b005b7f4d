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

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.table import Table

from iceberg_privacy.erasure import submit_request
from iceberg_privacy.errors import ConfigurationError, RequestConflictError
from iceberg_privacy.journal import COMPLETED, DEFAULT_DEADLINE, TABLE_EXPORTED, Journal
from iceberg_privacy.storage import catalog_io, child, is_local, storage_errors, write_location
from iceberg_privacy.subjects import CandidatePlan, TableSubjects, match_mask, plan_candidates

FORMATS = ("parquet", "jsonl")
MANIFEST = "manifest.json"


@dataclass
class TableExport:
    table: str
    snapshot_id: int | None
    rows: int
    path: str
    sha256: str
    files_read: int
    files_total: int
    plan: str = ""


@dataclass
class AccessReport:
    request_id: str
    out: str  # a local folder or any FileIO location (s3://bucket/exports/req-1)
    tables: dict[str, TableExport] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def manifest_path(self) -> str:
        return child(self.out, MANIFEST)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def __str__(self) -> str:
        lines = [f"access request {self.request_id}: {self.rows} row(s) from {len(self.tables)} table(s) -> "
                 f"{self.manifest_path} ({self.seconds:.2f}s)"]
        lines += [f"  {t.table}: {t.rows} rows, read {t.files_read} of {t.files_total} files -> {t.path.rsplit("/", 1)[-1]}"
                  for t in self.tables.values()]
        return "\n".join(lines)


def _rows(ts: TableSubjects, plan: CandidatePlan, secret: bytes) -> pa.Table:
    table: Table = ts.table
    md = table.metadata
    schema = md.schema()
    parts = []
    for task in plan.tasks:  # sorted by path: deterministic
        data = ArrowScan(md, table.io, schema, AlwaysTrue(), case_sensitive=True).to_table([task])
        parts.append(data.filter(pa.array(match_mask(data, ts, secret))))
    if not parts:
        return pa.Table.from_batches([], schema=schema_to_pyarrow(schema))
    return pa.concat_tables(parts)


def _encode(rows: pa.Table, fmt: str) -> bytes:
    if fmt == "parquet":
        buf = pa.BufferOutputStream()
        pq.write_table(rows, buf)
        return buf.getvalue().to_pybytes()
    return "".join(json.dumps(rec, default=_json_default, sort_keys=True) + "\n" for rec in rows.to_pylist()).encode()


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


@storage_errors
def access(catalog: Catalog, subjects: Any, tables: Sequence[str | Table] | None = None, *,
           out: str | os.PathLike[str], format: str = "parquet", request_id: str | None = None,
           home: str | os.PathLike[str] | None = None, deadline: timedelta = DEFAULT_DEADLINE) -> AccessReport:
    """Export every row of ``subjects`` from every table declaring identity columns (or those named).

    Writes one ``<table>.parquet``/``.jsonl`` per table and ``manifest.json`` (table, snapshot id,
    row count, sha256) under ``out``. Unknown subjects give empty files, not an error.
    """
    if format not in FORMATS:
        raise ConfigurationError(f"access output format must be one of {FORMATS}, got {format!r}")
    t0 = time.perf_counter()
    journal = Journal(catalog)
    req, resolved, secret, _ = submit_request(catalog, "access", subjects, tables, request_id=request_id, home=home,
                                           deadline=deadline, journal=journal)
    if req.kind != "access":
        raise RequestConflictError(f"request {req.request_id} is an {req.kind} request, not an access request")
    outdir = os.fspath(out)
    io = None if is_local(outdir) else catalog_io(catalog, outdir)  # the catalog's endpoint and credentials
    report = AccessReport(req.request_id, outdir)
    for ts in sorted(resolved, key=lambda t: t.name):
        plan = plan_candidates(ts)
        rows = _rows(ts, plan, secret)
        data = _encode(rows, format)
        sha = hashlib.sha256(data).hexdigest()
        path = write_location(child(outdir, f"{ts.name}.{format}"), data, io)
        report.tables[ts.name] = TableExport(ts.name, plan.snapshot_id, rows.num_rows, str(path), sha,
                                             len(plan.tasks), plan.files_total, plan.explain())
        journal.record(req.request_id, TABLE_EXPORTED, table=ts.name, snapshot_id=plan.snapshot_id,
                       rows=rows.num_rows, files=len(plan.tasks), detail={"sha256": sha, "format": format})
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
    journal.record(req.request_id, COMPLETED)
    report.seconds = time.perf_counter() - t0
    return report
