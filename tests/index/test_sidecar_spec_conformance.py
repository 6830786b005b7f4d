"""docs/sidecar-format.md as a contract: its test vectors and its byte layout, checked on what the library writes.

The vectors of Appendix A are computed three ways: from the spec's own formulas (``mmh3``, the SplitMix64 lines),
by the write path (``hash_array`` over Arrow arrays of each type) and by the probe path (``coerce_values`` +
``hash_literals``, as a lookup binds its values). The layout is read back by a reader written from the spec alone
(``struct``, ``zlib``, ``json``: no library reader), on a table with every identity type and nested identity
columns: every CRC, length formula and header field, the registration (statistics entry, snapshot summary), and
every written value answers "maybe" in its own file. Appendix B's bloom blob is compared byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import mmh3
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    FixedType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    UUIDType,
)

import iceberg_privacy as ip
from iceberg_privacy.index import bloom
from iceberg_privacy.index.hashing import coerce_values, hash_array, hash_literals, mix64

M64 = (1 << 64) - 1
SALT = (0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31)

# -- the spec's formulas, written from the text -------------------------------------------------------------------


def spec_h31(data: bytes) -> int:
    return (mmh3.hash(data, 0, signed=False) & 0x7FFFFFFF) % 2147483647


def spec_mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def spec_block(key: int, m: int) -> int:
    return ((key >> 32) * m) >> 32


def spec_masks(key: int) -> list[int]:
    return [1 << ((((key & 0xFFFFFFFF) * s) & 0xFFFFFFFF) >> 27) for s in SALT]


def spec_serialize(kind: str, value: Any) -> bytes:
    """2.2: ints, dates and timestamps as 8-byte little-endian longs; decimals in their minimum big-endian bytes."""
    if kind in ("int", "long", "date", "timestamp"):
        return struct.pack("<q", value)
    if kind == "string":
        return value.encode()
    if kind == "uuid":
        return uuid.UUID(value).bytes
    if kind in ("binary", "fixed"):
        return value
    unscaled = value
    return unscaled.to_bytes(((~unscaled if unscaled < 0 else unscaled).bit_length() // 8) + 1, "big", signed=True)


# -- Appendix A ---------------------------------------------------------------------------------------------------

UUID = "f79c3e09-677c-4bbd-a479-3f349cb785e7"
D92 = DecimalType(9, 2)
# (type, the value as a lookup gives it, the same value as an Arrow array, the spec's serialization input,
#  h31, key, block(key, 10), masks w0..w7 or None for "same as the row above")
APPENDIX_A: list[tuple[PrimitiveType, Any, pa.Array, tuple[str, Any], int, int, int, str | None]] = [
    (StringType(), "iceberg", pa.array(["iceberg"]), ("string", "iceberg"), 1210000089, 0x0B98373929903C6C, 0,
     "00040000 00000100 00000008 00040000 00000400 00000080 02000000 00004000"),
    (StringType(), "user-42", pa.array(["user-42"]), ("string", "user-42"), 963828432, 0x3CC63954372E1DC0, 2,
     "00000400 00200000 40000000 04000000 00008000 02000000 00000080 00000040"),
    (StringType(), "Zoë", pa.array(["Zoë"]), ("string", "Zoë"), 108080410, 0x92F46A2D79717BC4, 5,
     "00000008 80000000 00001000 00400000 04000000 02000000 04000000 00200000"),
    (StringType(), "東京", pa.array(["東京"]), ("string", "東京"), 381620546, 0xF7E440955DF1AC6E, 9,
     "00000020 04000000 00001000 00000080 00001000 00008000 00080000 00020000"),
    (StringType(), "", pa.array([""]), ("string", ""), 0, 0xE220A8397B1DCDAF, 8,
     "00000010 00010000 02000000 20000000 00000008 00000010 00000008 00100000"),
    (IntegerType(), 34, pa.array([34], pa.int32()), ("int", 34), 2017239379, 0xD150539873C8E545, 8,
     "00200000 00040000 04000000 40000000 00000800 00200000 00200000 01000000"),
    (LongType(), 34, pa.array([34], pa.int64()), ("long", 34), 2017239379, 0xD150539873C8E545, 8, None),
    (IntegerType(), -1, pa.array([-1], pa.int32()), ("int", -1), 1651860712, 0x8F61D06C8EB9146A, 5,
     "00000080 00400000 80000000 00000008 00800000 00001000 10000000 00002000"),
    (LongType(), -1, pa.array([-1], pa.int64()), ("long", -1), 1651860712, 0x8F61D06C8EB9146A, 5, None),
    (LongType(), 2**40, pa.array([2**40], pa.int64()), ("long", 2**40), 703999778, 0xAC2E32B72329AADA, 6,
     "20000000 00000010 00008000 00000020 00000001 00000040 00000800 00000400"),
    (UUIDType(), UUID, pa.array([uuid.UUID(UUID).bytes], pa.uuid()), ("uuid", UUID), 1488055340,
     0x3092E456FE9C5C37, 1, "01000000 00000080 00000800 00000200 00000080 00001000 20000000 00000800"),
    (BinaryType(), b"\x00\x01\x02\x03", pa.array([b"\x00\x01\x02\x03"]), ("binary", b"\x00\x01\x02\x03"),
     1958800441, 0x84B38B8D8362115B, 5, "80000000 00000400 01000000 10000000 00400000 00000008 00100000 00000100"),
    (FixedType(4), b"\x00\x01\x02\x03", pa.array([b"\x00\x01\x02\x03"], pa.binary(4)), ("fixed", b"\x00\x01\x02\x03"),
     1958800441, 0x84B38B8D8362115B, 5, None),
    (DateType(), "2017-11-16", pa.array([dt.date(2017, 11, 16)]), ("date", 17486), 1494153226, 0x490CC0CD923D6E43, 2,
     "02000000 00000010 00080000 00010000 20000000 00000100 40000000 00001000"),
    (DateType(), "1969-12-31", pa.array([dt.date(1969, 12, 31)]), ("date", -1), 1651860712, 0x8F61D06C8EB9146A, 5,
     None),
    (TimestampType(), "2017-11-16T22:31:08", pa.array([dt.datetime(2017, 11, 16, 22, 31, 8)], pa.timestamp("us")),
     ("timestamp", 1510871468000000), 99539207, 0xA11DA81AA4541303, 6,
     "00020000 00001000 00008000 00001000 00000080 00000080 00000008 20000000"),
    (TimestamptzType(), "2017-11-16T14:31:08-08:00",
     pa.array([dt.datetime(2017, 11, 16, 22, 31, 8, tzinfo=dt.UTC)], pa.timestamp("us", "UTC")),
     ("timestamp", 1510871468000000), 99539207, 0xA11DA81AA4541303, 6, None),
    (D92, "14.20", pa.array([Decimal("14.20")], pa.decimal128(9, 2)), ("decimal", 1420), 1646729059,
     0xA8424C43451BEEBC, 6, "00000010 00000200 10000000 00000800 00040000 00000080 00000020 40000000"),
    (D92, "-14.20", pa.array([Decimal("-14.20")], pa.decimal128(9, 2)), ("decimal", -1420), 667775751,
     0x42557DC947DA3A06, 2, "00100000 00000010 00000800 00004000 00020000 80000000 80000000 00000010"),
    (D92, "0.00", pa.array([Decimal("0.00")], pa.decimal128(9, 2)), ("decimal", 0), 1364076727, 0x036AE3D8B82CEB96, 0,
     "20000000 00100000 00100000 00000200 00000080 00400000 00000800 00200000"),
]


@pytest.mark.parametrize("typ, literal, arrow, spec_input, h31, key, block, masks", APPENDIX_A,
                         ids=[f"{r[0]}:{r[1]!s}" for r in APPENDIX_A])
def test_appendix_a_vectors_hold_for_the_spec_the_writer_and_the_lookup(
        typ: PrimitiveType, literal: Any, arrow: pa.Array, spec_input: tuple[str, Any], h31: int, key: int, block: int,
        masks: str | None) -> None:
    assert spec_h31(spec_serialize(*spec_input)) == h31  # the table agrees with its own formulas
    assert spec_mix64(h31) == key and spec_block(key, 10) == block
    if masks is not None:
        assert [f"{w:08x}" for w in spec_masks(key)] == masks.split()
    assert hash_array(arrow).tolist() == [h31]  # the write path (the filter's inserted keys)
    assert hash_literals(coerce_values([literal], typ, "c"), typ).tolist() == [h31]  # the lookup path
    keys = mix64(np.array([h31], dtype=np.uint64))
    assert keys.tolist() == [key]
    assert bloom.block_index(keys, 10).tolist() == [block]
    assert [int(w) for w in bloom.block_masks(keys)[0]] == spec_masks(key)


def test_the_cross_check_with_icebergs_appendix_b_table() -> None:
    """The spec's last paragraph of Appendix A: signed Murmur3 values of Iceberg's table, reduced to h31."""
    signed = {("long", 34): 2017239379, ("decimal", 1420): -500754589, ("date", 17486): -653330422,
              ("timestamp", 1510871468000000): -2047944441, ("string", "iceberg"): 1210000089,
              ("uuid", UUID): 1488055340, ("binary", b"\x00\x01\x02\x03"): -188683207}
    for spec_input, h in signed.items():
        data = spec_serialize(*spec_input)
        assert mmh3.hash(data, 0) == h
        assert spec_h31(data) == (h & 0x7FFFFFFF) % (2**31 - 1)


# -- a reader of the spec alone -----------------------------------------------------------------------------------


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def read_sidecar(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, list[tuple[int, list[int], bytes]]]]:
    """(footer JSON, files, {field id: [(M, ordinals, blob bytes)]}), every check of sections 4 and 6 (R1)."""
    assert data[:4] == b"PFA1" and data[-4:] == b"PFA1"
    assert data[-8:-4] == b"\x00\x00\x00\x00"  # flags: uncompressed
    (payload,) = struct.unpack("<i", data[-12:-8])
    start = len(data) - 12 - payload - 4
    assert data[start:start + 4] == b"PFA1"
    footer = json.loads(data[start + 4:start + 4 + payload])
    assert footer["properties"]["format"] == "iceberg-privacy-sidecar-v1"
    for b in footer["blobs"]:
        assert 4 <= b["offset"] and b["offset"] + b["length"] <= start, b  # 4.1: within [4, size - footer size)
    files_blobs = [b for b in footer["blobs"] if b["type"] == "iceberg-privacy-files-v1"]
    assert len(files_blobs) == 1 and files_blobs[0]["fields"] == [] and "compression-codec" not in files_blobs[0]
    raw = data[files_blobs[0]["offset"]:][:files_blobs[0]["length"]]
    magic, version, n, json_crc = struct.unpack("<4sIII", raw[:16])
    assert (magic, version, len(raw)) == (b"IPFL", 1, 16 + n) and crc(raw[16:]) == json_crc
    files = json.loads(raw[16:])["files"]
    filters: dict[int, list[tuple[int, list[int], bytes]]] = {}
    for b in footer["blobs"]:
        if b["type"] != "iceberg-privacy-bloom-v1":
            continue
        assert len(b["fields"]) == 1 and "compression-codec" not in b  # C2
        raw = data[b["offset"]:][:b["length"]]
        magic, version, m, f, scheme, header_crc = struct.unpack("<4sIIIII", raw[:24])
        assert (magic, version, scheme) == (b"IPBF", 1, 1) and crc(raw[:20]) == header_crc and m >= 1
        assert len(raw) == 28 + 8 * f + m * (32 * f + 4)
        assert b["properties"]["num-blocks"] == str(m) and b["properties"]["num-files"] == str(f)  # 4.6 SHOULD
        ordinals = list(struct.unpack(f"<{f}I", raw[24:24 + 4 * f]))
        assert crc(raw[24:24 + 8 * f]) == struct.unpack("<I", raw[24 + 8 * f:28 + 8 * f])[0]
        for row in range(m):
            at = 28 + 8 * f + row * (32 * f + 4)
            assert crc(raw[at:at + 32 * f]) == struct.unpack("<I", raw[at + 32 * f:at + 32 * f + 4])[0]
        filters.setdefault(b["fields"][0], []).append((m, ordinals, raw))
    for field_id, groups in filters.items():  # C3, C4
        seen = [o for _, ordinals, _ in groups for o in ordinals]
        assert len(seen) == len(set(seen)) and all(o < len(files) for o in seen), field_id
    return footer, files, filters


def spec_may_hold(groups: list[tuple[int, list[int], bytes]], key: int) -> dict[int, bool]:
    """4.7: one row per bloom blob; ordinal -> check(key)."""
    out = {}
    masks = spec_masks(key)
    for m, ordinals, raw in groups:
        f = len(ordinals)
        row = 28 + 8 * f + spec_block(key, m) * (32 * f + 4)
        for j, o in enumerate(ordinals):
            words = struct.unpack("<8I", raw[row + 32 * j:row + 32 * j + 32])
            out[o] = all(w & mk for w, mk in zip(words, masks, strict=True))
    return out


def local(uri: str) -> Path:
    assert uri.startswith("file://")
    return Path(uri[len("file://"):])


SCHEMA = Schema(
    NestedField(1, "s", StringType(), required=False), NestedField(2, "l", LongType(), required=False),
    NestedField(3, "i", IntegerType(), required=False), NestedField(4, "b", BinaryType(), required=False),
    NestedField(5, "u", UUIDType(), required=False), NestedField(6, "d", DecimalType(9, 2), required=False),
    NestedField(7, "dt", DateType(), required=False), NestedField(8, "ts", TimestampType(), required=False),
    NestedField(9, "tz", TimestamptzType(), required=False), NestedField(10, "f", FixedType(4), required=False),
    NestedField(11, "st", StructType(NestedField(12, "id", LongType(), required=False),
                                     NestedField(13, "x", StringType(), required=False)), required=False),
    NestedField(14, "ls", ListType(15, StringType(), element_required=False), required=False),
    NestedField(16, "m", MapType(17, StringType(), 18, ListType(19, StructType(
        NestedField(20, "id", StringType(), required=False)), element_required=False), value_required=False),
        required=False),
)
# column -> (serialization kind of its leaf, the values of batch k: one per row; None = a null row)
LEAF = {"s": "string", "l": "long", "i": "int", "b": "binary", "u": "uuid", "d": "decimal", "dt": "date",
        "ts": "timestamp", "tz": "timestamp", "f": "fixed", "st": "long", "ls": "string", "m": "string"}


def _batch(k: int) -> tuple[pa.Table, dict[str, list[Any]]]:
    """Rows of batch ``k`` and, per column, the identity values they hold in spec_serialize's form."""
    n = 4
    epoch = dt.datetime(1970, 1, 1)
    days = [17486 + 10 * k + j for j in range(n)]
    micros = [1510871468000000 + 10**6 * (10 * k + j) for j in range(n)]
    table = pa.table({
        "s": [f"user-{k}-{j}" if j else None for j in range(n)],
        "l": pa.array([2**40 + 10 * k + j for j in range(n)], pa.int64()),
        "i": pa.array([-(10 * k + j) for j in range(n)], pa.int32()),
        "b": pa.array([bytes([0, 1, k, j]) for j in range(n)]),
        "u": pa.array([uuid.UUID(int=1000 * k + j).bytes for j in range(n)], pa.uuid()),
        "d": pa.array([Decimal(10 * k + j) / 100 - Decimal("1.28") for j in range(n)], pa.decimal128(9, 2)),
        "dt": pa.array([dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in days]),
        "ts": pa.array([epoch + dt.timedelta(microseconds=m) for m in micros], pa.timestamp("us")),
        "tz": pa.array([(epoch + dt.timedelta(microseconds=m + 1)).replace(tzinfo=dt.UTC) for m in micros],
                       pa.timestamp("us", "UTC")),
        "f": pa.array([bytes([9, 9, k, j]) for j in range(n)], pa.binary(4)),
        "st": pa.array([{"id": 7000 + 10 * k + j, "x": "not an identity"} for j in range(n)],
                       pa.struct([("id", pa.int64()), ("x", pa.string())])),
        "ls": pa.array([[f"a{k}{j}", f"b{k}{j}"] if j != 2 else None for j in range(n)], pa.list_(pa.string())),
        "m": pa.array([[("email", [{"id": f"m{k}{j}@x"}])] for j in range(n)],
                      pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string())])))),
    })
    values: dict[str, list[Any]] = {
        "s": [f"user-{k}-{j}" for j in range(1, n)], "l": [2**40 + 10 * k + j for j in range(n)],
        "i": [-(10 * k + j) for j in range(n)], "b": [bytes([0, 1, k, j]) for j in range(n)],
        "u": [str(uuid.UUID(int=1000 * k + j)) for j in range(n)], "d": [10 * k + j - 128 for j in range(n)],
        "dt": days, "ts": micros, "tz": [m + 1 for m in micros], "f": [bytes([9, 9, k, j]) for j in range(n)],
        "st": [7000 + 10 * k + j for j in range(n)],
        "ls": [v for j in range(n) if j != 2 for v in (f"a{k}{j}", f"b{k}{j}")],
        "m": [f"m{k}{j}@x" for j in range(n)],
    }
    return table, values


def test_a_reader_of_the_spec_alone_decodes_every_sidecar_the_library_writes(catalog: Catalog) -> None:
    table = catalog.create_table("db.spec", SCHEMA)
    table = ip.configure_bloom(table, list(LEAF))
    written: dict[str, dict[str, list[Any]]] = {}  # data file path -> column -> identity values
    for k in range(3):
        rows, values = _batch(k)
        before = {t.file.file_path for t in table.refresh().scan().plan_files()}
        ip.append(table, rows)
        (path,) = {t.file.file_path for t in table.refresh().scan().plan_files()} - before
        written[path] = values
    table = table.refresh()
    live = {t.file.file_path: t.file for t in table.scan().plan_files()}
    field_ids = {f.name: f.field_id for f in table.schema().fields}
    stats = {s.snapshot_id: s for s in table.metadata.statistics}
    assert len(stats) == 3
    for snap in table.snapshots():
        summary = snap.summary.additional_properties  # type: ignore[union-attr]
        entry = stats[snap.snapshot_id]  # 5.2: a statistics entry and a summary reference, same commit
        assert entry.statistics_path == summary["privacy.sidecar.path"]
        assert entry.statistics_path.endswith(".privacy-sidecar.stats") and entry.blob_metadata == []
        assert entry.statistics_path.startswith(table.location() + "/metadata/")
        data = local(entry.statistics_path).read_bytes()
        assert len(data) == entry.file_size_in_bytes == int(summary["privacy.sidecar.bytes"])  # R2
        footer, files, filters = read_sidecar(data)
        (payload,) = struct.unpack("<i", data[-12:-8])
        assert entry.file_footer_size_in_bytes == payload + 16  # 4.1
        assert all(b["snapshot-id"] == snap.snapshot_id and b["sequence-number"] == snap.sequence_number
                   for b in footer["blobs"])
        assert summary["privacy.sidecar.files"] == str(len(files)) and summary["privacy.sidecar.columns"] == ",".join(LEAF)
        for ordinal, f in enumerate(files):  # 4.3: the manifest's path, record count and size
            assert (f["record-count"], f["file-size-in-bytes"]) == (live[f["path"]].record_count,
                                                                  live[f["path"]].file_size_in_bytes)
            assert sorted(filters) == sorted(field_ids[c] for c in LEAF)
            for column, kind in LEAF.items():
                groups = filters[field_ids[column]]
                for v in written[f["path"]][column]:  # every identity value: "maybe" (no false negative)
                    assert spec_may_hold(groups, spec_mix64(spec_h31(spec_serialize(kind, v))))[ordinal], (column, v)
    # "which files may hold v?" answered by the spec reader agrees with the library's own plan
    for column, value, kind, spec_value in [("s", "user-1-2", "string", "user-1-2"), ("i", -21, "int", -21),
                                           ("st", 7012, "long", 7012), ("m", "m23@x", "string", "m23@x"),
                                           ("tz", "2017-11-16T22:31:28.000001+00:00", "timestamp",
                                            1510871468000000 + 20 * 10**6 + 1)]:
        key = spec_mix64(spec_h31(spec_serialize(kind, spec_value)))
        maybe = set()
        for s in table.metadata.statistics:
            _, files, filters = read_sidecar(local(s.statistics_path).read_bytes())
            maybe |= {files[o]["path"] for o, hit in spec_may_hold(filters[field_ids[column]], key).items() if hit}
        plan = ip.plan_lookup(table, column, value)
        assert {t.file.file_path for t in plan.tasks} == maybe and len(maybe) == 1, column
        assert ip.lookup(table, column, value).num_rows == 1


def test_appendix_b_bloom_blob_is_what_the_library_writes(catalog: Catalog) -> None:
    """Appendix B's example, written as it says: blob 1's 72 bytes exactly, and every offset and length that does
    not depend on the data file's path."""
    table = catalog.create_table("db.users", Schema(NestedField(1, "user_id", StringType(), required=False)))
    table = ip.configure_bloom(table, ["user_id"])
    ip.append(table, pa.table({"user_id": ["alice", "bob", "Zoë"]}))
    table = table.refresh()
    (entry,) = table.metadata.statistics
    data = local(entry.statistics_path).read_bytes()
    footer, files, filters = read_sidecar(data)
    files_blob, bloom_blob = footer["blobs"]
    assert (files_blob["offset"], bloom_blob["length"], bloom_blob["offset"]) == (4, 72, 4 + files_blob["length"])
    assert footer["blobs"][1]["properties"] == {"num-blocks": "1", "num-files": "1", "column": "user_id"}
    assert footer["properties"]["created-by"].startswith("iceberg-privacy ")
    ((m, ordinals, raw),) = filters[1]
    assert bytes.fromhex(
        "49 50 42 46 01 00 00 00 01 00 00 00 01 00 00 00 01 00 00 00 57 72 2b 98"
        "00 00 00 00 03 00 00 00 87 70 97 77"
        "28 00 00 00 00 20 80 80 00 10 20 80 30 00 40 00 48 00 00 04 88 00 00 02 00 00 01 0c 00 20 20 00"
        "0a 7f cf 0e") == raw
    json_doc = json.loads(data[20:4 + files_blob["length"]])
    assert json_doc["columns"] == [{"field-id": 1, "name": "user_id", "fpp": 0.01, "ndv-hint": None}]
    assert len(files) == 1 and files[0]["record-count"] == 3
    for value, expected in [("alice", True), ("bob", True), ("Zoë", True), ("carol", False), ("dave", False),
                            ("iceberg", False)]:
        assert spec_may_hold(filters[1], spec_mix64(spec_h31(value.encode()))) == {0: expected}


# -- the same for any value: the spec's formulas against the write path, both hashes -------------------------------


def spec_iph64(data: bytes) -> int:
    """docs/exact-index.md 2.2, from the text."""

    def fmix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    h = fmix(0x9E3779B97F4A7C15 ^ len(data))
    for i in range(0, len(data), 8):
        h = fmix(h ^ int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "little"))
    return h


_EPOCH = dt.datetime(1970, 1, 1)
_MICROS = st.integers(-(2**62), 2**62)
# (kind for spec_serialize, Arrow type, strategy of (value in spec_serialize's form, the same as an Arrow value))
KINDS = {
    "string": (pa.string(), st.text(max_size=40).map(lambda s: (s, s))),
    "int": (pa.int32(), st.integers(-(2**31), 2**31 - 1).map(lambda v: (v, v))),
    "long": (pa.int64(), st.integers(-(2**63), 2**63 - 1).map(lambda v: (v, v))),
    "binary": (pa.binary(), st.binary(max_size=40).map(lambda b: (b, b))),
    "fixed": (pa.binary(5), st.binary(min_size=5, max_size=5).map(lambda b: (b, b))),
    "uuid": (pa.uuid(), st.uuids().map(lambda u: (str(u), u.bytes))),
    "date": (pa.date32(), st.integers(-(2**31), 2**31 - 1).map(lambda d: (d, d))),
    "timestamp": (pa.timestamp("us"), _MICROS.map(lambda m: (m, m))),
    "timestamptz": (pa.timestamp("us", "UTC"), _MICROS.map(lambda m: (m, m))),
    "decimal": (pa.decimal128(38, 4), st.integers(-(10**38) + 1, 10**38 - 1).map(
        lambda u: (u, Decimal(f"{u}e-4")))),
}


@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)))
@settings(max_examples=300, deadline=None)
def test_any_value_hashes_as_the_specs_say(data: st.DataObject, kind: str) -> None:
    """The write path's Bloom key input (h31, docs/sidecar-format.md 2) and exact-index key (IPH64,
    docs/exact-index.md 2) of any value of any identity type equal the spec's formulas over its 2.2 bytes."""
    from iceberg_privacy.index.hash64 import hash64_array

    arrow_type, values = KINDS[kind]
    spec_value, arrow_value = data.draw(values)
    raw = spec_serialize({"timestamptz": "timestamp"}.get(kind, kind), spec_value)
    arr = pa.array([arrow_value], arrow_type) if kind != "uuid" else pa.array([arrow_value], pa.uuid())
    assert hash_array(arr).tolist() == [spec_h31(raw)]
    assert hash64_array(arr).tolist() == [spec_iph64(raw)]
    # the lookup path: the value as a user passes it, bound to the column type (R4)
    iceberg = {"string": StringType(), "int": IntegerType(), "long": LongType(), "binary": BinaryType(),
               "fixed": FixedType(5), "uuid": UUIDType(), "date": DateType(), "timestamp": TimestampType(),
               "timestamptz": TimestamptzType(), "decimal": DecimalType(38, 4)}[kind]
    literal: Any = arrow_value
    if kind == "date":
        if not -719162 <= spec_value <= 2932896:  # Python's date range
            return
        literal = dt.date(1970, 1, 1) + dt.timedelta(days=spec_value)
    elif kind in ("timestamp", "timestamptz"):
        if not -62135596800 * 10**6 <= spec_value <= 253402300799 * 10**6:
            return
        literal = _EPOCH + dt.timedelta(microseconds=spec_value)
        literal = literal.replace(tzinfo=dt.UTC) if kind == "timestamptz" else literal
    elif kind == "uuid":
        literal = spec_value
    if kind == "string" and not spec_value.strip():
        return  # an empty or blank lookup value is refused on purpose (docs/subject-rights.md)
    assert hash_literals(coerce_values([literal], iceberg, "c"), iceberg).tolist() == [spec_h31(raw)]


# -- the other direction: the library reads what the spec allows another writer to write --------------------------


def spec_rewrite(data: bytes) -> bytes:
    """The same sidecar as another conforming writer may lay it out (4.2, 9.2, R7): bloom blobs before the files
    blob and in reverse order, an unknown blob type between them, unknown footer/blob properties and JSON members,
    pretty-printed JSON with raw UTF-8 instead of \\u escapes, other key order."""
    footer, files, _ = read_sidecar(data)
    blobs = {id(b): data[b["offset"]:b["offset"] + b["length"]] for b in footer["blobs"]}
    files_blob = next(b for b in footer["blobs"] if b["type"] == "iceberg-privacy-files-v1")
    doc = json.loads(blobs[id(files_blob)][16:])
    doc["x-writer"] = {"name": "another implementation", "note": "ünïcode"}
    doc["files"] = [{"x-extra": 1, **{k: f[k] for k in reversed(list(f))}} for f in doc["files"]]
    payload = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True).encode()
    blobs[id(files_blob)] = b"IPFL" + struct.pack("<III", 1, len(payload), crc(payload)) + payload
    unknown = {"type": "x-another-writer-stats-v7", "fields": [], "snapshot-id": files_blob["snapshot-id"],
               "sequence-number": files_blob["sequence-number"], "properties": {"anything": "goes"}}
    blobs[id(unknown)] = b"not for us"
    order = [b for b in reversed(footer["blobs"]) if b is not files_blob][:1] + [unknown] + [
        b for b in reversed(footer["blobs"]) if b is not files_blob][1:] + [files_blob]
    out = bytearray(b"PFA1")
    metas = []
    for b in order:
        meta = {k: v for k, v in reversed(list(b.items())) if k not in ("offset", "length")}
        meta.update({"offset": len(out), "length": len(blobs[id(b)])})
        if b["type"] == "iceberg-privacy-bloom-v1":
            meta["properties"] = {**meta.get("properties", {}), "x-hint": "ignored", "column": "renamed since"}
        metas.append(meta)
        out += blobs[id(b)]
    fp = json.dumps({"properties": {**footer["properties"], "x-writer": "other"}, "blobs": metas},
                    indent=1, ensure_ascii=False).encode()
    out += b"PFA1" + fp + struct.pack("<i", len(fp)) + b"\x00\x00\x00\x00" + b"PFA1"
    read_sidecar(bytes(out))  # still valid by the spec's own checks
    return bytes(out)


@pytest.mark.parametrize("kind", ["bloom", "bloom,exact"])
def test_the_library_reads_a_sidecar_laid_out_as_another_conforming_writer_may(catalog: Catalog, kind: str) -> None:
    """The spec lets a writer order blobs, keys and whitespace as it likes, escape or not, and add blob types,
    properties and JSON members (R7: readers ignore them); the exact index's blobs move with the rest (their
    offsets are blob-relative, docs/exact-index.md 3.1). The library's reader must prune with such a sidecar
    exactly as with its own, never fall back to scanning (a lost index) and never prune a file holding the value."""
    from pyiceberg.table.statistics import StatisticsFile

    table = catalog.create_table("db.other", Schema(NestedField(1, "user_id", StringType(), required=False)))
    table = ip.configure_index(table, "user_id", kind)
    for k in range(4):
        ip.append(table, pa.table({"user_id": [f"ü-{k}-{j}" for j in range(50)]}))
    table = table.refresh()
    before = ip.plan_lookup(table, "user_id", "ü-2-7")
    assert len(before.tasks) == 1 and before.files_without_sidecar == 0
    before_entries = list(table.metadata.statistics)
    with table.transaction() as tx:
        for entry in before_entries:
            data = spec_rewrite(local(entry.statistics_path).read_bytes())
            path = entry.statistics_path.replace(".privacy-sidecar.stats", "-other.privacy-sidecar.stats")
            local(path).write_bytes(data)
            (payload,) = struct.unpack("<i", data[-12:-8])
            tx.update_statistics().set_statistics(StatisticsFile(  # type: ignore[call-arg]
                snapshot_id=entry.snapshot_id, statistics_path=path, file_size_in_bytes=len(data),
                file_footer_size_in_bytes=payload + 16, blob_metadata=[])).commit()
    for entry in before_entries:  # only the rewritten files are left to read (the summaries still name these)
        local(entry.statistics_path).unlink()
    table = table.refresh()
    assert all(s.statistics_path.endswith("-other.privacy-sidecar.stats") for s in table.metadata.statistics)
    for value in ["ü-2-7", "ü-0-0", "ü-3-49", "nobody"]:
        plan = ip.plan_lookup(table, "user_id", value)
        assert not plan.warnings, plan.warnings
        assert plan.files_without_sidecar == 0  # the rewritten sidecars were used, not skipped as broken
        assert plan.exact_index_used == ("exact" in kind) and plan.files_not_in_index == 0  # (3.1: blob-relative)
        assert len(plan.tasks) <= (0 if value == "nobody" else 1) + 1  # pruned (an FPP allowance)
        assert ip.lookup(table, "user_id", value).num_rows == (0 if value == "nobody" else 1)
