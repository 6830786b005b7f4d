"""Snapshots another tool expired BEFORE the erasure: the purge still deletes what they alone reached.

pyiceberg's own ``table.maintenance.expire_snapshots()`` (as Iceberg's REST ``remove-snapshots``) removes snapshots from
the metadata and deletes no file. A subject's rows that another job rewrote (``table.overwrite`` of the same rows,
as a data-file compaction does) or deleted (``table.delete``) before the expiry then sit in data files and manifests
no snapshot names any more. The erasure cannot see them (they are not live), and the purge took them for young
orphans: it reported the request not complete and told the user to delete orphans with age 0, which is unsafe while
writers run. The older ``metadata.json`` versions in the metadata log still list those snapshots: they were
committed, so no commit in flight can make their files live again, and the purge deletes them like the files of the
snapshots it expires itself (tests/rights/test_purge_foreign_expiry.py has the case where the log no longer lists
them: a message that helps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.statistics import BlobMetadata, StatisticsFile
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import subject_traces

VICTIM = "victim-4711-zq"
OTHERS = ["bob-0001-zq", "carol-0002-zq"]
SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _rows(users: list[str], start: int) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.string()), "n": pa.array(range(start, start + len(users)), pa.int64())})


def _register_statistics(table: Table, snapshot_id: int, name: str = "ndv", holds: str = VICTIM) -> str:
    """Another engine's statistics file (Trino's / Spark's NDV sketches: hashes of the column's values)."""
    path = f"{table.location()}/metadata/{snapshot_id}-{name}.stats"
    with table.io.new_output(path).create(overwrite=True) as out:
        out.write(b"PFA1 sketch of " + holds.encode() + b" PFA1")
    with table.transaction() as tx:
        tx.update_statistics().set_statistics(StatisticsFile(
            snapshot_id=snapshot_id, statistics_path=path, file_size_in_bytes=len(table.io.new_input(path)),
            file_footer_size_in_bytes=4, blob_metadata=[BlobMetadata(type="apache-datasketches-theta-v1",
                                                                     snapshot_id=snapshot_id, sequence_number=1,
                                                                     fields=[1], properties={})])).commit()
    return path


def _foreign_history(catalog: Catalog, name: str, foreign: str, format_version: str) -> Table:
    table = catalog.create_table(name, SCHEMA, properties={"format-version": format_version})
    table = ip.configure_index(table, "user_id", "bloom,exact")
    table = ip.configure_identity(table, ["user_id"])
    ip.append(table, _rows([VICTIM, OTHERS[0]], 0))
    table = table.refresh()
    first = table.metadata.current_snapshot_id
    assert first is not None
    _register_statistics(table, first)
    table = table.refresh()
    if foreign == "rewrite":  # a data-file compaction by another job: the same rows into new files
        table.overwrite(table.scan().to_arrow())
    else:  # another job's copy-on-write DELETE of the subject's rows
        table.delete(f"user_id == '{VICTIM}'")
    table = table.refresh()
    table.append(_rows([OTHERS[1], VICTIM], 10))  # the subject comes back through another writer
    table = table.refresh()
    old = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id != table.metadata.current_snapshot_id]
    table.maintenance.expire_snapshots().by_ids(old).commit()  # pyiceberg's own expiry: deletes no file
    return table.refresh()


def _check_purged(catalog: Catalog, name: str, table: Table) -> None:
    expected = sorted(r for r in zip(*table.scan().to_arrow().to_pydict().values(), strict=True) if r[0] != VICTIM)
    report = ip.erase(catalog, [VICTIM], [name], purge=True, link_identifiers=False)
    assert report.purge is not None and report.purge.completed, str(report)
    assert Journal(catalog).get(report.request_id).status == "completed"
    table = catalog.load_table(name)
    assert sorted(zip(*table.scan().to_arrow().to_pydict().values(), strict=True)) == expected
    assert ip.lookup(table, "user_id", OTHERS).num_rows == len(expected)


@pytest.mark.parametrize("foreign", ["rewrite", "delete"])
@pytest.mark.parametrize("format_version", ["1", "2"])
def test_the_purge_deletes_what_snapshots_pyiceberg_expired_before_the_erasure_reached(
        catalog: Catalog, foreign: str, format_version: str) -> None:
    table = _foreign_history(catalog, "db.t", foreign, format_version)
    _check_purged(catalog, "db.t", table)
    root = Path(catalog.load_table("db.t").location().removeprefix("file://"))
    assert subject_traces(root, [VICTIM]) == []


def test_the_purge_deletes_what_snapshots_pyiceberg_expired_reached_on_object_storage(
        rest_catalog: Catalog, lake_ns: str) -> None:
    name = f"{lake_ns}.t"
    table = _foreign_history(rest_catalog, name, "rewrite", "2")
    _check_purged(rest_catalog, name, table)
    table = rest_catalog.load_table(name)
    left: list[Any] = []
    from iceberg_privacy.storage import list_files
    for f in list_files(table.io, table.location()):
        with table.io.new_input(f.location).open() as stream:
            if VICTIM.encode() in stream.read():
                left.append(f.location)
    assert left == []


def test_a_statistics_file_another_engine_replaced_is_purged(catalog: Catalog) -> None:
    """Iceberg keeps one statistics file per snapshot: an engine's second set_statistics for the same snapshot leaves
    the first unreferenced and young; only an older metadata version names it."""
    table = catalog.create_table("db.s", SCHEMA)
    table = ip.configure_identity(table, ["user_id"])
    ip.append(table, _rows([VICTIM, OTHERS[0]], 0))
    table = table.refresh()
    head = table.metadata.current_snapshot_id
    assert head is not None
    first = _register_statistics(table, head)
    _register_statistics(table.refresh(), head, name="ndv-again", holds=OTHERS[0])  # replaces the first
    assert [s.statistics_path for s in catalog.load_table("db.s").metadata.statistics] != [first]
    _check_purged(catalog, "db.s", catalog.load_table("db.s"))
    assert not catalog.load_table("db.s").io.new_input(first).exists()
