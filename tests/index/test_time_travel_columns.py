"""Time-travel lookups name columns as the snapshot they read shows them.

A lookup at an older snapshot returns rows in that snapshot's schema. Before the fix the column argument was
resolved in today's schema only: after ``uid`` was dropped and added again, ``lookup(t, "uid", v,
snapshot_id=old)`` matched the new (empty at that snapshot) column and returned no row although the rows it
returns show ``uid == v``; after a rename the old name was refused while the rows came back under it.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from tests.helpers import unique_name

SCHEMA = Schema(NestedField(1, "uid", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _batch(users: list[str], start: int) -> pa.Table:
    return pa.table({"uid": pa.array(users, pa.string()), "n": pa.array(range(start, start + len(users)), pa.int64())})


def _scan(table, column: str, value: str, snapshot_id: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return sorted((r for r in table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist() if r[column] == value),
                  key=lambda r: r["n"])


def _lookup(table, column: str, value: str, snapshot_id: int | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
    return sorted(ip.lookup(table, column, value, snapshot_id=snapshot_id).to_pylist(), key=lambda r: r["n"])


@pytest.fixture(params=["bloom", "bloom,exact"])
def old_table(request: pytest.FixtureRequest, shared_catalog):  # type: ignore[no-untyped-def]
    """Three commits of ``uid`` (one file each, so the old column's filters can prune), then its snapshot id."""
    table = shared_catalog.create_table(unique_name("tt"), SCHEMA)
    table = ip.configure_index(table, "uid", request.param)
    for i, users in enumerate([["ann", "bob"], ["cid", "dan"], ["eve", "ann"]]):
        ip.append(table, _batch(users, 10 * i))
    table = table.refresh()
    return table, table.current_snapshot().snapshot_id


def test_a_column_dropped_and_added_again_is_the_old_one_at_an_old_snapshot(old_table) -> None:  # type: ignore[no-untyped-def]
    table, old = old_table
    with table.update_schema() as u:
        u.delete_column("uid")
    table = table.refresh()
    with table.update_schema() as u:
        u.add_column("uid", StringType())
    table = table.refresh()
    ip.append(table, pa.table({"n": pa.array([99], pa.int64()), "uid": pa.array(["ann"], pa.string())}))
    table = table.refresh()

    expected = _scan(table, "uid", "ann", old)
    assert [r["n"] for r in expected] == [0, 21]
    assert _lookup(table, "uid", "ann", old) == expected  # was []
    plan = ip.plan_lookup(table, "uid", "ann", snapshot_id=old)
    assert len(plan.tasks) == 2  # the old column's filters still prune (bob/cid/dan's file is skipped)
    assert _lookup(table, "uid", "ann") == [{"uid": "ann", "n": 99}]  # today: the new column
    assert _lookup(table, "uid", "bob", old) == _scan(table, "uid", "bob", old) != []


def test_a_dropped_column_can_be_looked_up_at_a_snapshot_that_had_it(old_table) -> None:  # type: ignore[no-untyped-def]
    table, old = old_table
    with table.update_schema() as u:
        u.delete_column("uid")
    table = table.refresh()
    assert _lookup(table, "uid", "ann", old) == _scan(table, "uid", "ann", old) != []  # was UnknownColumnError
    with pytest.raises(ip.UnknownColumnError, match="uid"):
        ip.lookup(table, "uid", "ann")  # today's schema has no such column


def test_after_a_rename_both_names_find_the_rows_at_the_old_snapshot(old_table) -> None:  # type: ignore[no-untyped-def]
    table, old = old_table
    with table.update_schema() as u:
        u.rename_column("uid", "user_id")
    table = table.refresh()
    ip.append(table, pa.table({"user_id": pa.array(["ann"], pa.string()), "n": pa.array([99], pa.int64())}))
    table = table.refresh()
    expected = _scan(table, "uid", "ann", old)  # rows in the old snapshot's schema
    assert len(expected) == 2
    assert _lookup(table, "uid", "ann", old) == expected  # the old name: was UnknownColumnError
    assert _lookup(table, "user_id", "ann", old) == expected  # today's name, followed by field id
    assert [r["n"] for r in _lookup(table, "user_id", "ann")] == [0, 21, 99]
    with pytest.raises(ip.UnknownColumnError):
        ip.lookup(table, "uid", "ann")  # without time travel only today's name
