"""DP releases after a metadata-only schema change (a rename, a swap of two names, an added column: no new
snapshot). The verbs validate column names against the table's current schema, so the snapshot must be read by
those names' field ids, and the memo must not answer with a release made when the names meant other columns.

Before: pyiceberg read a snapshot through the schema it was written with, so after ``a`` and ``b`` swapped names
``SUM(a)`` released the sum of the column now called ``b`` (and the memo returned the answer of the old ``a``);
after a rename the new name failed the release with "is Spark installed?"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy._internal.spark import read_snapshot
from iceberg_privacy.dp import PureDP, set_namespace_budget
from tests.helpers import make_catalog

ROWS = 200


def _swap(catalog: Catalog, name: str, x: str, y: str) -> None:
    table = catalog.load_table(name)
    for old, new in ((x, "swap_tmp"), (y, x), ("swap_tmp", y)):
        with table.update_schema() as u:
            u.rename_column(old, new)


@pytest.fixture
def small(tmp_path: Path) -> Catalog:
    """``db.t``: ``a`` is 1 and ``b`` is 1000 in each of 200 rows, one snapshot."""
    cat = make_catalog(tmp_path)
    cat.create_namespace("db")
    data = pa.table({"a": pa.array([1] * ROWS, pa.int64()), "b": pa.array([1000] * ROWS, pa.int64()),
                     "k": pa.array(["x", "y"] * (ROWS // 2))})
    cat.create_table("db.t", schema=data.schema).append(data)
    set_namespace_budget(cat, "db", PureDP(100))
    return cat


def test_a_snapshot_is_read_by_the_current_names(small: Catalog) -> None:
    _swap(small, "db.t", "a", "b")
    with small.load_table("db.t").update_schema() as u:
        u.add_column("added", StringType())
    table = small.load_table("db.t")
    snap = table.current_snapshot()
    assert snap is not None and snap.schema_id != table.schema().schema_id  # no snapshot came with the changes
    data = read_snapshot(table, snap.snapshot_id, ["a", "added"])
    assert set(data.column("a").to_pylist()) == {1000}  # what the table calls `a` now
    assert data.column("added").null_count == ROWS


def test_dp_sql_after_a_swap_of_names_answers_about_the_current_column(small: Catalog, spark: Any) -> None:
    sql = "SELECT SUM(CLAMP(a, 0, 1000)) AS s FROM db.t"
    kw: dict[str, Any] = {"budget": 5.0, "privacy_unit": ip.ROWS, "spark": spark}
    before = ip.dp_sql(small, sql, **kw)
    assert abs(before.rows.column("s")[0].as_py() - ROWS) < 5_000  # Laplace scale 200
    _swap(small, "db.t", "a", "b")
    after = ip.dp_sql(small, sql, **kw)
    assert not after.memoized, "the memo answered with the release about the column that was called a"
    assert abs(after.rows.column("s")[0].as_py() - 1000 * ROWS) < 5_000
    again = ip.dp_sql(small, sql, **kw)  # the same question under the same names is still memoized
    assert again.memoized and again.release_id == after.release_id
    # a plain rename: the new name is released (before: the release failed before the reservation)
    with small.load_table("db.t").update_schema() as u:
        u.rename_column("k", "key")
    renamed = ip.dp_histogram("db.t", ["key"], catalog=small, budget=PureDP(5), privacy_unit=ip.ROWS,
                              keys={"key": ["x", "y"]}, spark=spark)
    counts = dict(zip(renamed.data.column("key").to_pylist(), renamed.data.column("count").to_pylist(), strict=True))
    assert set(counts) == {"x", "y"} and all(abs(v - ROWS // 2) < 20 for v in counts.values())


_OPS = st.lists(st.tuples(st.sampled_from(["rename", "add", "drop"]), st.integers(0, 10)), max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_reading_a_snapshot_by_current_names_is_what_the_table_shows(small: Catalog, ops: list[tuple[str, int]]
                                                                     ) -> None:
    """Property: after any metadata-only sequence of renames, added and dropped columns, the current snapshot read
    by the current names (what every DP verb reads) equals the table's own current scan of those names."""
    import uuid

    name = f"db.p_{uuid.uuid4().hex[:8]}"
    data = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "b": pa.array(["x", "y", None]),
                     "c": pa.array([0.5, None, 2.5])})
    small.create_table(name, schema=data.schema).append(data)
    for op, n in ops:
        table = small.load_table(name)
        cols = [f.name for f in table.schema().fields]
        with table.update_schema() as u:
            if op == "rename":
                target = f"r{n}"
                if target not in cols:
                    u.rename_column(cols[n % len(cols)], target)
            elif op == "add":
                if f"n{n}" not in cols:
                    u.add_column(f"n{n}", StringType())
            elif len(cols) > 1:
                u.delete_column(cols[n % len(cols)])
    table = small.load_table(name)
    snap = table.current_snapshot()
    assert snap is not None
    cols = [f.name for f in table.schema().fields]
    assert read_snapshot(table, snap.snapshot_id, cols).select(cols) == table.scan(selected_fields=tuple(cols)).to_arrow().select(cols)
