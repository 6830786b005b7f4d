"""The Spark source's pushdown over identity columns of every kind returns exactly what Spark's own filter does.

Pushed filters are not re-evaluated by Spark, so the pushdown must match Spark's equality for each type the
planner accepts (string, decimal, binary, timestamptz in a session time zone other than UTC, ANDed), leave
nested identity columns to Spark, and use the library's one value rule (``hashing.coerce_values``) on the
values Spark hands it. One query, to keep the Spark time down.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    DecimalType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

import iceberg_privacy as ip
from tests.helpers import plan_report, read

pytestmark = pytest.mark.spark  # one Spark job: ~6 s in a warm session (the suite's), ~40 s as the first job of a cold one

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
QUERY = ("uid in ('42', '7', 'nobody') and amount in (42, 7.5) and bin = X'0042' "
         "and at = TIMESTAMP'2024-01-01 22:04:05.000006-05:00' and array_contains(ids, 42)")


def _held(r: dict[str, Any]) -> bool:
    """QUERY in Python, over the rows as written."""
    return (r["uid"] in ("42", "7") and r["amount"] in (Decimal(42), Decimal("7.5")) and r["bin"] == b"\x00\x42"
            and r["at"] == T0 and 42 in (r["ids"] or []))


def test_pushdown_over_every_identity_kind_equals_spark_filter(spark: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.kinds", Schema(
        NestedField(1, "uid", StringType(), required=False),
        NestedField(2, "amount", DecimalType(38, 2), required=False),
        NestedField(3, "bin", BinaryType(), required=False),
        NestedField(4, "at", TimestamptzType(), required=False),
        NestedField(5, "ids", ListType(6, LongType(), element_required=False), required=False),
        NestedField(7, "n", LongType(), required=False)))
    table = ip.configure_bloom(table, ["uid", "amount", "bin", "at", "ids"])
    for start in (0, 4):  # two commits, two files
        ip.append(table, pa.table({
            "uid": ["42", "042", "7", None],
            "amount": pa.array([Decimal("42.00"), Decimal("7.00"), None, Decimal(start)], pa.decimal128(38, 2)),
            "bin": pa.array([b"\x00\x42", b"\x42", None, b""], pa.binary()),
            "at": pa.array([T0, T0 + dt.timedelta(hours=start + 1), None, T0], pa.timestamp("us", tz="UTC")),
            "ids": pa.array([[42, 1], [None], None, [7]], pa.list_(pa.int64())),
            "n": pa.array(range(start, start + 4), pa.int64())}))
    written = table.refresh().scan().to_arrow().to_pylist()
    report = tmp_path / "plan.json"
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        got = sorted(r.n for r in read(spark, home, "db.kinds", plan_report=report).where(QUERY).select("n").collect())
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    pushed = plan_report(report)["pushed_filters"]
    assert sorted(f.split("(")[1].split(",")[0] for f in pushed) == ["amount", "at", "bin", "uid"], pushed
    expected = sorted(r["n"] for r in written if _held(r))
    assert got == expected == [0, 4]
