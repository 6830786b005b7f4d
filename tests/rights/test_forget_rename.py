"""The forget list follows a table through renames: per-table entries carry the table's uuid.

Before, entries were scoped by the table's name only, so renaming a table after an erasure (a
routine catalog operation) let a late event of the erased person back in. A table re-created under
the old name still gets the old name's entries (a pipeline's ``CREATE OR REPLACE``), but a renamed
table does not inherit entries another table later added under its old name.
"""

from __future__ import annotations

from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights import forget
from tests.helpers import all_rows, make_table, rows


def _users(table) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r["user_id"] for r in all_rows(table))


def _rename_keeps_the_list(catalog: Catalog, ns: str) -> None:
    make_table(catalog, f"{ns}.events", [["ann", "bob"]])
    ip.erase(catalog, ["ann"], [f"{ns}.events"])
    catalog.rename_table(f"{ns}.events", f"{ns}.events_v2")
    moved = catalog.load_table(f"{ns}.events_v2")
    report = ip.append(moved, rows(["ann", "carl"], 10))
    assert report.dropped_rows == 1 and _users(moved) == ["bob", "carl"]


def test_renamed_table_still_drops_erased_subjects(catalog: Catalog) -> None:
    _rename_keeps_the_list(catalog, "db")


def test_old_name_reused_by_another_table(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["ann", "bob"]])
    ip.erase(catalog, ["ann"], ["db.t"])
    catalog.rename_table("db.t", "db.t_old")
    old = catalog.load_table("db.t_old")
    new = make_table(catalog, "db.t", [])  # a new table under the old name: the name's entries apply
    assert ip.append(new, rows(["ann", "dan"])).dropped_rows == 1
    ip.erase(catalog, ["dan"], ["db.t"])  # the new table's own erasure ...
    assert ip.append(old, rows(["dan", "ann"], 5)).dropped_rows == 1  # ... is not the renamed table's
    assert _users(old) == ["bob", "dan"]
    ents = forget.entries(catalog, "db").to_pylist()
    assert {(e["scope"], e["table_uuid"]) for e in ents} == {
        ("db.t", str(old.metadata.table_uuid)), ("db.t", str(new.metadata.table_uuid))}


def test_renamed_table_still_drops_erased_subjects_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _rename_keeps_the_list(catalog, ns)
