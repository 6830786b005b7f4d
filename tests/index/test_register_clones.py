"""Two catalog entries on one table's files (``catalog.register_table`` of a metadata file, a common way to clone
or move a table): orphan cleanup and purge on one entry must leave the other loadable and scannable."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.errors import RequestBlockedError
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import SECRET, make_table

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _rows(*users: str) -> pa.Table:
    return pa.table({"user_id": pa.array(list(users)), "n": pa.array(range(len(users)), pa.int64())})


def _clone_that_committed(catalog: Catalog, ns: str) -> tuple[str, str]:
    original = catalog.create_table(f"{ns}.orig", SCHEMA)
    ip.append(original, _rows("a0"))
    catalog.register_table(f"{ns}.copy", original.refresh().metadata_location)
    ip.append(catalog.load_table(f"{ns}.copy"), _rows("c1"))  # the copy's own version, in the same metadata/ folder
    ip.append(catalog.load_table(f"{ns}.orig"), _rows("a1"))  # ... with a version number the original has reached
    return f"{ns}.orig", f"{ns}.copy"


def _users(catalog: Catalog, name: str) -> list[str]:
    return sorted(catalog.load_table(name).scan().to_arrow().column("user_id").to_pylist())


@pytest.mark.parametrize("delete_on", ["orig", "copy"])
@pytest.mark.parametrize("age", [None, timedelta(0)])
def test_cleanup_on_one_entry_keeps_the_other_loadable(catalog: Catalog, delete_on: str, age: timedelta | None) -> None:
    """The copy's newest metadata.json, with the same uuid and a version the original reached, was taken for a
    superseded version of the original and deleted at once, whatever the age: the copy no longer loaded. Its data
    files and manifests, which the original does not reference, are left too (age 0: all of them old enough)."""
    orig, copy = _clone_that_committed(catalog, "db")
    report = ip.cleanup_orphans(catalog.load_table(orig if delete_on == "orig" else copy), delete=True,
                                **({} if age is None else {"older_than": age}))
    assert report.deleted == [] and report.shared_with
    assert "nothing was deleted" in str(report)
    assert _users(catalog, copy) == ["a0", "c1"] and _users(catalog, orig) == ["a0", "a1"]


def test_cleanup_on_one_entry_keeps_the_other_on_object_storage(s3_sql_catalog: Catalog, lake_ns: str) -> None:
    """On SeaweedFS behind a SQL catalog (the test server's REST catalog registers a table without its schema)."""
    catalog, ns = s3_sql_catalog, lake_ns
    orig, copy = _clone_that_committed(catalog, ns)
    report = ip.cleanup_orphans(catalog.load_table(orig), delete=True)
    assert report.deleted == [] and report.shared_with
    assert _users(catalog, copy) == ["a0", "c1"] and _users(catalog, orig) == ["a0", "a1"]


def test_cleanup_without_a_copy_still_deletes_dead_metadata_versions(catalog: Catalog) -> None:
    """The check costs nothing to the usual case: a version no commit can make current is still deleted."""
    table = catalog.create_table("db.alone", SCHEMA)
    ip.append(table, _rows("a0"))
    ip.append(table, _rows("a1"))
    table = table.refresh()
    dead = table.metadata_location.replace("/00002-", "/00001-dead")  # a commit that lost its swap
    with table.io.new_output(dead).create() as out, table.io.new_input(table.metadata_location).open() as src:
        out.write(src.read())
    report = ip.cleanup_orphans(table, delete=True)
    assert report.deleted == [dead] and not report.shared_with


def test_purge_refuses_while_a_register_table_copy_shares_the_files(catalog: Catalog,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The purge deleted the old metadata versions and the files of the expired snapshots, which the copy still
    read: it failed with a raw FileNotFoundError and the copy no longer loaded. It is refused, nothing deleted."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.people", [["u1"], ["u2", "victim"]])
    catalog.register_table("db.people_copy", table.metadata_location)
    ip.erase(catalog, ["victim"], request_id="r")
    with pytest.raises(RequestBlockedError, match="register_table copy"):
        ip.purge(catalog, "r")
    for name in ("db.people", "db.people_copy"):
        t = catalog.load_table(name)
        assert sorted(r["user_id"] for r in t.scan().to_arrow().to_pylist()) == ["u1", "u2"]
        for snap in t.snapshots():  # every snapshot still reads (nothing was deleted)
            t.scan(snapshot_id=snap.snapshot_id).to_arrow()
    # the way out the error gives: drop one entry, a new request for the other; what the dropped copy wrote there
    # (its erase commit's manifests) is now young orphans holding the subject, so no writer running: age 0
    catalog.drop_table("db.people_copy")
    done = ip.erase(catalog, ["victim"], ["db.people"], request_id="r2", purge=True, orphan_age=timedelta(0))
    assert done.purge is not None and done.purge.completed
