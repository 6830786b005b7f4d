"""Format-version 1 tables: their manifests carry ``content`` as a plain int (no enum), which the purge
and the core overwrite must read like the v2 enum (they crashed with AttributeError before)."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import ARROW, all_rows, make_table, rows


def _v1_table(catalog: Catalog, name: str, batches: list[list[str]]):  # type: ignore[no-untyped-def]
    return make_table(catalog, name, batches, properties={"format-version": "1"})


def test_erase_and_purge_complete_on_a_format_v1_table(catalog: Catalog) -> None:
    table = _v1_table(catalog, "db.v1", [["ann", "bob"], ["ann", "cat"], ["dan"]])
    assert table.metadata.format_version == 1
    report = ip.erase(catalog, ["ann"], ["db.v1"], request_id="r-v1", purge=True)
    assert report.purge is not None and report.purge.completed
    assert Journal(catalog).get("r-v1").status == "completed"
    assert sorted(r["user_id"] for r in all_rows(table)) == ["bob", "cat", "dan"]
    # the forget list still drops a late event of the erased person on the v1 table
    assert ip.append(table, rows(["ann", "eve"], 10)).dropped_rows == 1


def test_core_overwrite_with_a_filter_on_a_format_v1_table(catalog: Catalog) -> None:
    table = _v1_table(catalog, "db.v1o", [["ann", "bob", "cat"]])
    new = pa.Table.from_pylist([{"row_id": 99, "user_id": "zed", "account": None, "identities": None,
                                 "payload": "x"}], schema=ARROW)
    report = ip.overwrite(table, new, overwrite_filter=EqualTo("row_id", 1))  # rewrites the file partly
    assert report.rows == 1
    assert sorted(r["user_id"] for r in all_rows(table)) == ["ann", "cat", "zed"]
    assert ip.lookup(table, "user_id", "cat").num_rows == 1  # the rewritten file got its filter
