"""A subject row hidden by another engine's delete file is still erased physically.

Spark or Trino ``DELETE`` in merge-on-read mode writes a position-delete file and leaves the row in the data
file's bytes. Erasure used to decide which files to rewrite from the live rows only: a subject whose only
row was position-deleted had nothing live to erase, so the file was kept, purge's verification found the row
in its bytes on every run, and the request could never complete ("run it again" could not help).
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, commit_delete_file, make_table


def _bytes_hold(table_files: list[str], value: str) -> bool:
    return any(value in pq.read_table(path.removeprefix("file://"), columns=["user_id"]).column(0).to_pylist()
               for path in table_files)


@pytest.mark.parametrize("probe_first", [False, True], ids=["named-table", "lake-wide"])
def test_a_position_deleted_subject_row_is_rewritten_away(catalog: Catalog, probe_first: bool) -> None:
    table = make_table(catalog, "db.t", [["ann", "bob", "cy"], ["dan", "keep"]])
    first = next(t.file for t in table.scan().plan_files() if _bytes_hold([t.file.file_path], "ann"))
    table = commit_delete_file(table, first, [0])  # another engine's DELETE ... WHERE user_id = 'ann'
    assert "ann" not in {r["user_id"] for r in all_rows(table)}
    live_before = all_rows(table)

    report = ip.erase(catalog, ["ann"], None if probe_first else ["db.t"], purge=True, orphan_age=timedelta(0))
    assert report.purge is not None and report.purge.completed, report.purge
    req = Journal(catalog).get(report.request_id)
    assert req.status == "completed" and {t.status for t in req.tables.values()} == {"verified"}, req
    table = catalog.load_table("db.t")
    assert all_rows(table) == live_before  # every live row kept, bob and cy included
    files = [t.file.file_path for t in table.scan().plan_files()]
    assert not _bytes_hold(files, "ann") and _bytes_hold(files, "bob")
    assert not any(f == first.file_path for f in files)
