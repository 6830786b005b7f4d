"""Which tables a request covers. A lake-wide request (no ``tables=``) loads every table of the catalog: a table dropped between the listing
and its load holds nobody and is skipped; a table that exists but cannot be loaded may hold the subject and
fails the request (never skipped)."""

from __future__ import annotations

from typing import Any

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


def test_a_table_of_another_catalog_is_refused_before_anything_is_recorded(catalog: Catalog, tmp_path: Any) -> None:
    """A Table loaded from another catalog was erased where it lives, but the request was journaled in the catalog
    passed, and the purge then verified the table of that name THERE (another table): a VerificationFailedError
    about rows that were never part of the request, or, had the names differed, a purge of nothing."""
    from tests.helpers import make_catalog

    other = make_catalog(tmp_path / "other")
    other.create_namespace("db")
    theirs = make_table(other, "db.a", [["ann", "carl"]])
    make_table(catalog, "db.a", [["ann", "bob"]])
    make_table(catalog, "db.b", [["ann"]])
    for tables in ([theirs], [catalog.load_table("db.b"), theirs]):
        with pytest.raises(ip.ConfigurationError, match="another catalog"):
            ip.erase(catalog, ["ann"], tables=tables, purge=True)
    with pytest.raises(ip.ConfigurationError, match="another catalog"):
        ip.erase(other, ["ann"], tables=[catalog.load_table("db.b")])  # no table of that name there
    assert [r["user_id"] for r in all_rows(theirs)] == ["ann", "carl"]
    assert [r["user_id"] for r in all_rows(catalog.load_table("db.a"))] == ["ann", "bob"]
    mine = catalog.load_table("db.a")  # a Table of the request's own catalog (another instance of it) is fine
    assert ip.erase(catalog, ["ann"], tables=[mine]).tables["db.a"].rows_removed == 1


def test_a_table_renamed_since_it_was_loaded_is_refused_with_the_way_out(catalog: Catalog) -> None:
    """A Table loaded before a rename (or a drop and create of its name) was refused as 'loaded from another
    catalog', sending the user to look for a second lake; the message now names what happened here too: load the
    table again (or name it)."""
    make_table(catalog, "db.a", [["ann", "bob"]])
    loaded = catalog.load_table("db.a")
    catalog.rename_table("db.a", "db.a2")
    with pytest.raises(ip.ConfigurationError, match="renamed or dropped since this Table was loaded.*load it again"):
        ip.erase(catalog, ["ann"], tables=[loaded])
    make_table(catalog, "db.a", [["carl"]])  # another table under the old name
    with pytest.raises(ip.ConfigurationError, match="dropped and created again since this Table was loaded"):
        ip.erase(catalog, ["ann"], tables=[loaded])
    assert ip.erase(catalog, ["ann"], tables=[catalog.load_table("db.a2")]).tables["db.a2"].rows_removed == 1


def test_enqueue_many_refuses_a_table_of_another_catalog_after_one_named_alike(catalog: Catalog, tmp_path: Any) -> None:
    """enqueue_many resolved each distinct set of table names once: a request passing a Table of another catalog
    after one naming the same 'db.a' as a string reused the first's resolution, so it was queued, unrefused, against
    this catalog's db.a (the person asked about the other lake's table)."""
    from tests.helpers import make_catalog

    other = make_catalog(tmp_path / "other")
    other.create_namespace("db")
    theirs = make_table(other, "db.a", [["ann"]])
    make_table(catalog, "db.a", [["ann", "bob"]])
    with pytest.raises(ip.ConfigurationError, match="another catalog"):
        ip.enqueue_many(catalog, [ip.QueuedRequest("erase", ["bob"], ["db.a"]),
                                  ip.QueuedRequest("erase", ["ann"], [theirs])])
