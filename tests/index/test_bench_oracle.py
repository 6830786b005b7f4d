"""The benchmarks' batch oracle (``benchmarks.harness.key_layout`` / ``decode_floor``): the row groups it says hold
a key are exactly those the written rows put a key in, and the decode floor decodes exactly those row groups.

The scale benchmark reports ``oracle_file_share``, ``oracle_row_group_share`` and ``speedup_bound`` from these
two functions, next to the batch speedup; a wrong oracle would make those numbers lie, so it is checked here
against the row positions written (row ``i`` of an append lands in row group ``i // limit`` of its one file).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from benchmarks.harness import decode_floor, key_layout

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))
_names = iter(range(10**6))


def _write(cat: Catalog, ns: str, appends: list[list[int]], limit: int) -> Any:
    t = cat.create_table(f"{ns}.oracle_{next(_names)}", SCHEMA, properties={"write.parquet.row-group-limit": str(limit)})
    for users in appends:
        ip.append(t, pa.table({"user_id": pa.array([f"u{u}" for u in users], pa.string()),
                               "n": pa.array(range(len(users)), pa.int64())}))
        t = t.refresh()
    return t


def _expected(t: Any, appends: list[list[int]], limit: int, keys: set[int]) -> dict[int, set[int]]:
    """append index -> row groups holding a key, from the row positions written."""
    return {a: groups for a, users in enumerate(appends)
            if (groups := {i // limit for i, u in enumerate(users) if u in keys})}


@settings(max_examples=12)
@given(appends=st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=40), min_size=1, max_size=3),
       limit=st.integers(1, 12), keys=st.sets(st.integers(0, 40), max_size=8))
def test_key_layout_finds_exactly_the_row_groups_written_with_a_key(shared_catalog: Catalog, appends: list[list[int]],
                                                                    limit: int, keys: set[int]) -> None:
    t = _write(shared_catalog, "db", appends, limit)
    layout = key_layout(t, pa.array([f"u{k}" for k in keys], pa.string()))
    # One file per append; files come back in plan order, not necessarily append order: compare the
    # row-group sets as multisets.
    want = _expected(t, appends, limit, keys)
    got = sorted(sorted(v) for v in layout.hits.values())
    assert got == sorted(sorted(v) for v in want.values())
    assert layout.files_total == len(appends)
    assert layout.row_groups_total == sum(-(-len(u) // limit) for u in appends)
    shares = layout.shares()
    assert shares["oracle_row_group_share"] == round(layout.row_groups_hit / layout.row_groups_total, 6)
    assert 0 <= shares["oracle_byte_share"] <= 1

    floor = decode_floor(t, layout, 1)
    assert floor["full_rows_decoded"] == sum(len(u) for u in appends)
    assert floor["floor_rows_decoded"] == sum(min(limit, len(appends[a]) - g * limit)
                                              for a, groups in want.items() for g in groups)
    if not want:
        assert floor["speedup_bound"] is None and layout.files_hit == 0


def test_key_layout_reads_through_the_catalogs_file_io_on_s3(s3_catalog: tuple[Catalog, str]) -> None:
    cat, ns = s3_catalog
    appends = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 1, 7]]
    t = _write(cat, ns, appends, 2)
    assert next(iter(t.scan().plan_files())).file.file_path.startswith("s3://")
    layout = key_layout(t, pa.array(["u1", "u9"], pa.string()))
    # [u1 u2][u3 u4][u5 u6] and [u7 u8][u9 u1][u7]: u1 in the first group of one file, u9 and u1 in the second of the other
    assert sorted(sorted(v) for v in layout.hits.values()) == [[0], [1]]
    assert (layout.files_hit, layout.row_groups_hit, layout.row_groups_total) == (2, 2, 6)
    floor = decode_floor(t, layout, 1)
    assert (floor["floor_rows_decoded"], floor["full_rows_decoded"]) == (4, 11)
