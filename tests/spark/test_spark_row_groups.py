"""The Spark source's executors read like the core lookup: hinted row groups, keys first, deletes applied.

Files with many row groups (a tiny ``write.parquet.row-group-limit``), merge-on-read position deletes and
a renamed column: a pushed-down Spark read returns exactly the core lookup's rows and the rows of a read
without pushdown. The executor's read honours row-group hints: an exact hint gives the same rows, a hint
naming only row groups without the key gives none (so the hint is really what is read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql.datasource import EqualTo as SparkEqualTo
from pyspark.sql.datasource import In as SparkIn

import iceberg_privacy as ip
from iceberg_privacy.spark.source import IcebergPrivacyDataSource
from tests.helpers import commit_delete_file, read, rows_of_arrow, rows_of_spark

pytestmark = pytest.mark.spark
USERS = [f"user-{i:03d}" for i in range(40)]


def _table(home: Path) -> Any:
    catalog = ip.connect(home=home)
    catalog.create_namespace_if_not_exists("db")
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    schema = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False),
                    NestedField(3, "note", StringType(), required=False))
    table = catalog.create_table("db.rg", schema, properties={"format-version": "2", "write.parquet.row-group-limit": "8"})
    table = ip.configure_bloom(table, ["user_id"])
    rows = [(u, i * 10 + k, f"note {i}/{k}") for i, u in enumerate(USERS) for k in range(4)]
    for half in (rows[:80], rows[80:]):
        ip.append(table, pa.table({"user_id": [r[0] for r in half], "n": [r[1] for r in half], "note": [r[2] for r in half]}))
    table = catalog.load_table("db.rg")
    first = min((t.file for t in table.scan().plan_files()), key=lambda f: f.lower_bounds[1])
    table = commit_delete_file(table, first, [0, 9, 17])  # user-000's first row, user-002's second, ...
    with table.update_schema() as up:
        up.rename_column("note", "remark")
    return catalog.load_table("db.rg")


def _hints(table: Any, tasks: list[Any], users: set[str]) -> dict[str, tuple[int, ...]]:
    out = {}
    for t in tasks:
        with table.io.new_input(t.file.file_path).open() as fh:
            pf = pq.ParquetFile(fh)
            out[t.file.file_path] = tuple(g for g in range(pf.metadata.num_row_groups)
                                          if users & set(pf.read_row_group(g, columns=["user_id"]).column(0).to_pylist()))
    return out


def test_pushdown_reads_row_groups_with_deletes_and_renames(spark: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    table = _table(home)
    for where, users in (("user_id = 'user-000'", ["user-000"]), ("user_id in ('user-002', 'user-031', 'x')",
                                                                   ["user-002", "user-031", "x"])):
        pushed = rows_of_spark(read(spark, home, "db.rg").where(where))
        plain = rows_of_spark(read(spark, home, "db.rg", pushdown="false").where(where))
        found = ip.lookup(table, "user_id", users)
        core = rows_of_arrow(found, found.column_names)  # (names: the snapshot's schema, like the Spark source's)
        assert pushed == plain == core and sum(core.values()) in (3, 7)  # deleted rows stay deleted


def test_executor_read_honours_row_group_hints(spark: Any, tmp_path: Path) -> None:
    """The executor side of a scan (``IcebergPrivacyReader.read``, what Spark runs in its Python workers),
    given the partitions the driver planned with hints set as the exact index sets them."""
    home = tmp_path / "home"
    table = _table(home)
    source = IcebergPrivacyDataSource({"path": "db.rg", "catalog.home": str(home)})
    struct = source.schema()
    users = {"user-005", "user-033"}

    def run(hints: Any) -> tuple[list[Any], Any]:
        reader = source.reader(struct)
        assert list(reader.pushFilters([SparkIn(("user_id",), tuple(sorted(users))),
                                        SparkEqualTo(("n",), 3)])) == [SparkEqualTo(("n",), 3)]  # not a bloom column
        parts = reader.partitions()
        for p in parts:
            p.value.row_groups = hints(p.value.tasks) if hints else {}
        batches = [b for p in parts for b in reader.read(p)]
        return batches, reader.report

    plain, report = run(None)
    got = pa.Table.from_batches(plain)
    assert sorted(got.column("user_id").to_pylist()) == ["user-005"] * 4 + ["user-033"] * 4
    hinted, _ = run(lambda tasks: _hints(table, tasks, users))
    assert pa.Table.from_batches(hinted).sort_by("n").equals(got.sort_by("n"))
    wrong, _ = run(lambda tasks: _hints(table, tasks, {"user-020"}) | {})  # row groups of someone else
    assert sum(b.num_rows for b in wrong) == 0
    assert report.files_read >= 1 and report.row_groups_hinted == 0  # the planner set no hints itself here
