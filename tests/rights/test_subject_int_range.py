"""Integer subject values beyond what a column can store (an int64 of microseconds for timestamps,
int32 days for dates) name nobody: 0 rows, never an OverflowError from building the Arrow value set."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DateType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
)

import iceberg_privacy as ip

T = dt.datetime(2025, 1, 1, 12)


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cat = ip.connect(home=tmp_path_factory.mktemp("ints") / "home")
    cat.create_namespace("db")
    table = cat.create_table("db.t", Schema(
        NestedField(1, "n", LongType(), required=False), NestedField(2, "i", IntegerType(), required=False),
        NestedField(3, "d", DateType(), required=False), NestedField(4, "ts", TimestampType(), required=False),
        NestedField(5, "tz", TimestamptzType(), required=False), NestedField(6, "v", StringType(), required=False)))
    table = ip.configure_identity(table, ["n", "i", "d", "ts", "tz"])
    ip.append(table, pa.table({
        "n": pa.array([1, 2], pa.int64()), "i": pa.array([7, 8], pa.int32()),
        "d": pa.array([dt.date(2025, 1, 1), None], pa.date32()), "ts": pa.array([T, None], pa.timestamp("us")),
        "tz": pa.array([T.replace(tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")), "v": ["a", "b"]}))
    return cat


@settings(max_examples=6)
@example(value=2 ** 70)
@example(value=-(2 ** 64))
@given(value=st.one_of(st.integers(min_value=2 ** 31 - 10, max_value=2 ** 80),
                       st.integers(min_value=-(2 ** 80), max_value=-(2 ** 31) + 10)))
def test_huge_ints_name_nobody(typed: Catalog, value: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    out: Path = tmp_path_factory.mktemp("x")
    report = ip.access(typed, [value], ["db.t"], out=out)
    assert report.rows == 0


def test_in_range_int_still_matches(typed: Catalog, tmp_path: Path) -> None:
    assert ip.access(typed, [2], ["db.t"], out=tmp_path).rows == 1
