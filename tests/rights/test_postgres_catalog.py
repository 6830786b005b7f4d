"""Subject rights on a SqlCatalog backed by a real PostgreSQL server, the other SQL catalog the library supports.

Why: SQLite serialises every writer behind one file lock ("database is locked"), PostgreSQL runs transactions
concurrently and refuses a lost compare-and-swap by row count; the retry helper, the journal, the queue and the
erasure commits must behave the same on both. Until now only the DP ledger race ran on PostgreSQL. Here: a
write with sidecars, a pruned lookup equal to the full scan, an erasure with purge that leaves no row of the
subject in any live file, and two queue passes racing submitters in separate processes.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights import queue as q
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import SECRET, all_rows, make_table

ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count()


def _props(postgres_uri: str, warehouse: Path) -> dict[str, str]:
    return {"uri": postgres_uri, "warehouse": warehouse.as_uri()}


@pytest.fixture
def pg_catalog(postgres_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    # one server for the session; a catalog name of its own per test keeps the tests' tables apart
    catalog = ip.connect(f"pg{os.getpid()}x{next(_names)}", **_props(postgres_uri, tmp_path / "wh"))
    assert type(catalog).__name__ == "SqlCatalog" and "postgresql" in catalog.properties["uri"]
    catalog.create_namespace("db")
    return catalog


def test_lookup_and_erase_with_purge_on_postgres(pg_catalog: Catalog) -> None:
    users = [f"u{i}" for i in range(12)]
    table = make_table(pg_catalog, "db.t", [users[k * 3:(k + 1) * 3] + ["keep"] for k in range(4)])
    assert ip.sidecar_status(table).covered == {"identities": 4, "user_id": 4}

    plan = ip.plan_lookup(table, "user_id", ["u4"])
    assert (plan.files_total, len(plan.tasks), plan.files_without_sidecar) == (4, 1, 0), plan
    full = table.scan().to_arrow()
    assert ip.lookup(table, "user_id", ["u4", "u7"]).sort_by("row_id").to_pylist() == \
        full.filter(pc.is_in(full["user_id"], value_set=pa.array(["u4", "u7"]))).sort_by("row_id").to_pylist()

    report = ip.erase(pg_catalog, ["u4", "u7"], ["db.t"], purge=True, orphan_age=timedelta(0))
    assert report.rows_removed == 2 and report.purge is not None and report.purge.completed, report
    assert "u4" not in {r["user_id"] for r in all_rows(pg_catalog.load_table("db.t"))}
    req = Journal(pg_catalog).get(report.request_id)
    assert req.status == "completed" and {t.status for t in req.tables.values()} == {"verified"}, req
    # purge: no live or still-referenced data file holds the subjects
    t = pg_catalog.load_table("db.t")
    for snap in t.snapshots():
        rows = t.scan(snapshot_id=snap.snapshot_id).to_arrow()
        assert not set(rows["user_id"].to_pylist()) & {"u4", "u7"}, snap.snapshot_id


def _script(postgres_uri: str, warehouse: Path, name: str, body: str) -> list[str]:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import iceberg_privacy as ip
        catalog = ip.connect({name!r}, uri={postgres_uri!r}, warehouse={warehouse.as_uri()!r})
    """) + textwrap.dedent(body)
    return [sys.executable, "-c", code]


@pytest.mark.slow
def test_submitters_and_two_passes_racing_on_postgres(postgres_uri: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Three submitter processes and two queue passes at once on one PostgreSQL catalog: every request ends
    completed and verified, the table holds only the rows of nobody erased, the queue is empty."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    name, wh = f"pgrace{os.getpid()}x{next(_names)}", tmp_path / "wh"
    catalog = ip.connect(name, **_props(postgres_uri, wh))
    catalog.create_namespace("db")
    users = [f"u{i}" for i in range(12)]
    make_table(catalog, "db.t", [users[k * 4:(k + 1) * 4] + ["keep"] for k in range(3)])
    env = {**os.environ, SECRET_ENV: SECRET}
    procs = [subprocess.Popen(_script(postgres_uri, wh, name, f"""
        for i in range({k * 4}, {k * 4 + 4}):
            ip.enqueue(catalog, "erase", [f"u{{i}}"], request_id=f"s{{i}}")
    """), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(3)]
    procs += [subprocess.Popen(_script(postgres_uri, wh, name, """
        import time
        for _ in range(2):
            report = ip.run_pending(catalog)
            assert not report.blocked, report
            time.sleep(0.3)
    """), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    ip.run_pending(catalog)  # whatever was submitted after the passes' last claim
    journal = Journal(catalog)
    for i in range(12):
        req = journal.get(f"s{i}")
        assert req.status == "completed" and {t.status for t in req.tables.values()} == {"verified"}, req
    assert {r["user_id"] for r in all_rows(catalog.load_table("db.t"))} == {"keep"}
    assert q.Queue(catalog).entries() == []
