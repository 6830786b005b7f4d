"""A lake-wide request (no ``tables=``) loads every table of the catalog: a table dropped between the listing
and its load holds nobody and is skipped; a table that exists but cannot be loaded may hold the subject and
fails the request (never skipped)."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights import subjects
from tests.helpers import all_rows, make_table


def test_a_table_dropped_after_the_listing_is_skipped(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    make_table(catalog, "db.a", [["ann", "bob"]])
    listed = subjects.all_tables(catalog) + [("db", "dropped_meanwhile")]  # listed, then dropped by someone
    monkeypatch.setattr(subjects, "all_tables", lambda _catalog: listed)
    report = ip.erase(catalog, ["ann"])
    assert report.tables["db.a"].rows_removed == 1
    assert [r["user_id"] for r in all_rows(catalog.load_table("db.a"))] == ["bob"]


def test_a_table_that_cannot_be_loaded_fails_the_request(catalog: Catalog) -> None:
    table = make_table(catalog, "db.a", [["ann"]])
    make_table(catalog, "db.b", [["ann"]])
    table.io.delete(table.metadata_location)  # db.a's current metadata is gone: it may hold ann
    with pytest.raises(ip.StorageError, match="does not exist"):
        ip.erase(catalog, ["ann"])
    assert [r["user_id"] for r in all_rows(catalog.load_table("db.b"))] == ["ann"]  # nothing erased anywhere


def test_rows_another_job_wrote_into_a_dp_output_table_are_erased(catalog: Catalog) -> None:
    """A DP synthetic (or release) table was skipped by every request as one of the library's own tables, on its
    table property alone; rows a foreign job appended to it since (the property stays) kept the subject after the
    erasure reported done. Such a table is searched like any other once its rows are not the release's."""
    import pyarrow as pa
    from pyiceberg.types import StringType

    make_table(catalog, "db.a", [["ann", "bob"]])
    data = pa.table({"country": ["de", "fr"] * 5})
    catalog.create_table("db.src", schema=data.schema).append(data)
    ip.set_namespace_budget(catalog, "db", ip.RhoZCDP(5))
    ip.dp_synthesize(catalog, "db.src", ["country"], ip.RhoZCDP(0.5), output="db.syn", rows=4,
                     domains={"country": ["de", "fr"]}, privacy_unit=ip.ROWS)
    syn = catalog.load_table("db.syn")
    assert subjects._is_internal(syn)  # its rows are the synthesis's: no request covers it
    with syn.update_schema() as update:  # a foreign job adds a column and raw rows
        update.add_column("user_id", StringType())
    syn = catalog.load_table("db.syn")
    syn.append(pa.table({"country": ["de"], "user_id": ["ann"]}, schema=syn.schema().as_arrow()))
    ip.configure_identity(syn, ["user_id"])
    report = ip.erase(catalog, ["ann"])
    assert report.tables["db.a"].rows_removed == 1 and report.tables["db.syn"].rows_removed == 1
    assert "ann" not in [r["user_id"] for r in catalog.load_table("db.syn").scan().to_arrow().to_pylist()]
