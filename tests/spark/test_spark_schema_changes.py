"""The data source after schema changes: the current read shows the current schema, time travel the snapshot's,
and pushdown resolves columns by field id (a rename since the snapshot, a column dropped and re-added).

Before the fix the reader always used the schema the snapshot was written with: after a rename with no commit
since, the current read still showed the old name, and a pushed filter on it crashed planning
(UnknownColumnError from the planner, which resolves the current schema); a time-travel read of a renamed
column with pushdown crashed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import IntegerType, LongType, NestedField, StringType

import iceberg_privacy as ip
from tests.helpers import read

pytestmark = pytest.mark.spark


def _table(home: Path, name: str, kind: str, ktype: Any = None) -> tuple[Any, int]:
    cat = ip.connect(home=home)
    if "db" not in {n[0] for n in cat.list_namespaces()}:
        cat.create_namespace("db")
    t = cat.create_table(name, Schema(NestedField(1, "k", ktype or StringType(), required=False),
                                      NestedField(2, "r", LongType(), required=False)))
    ip.configure_index(t, "k", kind)
    arr = pa.int32() if ktype is not None else pa.string()
    for i in range(3):
        vals = [i, i + 10] if ktype is not None else [f"v{i}", f"w{i}"]
        ip.append(cat.load_table(name), pa.table({"k": pa.array(vals, arr), "r": pa.array([i, i + 10], pa.int64())}))
    return cat, cat.load_table(name).metadata.current_snapshot_id


@pytest.mark.slow  # the first data-source read of a session starts its planning worker (~10 s)
@pytest.mark.parametrize("kind", ["exact", "bloom"])
def test_rename_without_a_commit_since(spark: Any, tmp_path: Path, kind: str) -> None:
    cat, s1 = _table(tmp_path, "db.ren", kind)
    with cat.load_table("db.ren").update_schema() as u:
        u.rename_column("k", "k2")
        u.add_column("extra", StringType())
    ip.configure_index(cat.load_table("db.ren"), "k2", kind)
    df = read(spark, tmp_path, "db.ren")
    assert df.columns == ["k2", "r", "extra"]  # the current schema, as pyiceberg and Iceberg's Spark reader
    assert [tuple(x) for x in df.where("k2 = 'v1'").collect()] == [("v1", 1, None)]
    old = read(spark, tmp_path, "db.ren", snapshot_id=s1)  # time travel: the snapshot's schema and names
    assert old.columns == ["k", "r"]
    assert [tuple(x) for x in old.where("k in ('v1', 'w2')").orderBy("r").collect()] == [("v1", 1), ("w2", 12)]


def test_time_travel_over_a_dropped_and_re_added_column(spark: Any, tmp_path: Path) -> None:
    """The old ``k`` (field 1) is read at the old snapshot; the index of the new ``k`` (another field) must not
    be used for it."""
    cat, s1 = _table(tmp_path, "db.readd", "exact")
    t = cat.load_table("db.readd")
    with t.update_schema() as u:
        u.delete_column("k")
    with cat.load_table("db.readd").update_schema() as u:
        u.add_column("k", StringType())
    ip.append(cat.load_table("db.readd"), pa.table({"r": pa.array([99], pa.int64()), "k": ["v1"]}))
    old = read(spark, tmp_path, "db.readd", snapshot_id=s1)
    assert [x.r for x in old.where("k = 'v1'").collect()] == [1]
    assert [x.r for x in read(spark, tmp_path, "db.readd").where("k = 'v1'").collect()] == [99]


def test_time_travel_before_an_int_to_long_promotion(spark: Any, tmp_path: Path) -> None:
    cat, s1 = _table(tmp_path, "db.prom", "bloom,exact", IntegerType())
    with cat.load_table("db.prom").update_schema() as u:
        u.update_column("k", LongType())
    ip.append(cat.load_table("db.prom"), pa.table({"k": pa.array([2**40, 1], pa.int64()), "r": pa.array([7, 8], pa.int64())}))
    assert sorted(x.r for x in read(spark, tmp_path, "db.prom", snapshot_id=s1).where("k = 1").collect()) == [1]
    assert sorted(x.r for x in read(spark, tmp_path, "db.prom").where(f"k in (1, {2**40})").collect()) == [1, 7, 8]


def test_branch_and_tag_reads_with_pushdown(spark: Any, tmp_path: Path) -> None:
    """Time travel by reference (Iceberg's Spark ``branch``/``tag`` read options), pushed filters included."""
    cat, s1 = _table(tmp_path, "db.refs", "exact")
    t = cat.load_table("db.refs")
    t.manage_snapshots().create_tag(s1, "v1").create_branch(s1, "dev").commit()
    cat.load_table("db.refs").append(pa.table({"k": ["v1", "zz"], "r": pa.array([50, 51], pa.int64())}), branch="dev")
    ip.append(cat.load_table("db.refs"), pa.table({"k": ["v1"], "r": pa.array([60], pa.int64())}))
    assert sorted(x.r for x in read(spark, tmp_path, "db.refs", tag="v1").where("k = 'v1'").collect()) == [1]
    assert sorted(x.r for x in read(spark, tmp_path, "db.refs", branch="dev").where("k in ('v1', 'zz')").collect()) \
        == [1, 50, 51]
    assert sorted(x.r for x in read(spark, tmp_path, "db.refs").where("k = 'v1'").collect()) == [1, 60]
    with pytest.raises(Exception, match="has no tag 'nope'; its tags: v1"):
        read(spark, tmp_path, "db.refs", tag="nope").collect()
    with pytest.raises(Exception, match="set one of"):
        read(spark, tmp_path, "db.refs", tag="v1", snapshot_id=s1).collect()
