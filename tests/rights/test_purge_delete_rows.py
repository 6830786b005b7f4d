"""A position delete file's optional ``row`` column holds the deleted row itself: purge verification reads it.

Iceberg's position delete files may carry a ``row`` struct (field id 2147483544) with each deleted row as it was,
e.g. written by Java's position delete writer when asked to. A partition-scoped delete file that also deletes rows
of files the erasure keeps stays live after the erasure, so its ``row`` column keeps the subject's row. The
verification read only top-level columns by field id and reported the purge complete.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, commit_delete_file, make_table


def _holder(table, value: str):
    return next(t.file for t in table.scan().plan_files()
                if value in pq.read_table(t.file.file_path.removeprefix("file://"), columns=["user_id"])
                .column(0).to_pylist())


def test_a_live_delete_files_row_column_holding_the_subject_is_not_reported_clean(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["anq", "bob"], ["cy", "dan"]])
    first, second = _holder(table, "anq"), _holder(table, "dan")
    # one partition-scoped delete file: anq's row (in the file the erasure rewrites) and dan's (in a file it keeps)
    table = commit_delete_file(table, first, [0], also=[(second, [1])], referenced=False, with_row=True)
    assert {r["user_id"] for r in all_rows(table)} == {"bob", "cy"}

    with pytest.raises(VerificationFailedError, match="rewrite_position_delete_files") as err:
        ip.erase(catalog, ["anq"], ["db.t"], purge=True, orphan_age=timedelta(0))
    assert "anq" not in str(err.value), err.value  # reports never repeat the id
    (req,) = Journal(catalog).requests()
    assert req.status != "completed", req
    table = catalog.load_table("db.t")
    assert {r["user_id"] for r in all_rows(table)} == {"bob", "cy"}  # nothing of the others lost or resurrected


def test_a_delete_files_row_column_of_other_subjects_only_is_clean(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["anq", "bob"], ["cy", "dan"]])
    second = _holder(table, "dan")
    table = commit_delete_file(table, second, [1], referenced=False, with_row=True)  # dan's row only

    report = ip.erase(catalog, ["anq"], ["db.t"], purge=True, orphan_age=timedelta(0))
    assert report.purge is not None and report.purge.completed, report.purge
    verify = report.purge.tables["db.t"].verify
    assert verify is not None and verify.rows_found == 0 and not verify.traces
