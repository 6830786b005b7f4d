"""The central invariant: a pruned lookup returns exactly the rows a full scan would.

For random tables (identity column types, nesting: list, list of lists, struct, map, identity map;
partitioning: on another column, identity/bucket/truncate on the identity column; Bloom or Bloom + exact
index; several commits, files written by plain pyiceberg without sidecars) and random value sets, given as
Python values or as the text a CLI user types, ``lookup`` equals a brute-force filter of the rows that were
written, before and after backfill, compaction, expiry, further appends, a rollback to the first snapshot (then
writes on the new line) and partition evolution, and at an older snapshot.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import BucketTransform, IdentityTransform, TruncateTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    FixedType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    UUIDType,
)

import iceberg_privacy as ip
from iceberg_privacy.index import maintenance
from tests.helpers import unique_name

UTC = dt.UTC
UUIDS = [uuid.UUID(int=i * 7919 + 1) for i in range(6)]
TRUNCATABLE = {"string", "long", "int", "binary", "decimal"}
TYPES: dict[str, tuple[Any, pa.DataType, list[Any]]] = {
    "string": (StringType(), pa.string(), ["a", "b", "é", "日本", "", "user-1", "zz"]),
    "long": (LongType(), pa.int64(), [-3, -1, 0, 1, 2, 2**40, -(2**62)]),
    "int": (IntegerType(), pa.int32(), [-3, -1, 0, 1, 2, 7]),
    "uuid": (UUIDType(), pa.uuid(), UUIDS),
    "binary": (BinaryType(), pa.binary(), [b"", b"a", b"\x00\xff", b"abc", b"zz"]),
    "fixed": (FixedType(3), pa.binary(3), [b"abc", b"\x00\x00\x00", b"xyz", b"qqq"]),
    "date": (DateType(), pa.date32(), [dt.date(1970, 1, 1), dt.date(2020, 2, 29), dt.date(1969, 12, 31), dt.date(2001, 9, 9)]),
    "timestamp": (TimestampType(), pa.timestamp("us"), [dt.datetime(2020, 1, 1), dt.datetime(1960, 5, 5, 1, 2, 3, 4),
                                                       dt.datetime(2030, 1, 1, 0, 0, 0, 1)]),
    "timestamptz": (TimestamptzType(), pa.timestamp("us", tz="UTC"),
                    [dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
                     dt.datetime(2021, 6, 1, 12, tzinfo=UTC)]),
    "decimal": (DecimalType(9, 2), pa.decimal128(9, 2), [Decimal("0.00"), Decimal("1.25"), Decimal("-3.10"), Decimal("99.99")]),
}


def _filler(kind: str, n: int) -> list[Any]:
    """n values of the type that are never written: pads a probe past the large-batch threshold."""
    base = {
        "string": lambda i: f"absent-{i}", "long": lambda i: 10_000 + i, "int": lambda i: 10_000 + i,
        "uuid": lambda i: uuid.UUID(int=10**12 + i), "binary": lambda i: b"absent-%d" % i,
        "fixed": lambda i: (2**20 + i).to_bytes(3, "big"), "date": lambda i: dt.date(2100, 1, 1) + dt.timedelta(days=i),
        "timestamp": lambda i: dt.datetime(2100, 1, 1) + dt.timedelta(seconds=i),
        "timestamptz": lambda i: dt.datetime(2100, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i),
        "decimal": lambda i: Decimal(50_000 + i).scaleb(-2),
    }[kind]
    return [base(i) for i in range(n)]


def _arrow_value(v: Any) -> Any:
    return v.bytes if isinstance(v, uuid.UUID) else v


def _schema(kind: str, shape: str) -> tuple[Schema, pa.DataType]:
    leaf, arrow_leaf, _ = TYPES[kind]
    if kind == "uuid" and shape != "plain":
        arrow_leaf = pa.binary(16)  # pyarrow cannot build nested uuid extension arrays from Python values
    if shape == "plain":
        ident_type, arrow = leaf, arrow_leaf
    elif shape == "list":
        ident_type, arrow = ListType(10, leaf, element_required=False), pa.list_(arrow_leaf)
    elif shape == "listlist":
        ident_type = ListType(10, ListType(11, leaf, element_required=False), element_required=False)
        arrow = pa.list_(pa.list_(arrow_leaf))
    elif shape == "struct":
        ident_type = StructType(NestedField(12, "id", leaf, required=False), NestedField(13, "primary", BooleanType(), required=False))
        arrow = pa.struct([("id", arrow_leaf), ("primary", pa.bool_())])
    elif shape == "map":
        ident_type, arrow = MapType(10, StringType(), 11, leaf, value_required=False), pa.map_(pa.string(), arrow_leaf)
    else:
        struct = StructType(NestedField(12, "id", leaf, required=False), NestedField(13, "primary", BooleanType(), required=False))
        ident_type = MapType(10, StringType(), 11, ListType(14, struct, element_required=False), value_required=False)
        arrow = pa.map_(pa.string(), pa.list_(pa.struct([("id", arrow_leaf), ("primary", pa.bool_())])))
    schema = Schema(
        NestedField(1, "rid", LongType(), required=False),
        NestedField(2, "part", StringType(), required=False),
        NestedField(3, "ident", ident_type, required=False),
    )
    return schema, arrow


def _cell(draw, shape: str, domain: list[Any]) -> Any:
    value = st.sampled_from(domain) | st.none()
    if shape == "plain":
        return draw(value)
    if shape == "list":
        return draw(st.none() | st.lists(value, max_size=3))
    if shape == "listlist":
        return draw(st.none() | st.lists(st.none() | st.lists(value, max_size=2), max_size=2))
    if shape == "struct":
        return draw(st.none() | st.fixed_dictionaries({"id": value, "primary": st.booleans()}))
    if shape == "map":
        return draw(st.none() | st.lists(st.tuples(st.sampled_from(["email", "crm"]), value), max_size=2,
                                         unique_by=lambda kv: kv[0]))
    ids = st.lists(st.fixed_dictionaries({"id": value, "primary": st.booleans()}) | st.none(), max_size=2)
    return draw(st.none() | st.lists(st.tuples(st.sampled_from(["email", "crm", "ecid"]), st.none() | ids), max_size=2, unique_by=lambda kv: kv[0]))


def _ids_of(shape: str, cell: Any) -> list[Any]:
    if cell is None:
        return []
    if shape == "plain":
        return [cell]
    if shape == "list":
        return [v for v in cell if v is not None]
    if shape == "listlist":
        return [v for inner in cell for v in (inner or []) if v is not None]
    if shape == "struct":
        return [] if cell["id"] is None else [cell["id"]]
    if shape == "map":
        return [v for _, v in cell if v is not None]
    return [s["id"] for _, lst in cell for s in (lst or []) if s is not None and s["id"] is not None]


def _to_arrow_cell(shape: str, cell: Any) -> Any:
    if cell is None:
        return None
    if shape == "plain":
        return _arrow_value(cell)
    if shape == "list":
        return [_arrow_value(v) for v in cell]
    if shape == "listlist":
        return [None if inner is None else [_arrow_value(v) for v in inner] for inner in cell]
    if shape == "struct":
        return {"id": _arrow_value(cell["id"]), "primary": cell["primary"]}
    if shape == "map":
        return [(k, _arrow_value(v)) for k, v in cell]
    return [(k, None if lst is None else [None if s is None else {"id": _arrow_value(s["id"]), "primary": s["primary"]} for s in lst])
            for k, lst in cell]


@st.composite
def scenarios(draw) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(TYPES)))
    shape = draw(st.sampled_from(["plain", "plain", "list", "idmap", "listlist", "struct", "map"]))
    partitioning = draw(st.sampled_from(["none", "identity"] + (
        ["bucket", "ident_identity"] + (["truncate"] if kind in TRUNCATABLE else []) if shape == "plain" else [])))
    index = draw(st.sampled_from(["bloom", "bloom,exact"]))
    as_text = draw(st.booleans())  # probes typed as a CLI user would (hashing.coerce_values' rule)
    domain = TYPES[kind][2]
    used = domain[: max(1, len(domain) - 2)]  # the last values are never written: always-absent probes
    batches = draw(st.lists(st.lists(st.tuples(st.sampled_from(["p0", "p1", "p2"]), st.just(None)), min_size=1, max_size=25),
                            min_size=1, max_size=3))
    rows = [[(part, _cell(draw, shape, used)) for part, _ in batch] for batch in batches]
    foreign = draw(st.integers(-1, len(rows) - 1))  # index of a batch written by plain pyiceberg (no sidecar)
    probes = draw(st.lists(st.lists(st.sampled_from(domain), min_size=1, max_size=4), min_size=1, max_size=3))
    ops = draw(st.lists(st.sampled_from(["backfill", "compact", "expire", "append", "rollback", "evolve"]), max_size=3))
    extra = [(p, _cell(draw, shape, used)) for p in ["p0", "p1"]]
    return {"kind": kind, "shape": shape, "partitioning": partitioning, "batches": rows, "foreign": foreign,
            "probes": probes, "ops": ops, "extra": extra, "index": index, "as_text": as_text}


def _batch_table(rows: list[tuple[str, Any]], start: int, shape: str, arrow_ident: pa.DataType) -> pa.Table:
    return pa.table({
        "rid": pa.array(range(start, start + len(rows)), pa.int64()),
        "part": pa.array([p for p, _ in rows], pa.string()),
        "ident": pa.array([_to_arrow_cell(shape, c) for _, c in rows], arrow_ident),
    })


def _expected(written: list[tuple[int, Any]], shape: str, probe: list[Any]) -> set[int]:
    return {rid for rid, cell in written if any(v in probe for v in _ids_of(shape, cell))}


def _text(v: Any) -> str:
    """The value as a CLI user types it (hex for bytes, ISO for dates and times)."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return str(v)


def _check(table, written, shape, probes, snapshot_id=None, as_text=False) -> None:  # type: ignore[no-untyped-def]
    for probe in probes:
        asked = [_text(v) for v in probe] if as_text else probe
        got = ip.lookup(table, "ident", asked, snapshot_id=snapshot_id, selected_fields=["rid"])
        rids = got.column("rid").to_pylist()
        assert len(rids) == len(set(rids))
        assert set(rids) == _expected(written, shape, probe), (probe, ip.plan_lookup(table, "ident", probe).explain())


@settings(max_examples=int(os.environ.get("IP_PROPERTY_EXAMPLES", "80")))
@given(scenario=scenarios())
# found by advshape: identity partitions on a uuid column (pyiceberg's manifest pruning dropped every file; the
# library's append of Arrow uuids failed), after a rollback and a partition evolution
@example(scenario={"kind": "uuid", "shape": "plain", "partitioning": "ident_identity",
                   "batches": [[("p0", UUIDS[0]), ("p1", UUIDS[1])], [("p0", UUIDS[0])]], "foreign": 1,
                   "probes": [[UUIDS[0]], [UUIDS[1], UUIDS[5]]], "ops": ["compact", "evolve", "append", "rollback"],
                   "extra": [("p0", UUIDS[0]), ("p1", None)], "index": "bloom,exact", "as_text": False})
def test_lookup_equals_full_scan(shared_catalog, scenario) -> None:
    shape = scenario["shape"]
    schema, arrow_ident = _schema(scenario["kind"], shape)
    spec = PartitionSpec()
    if scenario["partitioning"] == "identity":
        spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "part"))
    elif scenario["partitioning"] == "bucket":
        spec = PartitionSpec(PartitionField(3, 1000, BucketTransform(3), "ident_bucket"))
    elif scenario["partitioning"] == "ident_identity":
        spec = PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "ident_part"))
    elif scenario["partitioning"] == "truncate":
        spec = PartitionSpec(PartitionField(3, 1000, TruncateTransform(2), "ident_trunc"))
    table = shared_catalog.create_table(unique_name(), schema, partition_spec=spec,
                                        properties={"write.target-file-size-bytes": "600"})
    table = ip.configure_bloom(table, ["ident"], fpp=0.05)
    if scenario["index"] != "bloom":
        table = ip.configure_index(table, "ident", scenario["index"])
    written: list[tuple[int, Any]] = []
    first_snapshot, first_rows = None, []
    for i, rows in enumerate(scenario["batches"]):
        data = _batch_table(rows, len(written), shape, arrow_ident)
        if i == scenario["foreign"]:
            if scenario["kind"] == "uuid" and scenario["partitioning"] == "ident_identity":
                # pyiceberg's own append cannot group rows by Arrow's uuid type: another engine writes the bytes
                data = data.set_column(2, "ident", data.column("ident").cast(pa.binary(16)))
            table.append(data)  # another engine: no sidecar for these files
        else:
            ip.append(table, data)
        table = table.refresh()
        written += [(len(written) + j, cell) for j, (_, cell) in enumerate(rows)]
        if first_snapshot is None:
            first_snapshot, first_rows = table.metadata.current_snapshot_id, list(written)
    _check(table, written, shape, scenario["probes"], as_text=scenario["as_text"])
    big = scenario["probes"][0] + _filler(scenario["kind"], 250)  # the large-batch read path
    _check(table, written, shape, [big])
    for op in scenario["ops"]:
        if op == "backfill":
            maintenance.backfill(table)
        elif op == "compact":
            maintenance.compact_sidecars(table)
        elif op == "expire":
            maintenance.expire_snapshots(table, retain_last=1)
        elif op == "rollback":  # back to the first snapshot: the index must not serve the abandoned line's files
            if table.metadata.snapshot_by_id(first_snapshot) is None:
                continue
            table.manage_snapshots().set_current_snapshot(first_snapshot).commit()
            written = list(first_rows)
        elif op == "evolve":  # partition evolution mid-life: a bucket on another column, added or removed
            on_rid = [f.name for f in table.spec().fields if f.source_id == 1]
            with table.update_spec() as update:
                if on_rid:
                    update.remove_field(on_rid[0])
                else:
                    update.add_field("rid", BucketTransform(2), "rid_bucket")
        else:
            rows = scenario["extra"]
            ip.append(table, _batch_table(rows, len(written), shape, arrow_ident))
            written += [(len(written) + j, cell) for j, (_, cell) in enumerate(rows)]
        table = table.refresh()
        _check(table, written, shape, scenario["probes"])
        if op == "backfill":
            status = maintenance.sidecar_status(table)
            assert status.covered["ident"] == status.live_files
    if table.metadata.snapshot_by_id(first_snapshot) is not None:
        _check(table, first_rows, shape, scenario["probes"], snapshot_id=first_snapshot)


def test_pruning_actually_skips_files(catalog) -> None:
    """Not just correct: with distinct ids per file, a single-key lookup reads ~1 file of many."""
    table = catalog.create_table("db.skip", Schema(NestedField(1, "user_id", StringType(), required=False)))
    table = ip.configure_bloom(table, ["user_id"], fpp=0.001)
    for f in range(40):
        ip.append(table, pa.table({"user_id": [f"u{f}-{i}" for i in range(200)]}))
    table = table.refresh()
    plan = ip.plan_lookup(table, "user_id", "u17-5")
    assert plan.files_total == 40 and plan.files_after_manifest_pruning <= 40
    assert 1 <= plan.files_after_bloom_pruning <= 2 and plan.files_without_sidecar == 0
    # the file that holds the key is among those kept
    holder = [t.file.file_path for t in table.scan().plan_files()
              if "u17-5" in pq.read_table(t.file.file_path.removeprefix("file://"), columns=["user_id"])
              .column("user_id").to_pylist()]
    assert len(holder) == 1 and holder[0] in plan.files_to_read
    assert ip.lookup(table, "user_id", "u17-5").column("user_id").to_pylist() == ["u17-5"]
    maintenance.compact_sidecars(table)
    table = table.refresh()
    plan = ip.plan_lookup(table, "user_id", "u17-5")
    assert plan.sidecars_opened == 1 and plan.files_after_bloom_pruning <= 2


def test_ten_thousand_values_in_one_pass(catalog) -> None:
    table = catalog.create_table("db.batch", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                    NestedField(2, "n", LongType(), required=False)))
    # 9,000 absent keys per file: at FPP 1e-5 a file is a false hit with probability 1-(1-1e-5)**9000 ~ 9%.
    table = ip.configure_bloom(table, ["user_id"], fpp=1e-5)
    for f in range(20):
        ip.append(table, pa.table({"user_id": pa.array([f"u{f}-{i}" for i in range(1000)], pa.string()),
                                   "n": pa.array(range(1000), pa.int64())}))
    table = table.refresh()
    present = [f"u{f}-{i}" for f in (3, 11) for i in range(0, 1000, 2)]  # 1,000 present, in 2 files
    values = present + [f"absent-{i}" for i in range(9_000)]
    plan = ip.plan_lookup(table, "user_id", values)
    assert len(plan.values) == 10_000 and plan.files_after_bloom_pruning <= 9
    got = ip.lookup(table, "user_id", values)
    assert sorted(got.column("user_id").to_pylist()) == sorted(present)


def test_identity_map_with_null_structs_and_uuid_ids(catalog) -> None:
    """Regression (found by the property test): null struct slots in an identity map of uuids."""
    schema, arrow_ident = _schema("uuid", "idmap")
    table = ip.configure_bloom(catalog.create_table("db.nullstructs", schema), ["ident"])
    rows = [("p0", [("email", [None, {"id": UUIDS[0], "primary": True}])]), ("p1", [("crm", [None])])]
    ip.append(table, _batch_table(rows, 0, "idmap", arrow_ident))
    table = table.refresh()
    assert ip.lookup(table, "ident", UUIDS[0]).column("rid").to_pylist() == [0]
    assert ip.lookup(table, "ident", UUIDS[1]).num_rows == 0
