"""A table whose location lies inside another table's (``location=<a>/data/nested``, allowed by every
catalog) is not the outer table's garbage: purging the outer table's request deleted the nested table's
metadata, manifests and data as "orphans" (the nested table could no longer be read), and its rows of
the subject failed the outer table's verification forever."""

from __future__ import annotations

from datetime import timedelta

from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, make_table, rows


def _nested_case(catalog: Catalog, ns: str) -> None:
    outer = make_table(catalog, f"{ns}.outer", [["ann", "bob"], ["ann", "cat"]])
    inner = catalog.create_table(f"{ns}.inner", outer.schema(), location=outer.location().rstrip("/") + "/data/inner")
    inner_rows = rows(["ann", "dan"])  # no identity columns declared: not part of the request
    inner.append(inner_rows)
    ip.erase(catalog, ["ann"], [f"{ns}.outer"], request_id=f"{ns}-r")
    report = ip.purge(catalog, f"{ns}-r", orphan_age=timedelta(0))
    assert report.completed and Journal(catalog).get(f"{ns}-r").status == "completed"
    assert sorted(r["user_id"] for r in all_rows(outer)) == ["bob", "cat"]
    got = catalog.load_table(f"{ns}.inner").scan().to_arrow()  # every file of the nested table is still there
    assert got.sort_by("row_id").equals(inner_rows.cast(got.schema).sort_by("row_id"))


def test_purge_leaves_a_nested_table_alone(catalog: Catalog) -> None:
    _nested_case(catalog, "db")


def test_purge_leaves_a_nested_table_alone_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _nested_case(catalog, ns)


def test_orphan_age_of_the_wrong_type_is_refused_before_anything_is_deleted(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["ann", "bob"], ["ann"]])
    ip.erase(catalog, ["ann"], ["db.t"], request_id="r")
    snapshots = len(catalog.load_table("db.t").metadata.snapshots)
    try:
        ip.purge(catalog, "r", orphan_age=0)  # type: ignore[arg-type]
        raise AssertionError("must be refused")
    except ip.ConfigurationError as exc:
        assert "timedelta" in str(exc)
    assert len(catalog.load_table("db.t").metadata.snapshots) == snapshots  # nothing expired
    assert sorted(r["user_id"] for r in all_rows(table)) == ["bob"]


def test_cleanup_orphans_leaves_a_nested_table_alone(catalog: Catalog) -> None:
    """``cleanup --delete`` (cleanup_orphans) listed the nested table's files as the outer table's orphans
    and deleted them: the same data loss as the purge, reached without any request."""
    outer = make_table(catalog, "db.outer2", [["ann", "bob"]])
    inner = catalog.create_table("db.inner2", outer.schema(), location=outer.location().rstrip("/") + "/data/inner")
    inner_rows = rows(["ann", "dan"])
    inner.append(inner_rows)
    report = ip.cleanup_orphans(outer, older_than=timedelta(0), delete=True)
    assert report.other_tables == 1 and "other table" in str(report)
    assert not any("/data/inner/" in o for o in report.orphans)
    got = catalog.load_table("db.inner2").scan().to_arrow()
    assert got.sort_by("row_id").equals(inner_rows.cast(got.schema).sort_by("row_id"))
