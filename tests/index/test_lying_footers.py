"""A Puffin footer has no checksum: an entry that maps a column to another column's blob passes every check of the
blob itself (magic, geometry, CRCs). Such a sidecar must mean "scan its files" with a warning, never a skipped file."""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index.registry import sidecar_refs
from iceberg_privacy.index.sidecar import clear_sidecar_cache

SCHEMA = Schema(NestedField(1, "rid", LongType(), required=False), NestedField(2, "a", StringType(), required=False),
                NestedField(3, "b", StringType(), required=False))


def _table(catalog, name: str, kind: str):  # type: ignore[no-untyped-def]
    t = catalog.create_table(name, SCHEMA)
    t = ip.configure_index(t, "a", kind)
    t = ip.configure_index(t, "b", kind)
    # a: 100 distinct ids, b: 50 (so the two columns' exact index blobs hold different numbers of entries)
    ip.append(t, pa.table({"rid": pa.array(range(100), pa.int64()), "a": [f"a{i}" for i in range(100)],
                           "b": [f"b{i % 50}" for i in range(100)]}))
    return t.refresh()


def _rewrite_footer(table, edit: Callable[[list[dict[str, Any]]], None]) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the footer JSON of the table's one sidecar (same blobs, same bytes before the footer), through the
    table's FileIO (local or object storage)."""
    (ref,) = sidecar_refs(table.metadata)
    with table.io.new_input(ref.location).open() as f:
        data = f.read()
    (n,) = struct.unpack("<i", data[-12:-8])
    doc = json.loads(data[-12 - n:-12])
    edit(doc["blobs"])
    payload = json.dumps(doc, separators=(",", ":")).encode()
    with table.io.new_output(ref.location).create(overwrite=True) as f:
        f.write(data[: len(data) - 12 - n] + payload + struct.pack("<i", len(payload)) + data[-8:])
    clear_sidecar_cache()


def _lookup(table, value: str) -> tuple[list[int], list[str]]:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = ip.lookup(table, "a", [value]).column("rid").to_pylist()
    return rows, [str(w.message) for w in caught]


def _point_a_at_b(blobs: list[dict[str, Any]]) -> None:
    by_field = {(b["type"], tuple(b["fields"])): b for b in blobs}
    for blob_type in {b["type"] for b in blobs if b["fields"]}:
        a, b = by_field[(blob_type, (2,))], by_field[(blob_type, (3,))]
        a["offset"], a["length"] = b["offset"], b["length"]


@pytest.mark.parametrize("kind", ["bloom", "exact", "bloom,exact"])
def test_a_footer_entry_pointing_at_another_columns_blob_means_scan(catalog, kind: str) -> None:
    t = _table(catalog, "db.lying_offsets", kind)
    _rewrite_footer(t, _point_a_at_b)
    rows, warned = _lookup(t, "a5")
    assert rows == [5]
    assert any("overlaps another blob" in w for w in warned), warned


def test_s3_a_footer_entry_pointing_at_another_columns_blob_means_scan(s3_catalog) -> None:  # type: ignore[no-untyped-def]
    catalog, ns = s3_catalog
    t = _table(catalog, f"{ns}.lying_offsets", "bloom,exact")
    _rewrite_footer(t, _point_a_at_b)
    rows, warned = _lookup(t, "a5")
    assert rows == [5]
    assert any("overlaps another blob" in w for w in warned), warned


def test_exact_index_blobs_of_two_columns_swapped_in_the_footer_are_not_used(catalog) -> None:
    t = _table(catalog, "db.lying_fields", "exact")

    def swap_fields(blobs: list[dict[str, Any]]) -> None:
        index = [b for b in blobs if b["type"] == "iceberg-privacy-exact-v1"]
        assert len(index) == 2
        index[0]["fields"], index[1]["fields"] = index[1]["fields"], index[0]["fields"]

    _rewrite_footer(t, swap_fields)
    rows, warned = _lookup(t, "a5")
    assert rows == [5]
    assert any("corrupt footer" in w for w in warned), warned
