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
