"""Hostile uses of the write path: stale table objects, odd data shapes, input the writer cannot store.

Each test here was a failure found by trying the write verbs as an adversarial user would: the
forget list skipped, a bare pyarrow/pyiceberg exception instead of a library error that says what to
do, or a crash on data pyiceberg itself accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.storage import local_path
from tests.helpers import SECRET

SCHEMA = Schema(
    NestedField(1, "user_id", StringType(), required=False),
    NestedField(2, "n", LongType(), required=False),
    NestedField(3, "score", DoubleType(), required=False),
)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)


def _rows(users: list[str | None], start: int = 0) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.string()),
                     "n": pa.array(range(start, start + len(users)), pa.int64()),
                     "score": pa.array([float(i) for i in range(len(users))], pa.float64())})


def _users(table: Any) -> list[str | None]:
    return sorted(table.refresh().scan().to_arrow()["user_id"].to_pylist(), key=str)


def _stale_table_keeps_the_forget_list(catalog: Catalog, name: str) -> None:
    table = catalog.create_table(name, SCHEMA)
    ip.append(table, _rows(["bob"]))
    stale = catalog.load_table(name)  # a pipeline's handle, loaded before the privacy team's changes
    ip.configure_identity(catalog.load_table(name), ["user_id"])
    ip.erase(catalog, ["ann"], [name])  # ann has no rows yet: nothing is committed to the table
    report = ip.append(stale, _rows(["ann", "cy"], 1))
    assert report.dropped_rows == 1 and report.rows == 1
    assert _users(stale) == ["bob", "cy"]


def test_a_table_loaded_before_configure_identity_still_drops_forgotten_subjects(catalog: Catalog) -> None:
    """Before: the write read the identity columns from the caller's stale object (none), so the forget
    list never applied and an erased subject was written again."""
    _stale_table_keeps_the_forget_list(catalog, "db.stale")


def test_a_stale_table_still_drops_forgotten_subjects_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _stale_table_keeps_the_forget_list(catalog, f"{ns}.stale")


def test_data_without_an_optional_indexed_column_is_written_and_found_by_scans(catalog: Catalog) -> None:
    """pyiceberg accepts data that leaves out an optional column; the writer crashed with a bare
    ``KeyError`` building the left-out column's filter. Its files now hold an empty filter: lookups of
    that column skip them (they hold no ids of it), the other rows are still found."""
    table = catalog.create_table("db.partial", SCHEMA)
    table = ip.configure_index(ip.configure_bloom(table, ["user_id"]), "user_id", "bloom,exact")
    ip.configure_identity(table, ["user_id"])
    ip.append(table, _rows(["ann", "bob"]))
    report = ip.append(table, pa.table({"n": pa.array([7, 8], pa.int64())}))  # no user_id at all
    assert report.rows == 2 and report.sidecar_path is not None
    ip.append(table, pa.table({"user_id": pa.array(["cy"]), "n": pa.array([9], pa.int64())}))  # no score
    table = table.refresh()
    assert table.scan().to_arrow().num_rows == 5
    for user in ["ann", "bob", "cy", "dee"]:
        plan = ip.plan_lookup(table, "user_id", user)
        assert plan.files_without_sidecar == 0
        assert ip.lookup(table, "user_id", user).num_rows == (0 if user == "dee" else 1)


def _invalid_utf8() -> pa.Array:
    return pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"),
                                                  pa.py_buffer(b"\xff\xfe")])


HOSTILE = {
    "invalid UTF-8 in a string column": lambda: pa.table({"user_id": _invalid_utf8()}),
    "non-UTF-8 binary for a string column": lambda: pa.table({"user_id": pa.array([b"\xff\xfe"], pa.binary())}),
    "string_view ids": lambda: pa.table({"user_id": pa.array(["ann"], pa.string_view())}),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_values_the_column_types_cannot_hold_are_a_schema_error_and_commit_nothing(catalog: Catalog, kind: str) -> None:
    """Before: a bare UnicodeDecodeError / ArrowInvalid / ArrowTypeError from inside pyiceberg's writer."""
    table = ip.configure_bloom(catalog.create_table("db.hostile", SCHEMA), ["user_id"])
    ip.configure_identity(table, ["user_id"])
    ip.append(table, _rows(["bob"]))
    before = table.refresh().metadata.current_snapshot_id
    with pytest.raises(ip.SchemaMismatchError, match="nothing was committed"):
        ip.append(table, HOSTILE[kind]())
    assert table.refresh().metadata.current_snapshot_id == before and _users(table) == ["bob"]


def test_a_bad_chunk_removes_the_files_of_the_good_chunks_before_it(catalog: Catalog) -> None:
    from pathlib import Path

    table = ip.configure_bloom(catalog.create_table("db.chunks", SCHEMA), ["user_id"])
    ip.append(table, _rows(["bob"]))
    table = table.refresh()
    files = set(Path(table.location().removeprefix("file://"), "data").rglob("*.parquet"))
    schema = pa.schema([("user_id", pa.string())])
    good = [pa.record_batch([pa.array([f"u{i}"] * 100)], schema=schema) for i in range(3)]
    bad = pa.record_batch([_invalid_utf8()], schema=schema)
    with pytest.raises(ip.SchemaMismatchError):
        ip.append(table, pa.RecordBatchReader.from_batches(schema, [*good, bad]), chunk_bytes=1)
    left = set(Path(table.location().removeprefix("file://"), "data").rglob("*.parquet")) - files
    assert len(left) <= 1  # at most the failed chunk's own file (an orphan cleanup_orphans removes); not 3 good ones
    assert _users(table) == ["bob"]


@pytest.mark.parametrize(("arrow_type", "hint"), [
    (pa.timestamp("ns"), "microseconds"), (pa.timestamp("us", tz="Europe/Paris"), "UTC")])
def test_timestamps_pyiceberg_cannot_write_are_a_schema_error_with_the_cast(catalog: Catalog, arrow_type: pa.DataType,
                                                                            hint: str) -> None:
    """Before: pyiceberg's bare UnsupportedPyArrowTypeException."""
    from pyiceberg.types import TimestampType, TimestamptzType

    ts_type = TimestamptzType() if arrow_type.tz else TimestampType()
    table = catalog.create_table("db.ts", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                 NestedField(2, "at", ts_type, required=False)))
    with pytest.raises(ip.SchemaMismatchError, match=hint):
        ip.append(table, pa.table({"user_id": ["ann"], "at": pa.array([0], arrow_type)}))
    assert table.refresh().current_snapshot() is None


def test_nanosecond_timestamps_are_written_and_indexed_as_microseconds_when_pyiceberg_is_told_to(
        catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal above names pyiceberg's downcast-ns-timestamp-to-us-on-write; with it set, the library refused the
    data anyway (its schema check ignored the setting), unlike pyiceberg's own append. Now the data is written as
    microseconds (sub-microsecond digits dropped, as pyiceberg does), and the index hashes what the file stores."""
    from datetime import datetime

    from pyiceberg.types import ListType, StructType, TimestampType

    monkeypatch.setenv("PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE", "true")
    table = catalog.create_table("db.ns", Schema(
        NestedField(1, "at", TimestampType(), required=False),
        NestedField(2, "visits", ListType(3, TimestampType(), element_required=False), required=False),
        NestedField(4, "meta", StructType(NestedField(5, "seen", TimestampType(), required=False)), required=False)))
    table = ip.configure_bloom(table, ["at"])
    ns = [1_700_000_000_000_000_789, 1_700_000_001_000_000_000]
    ip.append(table, pa.table({
        "at": pa.array(ns, pa.timestamp("ns")),
        "visits": pa.array([[ns[0]], None], pa.list_(pa.timestamp("ns"))),
        "meta": pa.array([{"seen": ns[1]}, None], pa.struct([("seen", pa.timestamp("ns"))]))}))
    stored = table.refresh().scan().to_arrow()
    assert stored["at"].to_pylist() == [datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 22, 13, 21)]
    assert stored["visits"].to_pylist() == [[datetime(2023, 11, 14, 22, 13, 20)], None]
    assert stored["meta"].to_pylist() == [{"seen": datetime(2023, 11, 14, 22, 13, 21)}, None]
    assert ip.lookup(table, "at", datetime(2023, 11, 14, 22, 13, 20)).num_rows == 1
    assert ip.plan_lookup(table, "at", [datetime(2023, 11, 14, 22, 13, 20, 500000)]).files_to_read == []  # Bloom: a miss


@pytest.mark.parametrize("bad", ["nope = 1", "n = 'abc'", "n > 1 and", "user_id = 5"])
def test_a_bad_overwrite_filter_is_refused_before_any_file_is_written(catalog: Catalog, tmp_path: Any, bad: str) -> None:
    """Before: the data files were written first, then the commit raised pyparsing's/pyiceberg's own
    exception, leaving orphans."""
    table = ip.configure_bloom(catalog.create_table("db.ow", SCHEMA), ["user_id"])
    ip.append(table, _rows(["bob"]))
    table = table.refresh()
    data_dir = table.location().removeprefix("file://") + "/data"
    from pathlib import Path

    files = sorted(Path(data_dir).rglob("*"))
    with pytest.raises(ip.ConfigurationError, match="is not a filter on db.ow"):
        ip.overwrite(table, _rows(["ann"]), bad)
    assert sorted(Path(data_dir).rglob("*")) == files and _users(table) == ["bob"]


def _outside_writes_are_reported(catalog: Catalog, name: str) -> None:
    table = ip.configure_identity(ip.configure_bloom(catalog.create_table(name, SCHEMA), ["user_id"]), ["user_id"])
    ip.append(table, _rows(["bob", "cy", "dee"]))
    ip.overwrite(table, _rows(["eve"], 10), "n = 1")  # a copy-on-write rewrite of the first file
    ip.erase(catalog, ["bob"], [name])
    ip.backfill(table)
    status = ip.sidecar_status(catalog.load_table(name))
    assert status.outside_writes == 0 and not any("without iceberg-privacy" in w for w in status.warnings)
    catalog.load_table(name).append(_rows(["bob"], 20))  # plain pyiceberg: the forget list cannot apply
    status = ip.sidecar_status(catalog.load_table(name))
    assert status.outside_writes == 1
    assert any("without iceberg-privacy" in w and "forget list" in w for w in status.warnings), status.warnings
    assert "forget list were not dropped" in str(status)


def test_sidecar_status_reports_writes_that_bypassed_the_library(catalog: Catalog) -> None:
    """A pyiceberg ``table.append`` next to the library is scanned by lookups, but the forget list never
    saw its rows: nothing said so before."""
    _outside_writes_are_reported(catalog, "db.outside")


def test_sidecar_status_reports_writes_that_bypassed_the_library_on_object_storage(
        s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _outside_writes_are_reported(catalog, f"{ns}.outside")


def _data_file_rows(table: Any) -> pa.Table:
    import pyarrow.parquet as pq

    path = next(iter(table.scan().plan_files())).file.file_path
    with table.io.new_input(path).open() as fh:
        return pq.read_table(fh)  # as another engine's Parquet arrives: with PARQUET:field_id metadata


def test_field_ids_that_disagree_with_column_names_are_refused(catalog: Catalog) -> None:
    """Before: rows read from another table's Parquet files kept its field ids; pyiceberg wrote them by id
    (emails into user_id) while the filters and the forget list read by name: a lookup of the value really
    in user_id skipped the file, and the forget check screened the wrong column."""
    from iceberg_privacy.datafiles import without_field_ids

    source = catalog.create_table("db.src", Schema(NestedField(1, "email", StringType(), required=False),
                                                   NestedField(2, "user_id", StringType(), required=False)))
    ip.append(source, pa.table({"email": ["ann@x"], "user_id": ["ann"]}))
    rows = _data_file_rows(source.refresh())
    target = catalog.create_table("db.dst", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                   NestedField(2, "email", StringType(), required=False)))
    target = ip.configure_bloom(target, ["user_id"])
    with pytest.raises(ip.SchemaMismatchError, match="field id 1, which is 'user_id'"):
        ip.append(target, rows)
    assert target.refresh().current_snapshot() is None
    ip.append(target, rows.cast(without_field_ids(rows.schema)))  # by name, as the error says
    target = target.refresh()
    assert target.scan().to_arrow().to_pylist() == [{"user_id": "ann", "email": "ann@x"}]
    assert ip.lookup(target, "user_id", "ann").num_rows == 1
    ip.append(target, _data_file_rows(target))  # a table's own files: ids and names agree, accepted
    assert ip.lookup(target, "user_id", "ann").num_rows == 2


def test_without_field_ids_strips_nested_ids() -> None:
    from iceberg_privacy.datafiles import _has_field_ids, without_field_ids

    ids = {b"PARQUET:field_id": b"7"}
    schema = pa.schema([pa.field("m", pa.map_(pa.field("k", pa.string(), False, ids), pa.field(
        "v", pa.list_(pa.field("e", pa.struct([pa.field("id", pa.string(), metadata=ids)]), metadata=ids)),
        metadata=ids)), metadata=ids)])
    assert _has_field_ids(schema) and not _has_field_ids(without_field_ids(schema))
    assert without_field_ids(schema).field("m").type.item_type.value_type.field("id").type == pa.string()


@pytest.mark.parametrize("props", [{"privacy.erasure.request-id": "req-1"}, {"privacy.sidecar.path": "s3://x/y"},
                                   {"privacy.forget.dropped-rows": "0"}, {"operation": "delete"}])
def test_reserved_snapshot_summary_keys_are_refused_before_writing(catalog: Catalog, props: dict[str, str]) -> None:
    """Before: a caller's ``privacy.*`` keys went into the summary, where the library reads its own records
    back (a forged erasure request id makes a resumed erasure believe its rewrite landed); ``operation``
    crashed inside pyiceberg after the files were written."""
    table = ip.configure_bloom(catalog.create_table("db.props", SCHEMA), ["user_id"])
    with pytest.raises(ip.ConfigurationError, match="may not set"):
        ip.append(table, _rows(["ann"]), snapshot_properties=props)
    with pytest.raises(ip.ConfigurationError, match="may not set"):
        ip.overwrite(table, _rows(["ann"]), snapshot_properties=props)
    assert table.refresh().current_snapshot() is None
    assert ip.append(table, _rows(["ann"]), snapshot_properties={"job": "nightly"}).snapshot_id is not None


@pytest.mark.parametrize("retries", ["3", 1.5, -1])
def test_a_bad_commit_retries_fails_before_any_file_is_written(catalog: Catalog, retries: Any) -> None:
    from pathlib import Path

    table = catalog.create_table("db.retries", SCHEMA)
    with pytest.raises(ip.ConfigurationError, match="commit_retries"):
        ip.append(table, _rows(["ann"]), commit_retries=retries)
    assert not list(Path(table.location().removeprefix("file://")).rglob("*.parquet"))


def test_an_overwrite_filter_of_the_wrong_kind_is_a_clear_error(catalog: Catalog) -> None:
    table = catalog.create_table("db.kind", SCHEMA)
    with pytest.raises(ip.ConfigurationError, match="is not a filter"):
        ip.overwrite(table, _rows(["ann"]), 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.uint16(), pa.int16(), pa.uint8()])
def test_narrow_integer_ids_are_indexed_and_screened_like_the_columns_type(catalog: Catalog,
                                                                          arrow_type: pa.DataType) -> None:
    """Before: pyiceberg accepts int8/uint16 data for an int column, but the index's hash kernel does not:
    a bare ``ValueError: FeatureUnsupported`` after the data files were written."""
    from pyiceberg.types import IntegerType

    table = catalog.create_table("db.narrow", Schema(NestedField(1, "uid", IntegerType(), required=False),
                                                     NestedField(2, "n", LongType(), required=False)))
    table = ip.configure_index(table, "uid", "bloom,exact")
    ip.configure_identity(table, ["uid"])
    data = pa.table({"uid": pa.array([42, 7], arrow_type), "n": pa.array([1, 2], pa.int64())})
    ip.append(table, data)
    assert ip.lookup(table.refresh(), "uid", 42).num_rows == 1
    ip.erase(catalog, [42], ["db.narrow"])
    assert ip.append(table, data).dropped_rows == 1
    assert sorted(table.refresh().scan().to_arrow()["uid"].to_pylist()) == [7, 7]


def test_an_integer_out_of_the_columns_range_is_a_schema_error(catalog: Catalog) -> None:
    table = ip.configure_bloom(catalog.create_table("db.range", SCHEMA), ["user_id"])
    with pytest.raises(ip.SchemaMismatchError, match="nothing was committed"):
        ip.append(table, pa.table({"user_id": ["a"], "n": pa.array([2**64 - 1], pa.uint64())}))
    assert table.refresh().current_snapshot() is None


def test_the_report_says_when_the_forget_list_dropped_rows(catalog: Catalog) -> None:
    """Before: ``append: 0 rows in 0 files ..., snapshot None`` and nothing about why (the CLI prints this)."""
    table = ip.configure_identity(catalog.create_table("db.said", SCHEMA), ["user_id"])
    ip.erase(catalog, ["ann"], ["db.said"])
    report = ip.append(table, _rows(["ann", "ann"]))
    assert report.rows == 0 and "2 rows of subjects on the forget list dropped" in str(report)
    assert "forget list" not in str(ip.append(table, _rows(["bob"])))


@pytest.mark.parametrize("column", ["user,id", " uid", "uid "])
def test_a_column_name_the_property_lists_cannot_hold_is_refused_by_configure(catalog: Catalog, column: str) -> None:
    """Before: ``configure_identity(t, ["user,id"])`` stored ``privacy.identity.columns=user,id``, after which
    every write and erasure of the table failed on the column 'user'."""
    table = catalog.create_table("db.commas", Schema(NestedField(1, column, StringType(), required=False)))
    for configure in (ip.configure_bloom, ip.configure_identity, ip.configure_index):
        with pytest.raises(ip.ConfigurationError, match="rename the column"):
            configure(table, column if configure is ip.configure_index else [column])
    assert not {k for k in table.refresh().properties if k.startswith("privacy.")}
    assert ip.append(table, pa.table({column: ["ann"]})).rows == 1


def _table_replaced_during_the_write(catalog: Catalog, name: str, recreate: bool) -> None:
    table = ip.configure_bloom(catalog.create_table(name, SCHEMA), ["user_id"])
    ip.append(table, _rows(["old"]))
    schema = _rows([]).schema

    def stream():  # type: ignore[no-untyped-def]
        yield from _rows(["new"], 1).to_batches()
        catalog.drop_table(name)  # a pipeline's drop (+ create) while the write streams
        if recreate:
            catalog.create_table(name, SCHEMA)

    with pytest.raises(ip.CatalogError, match="dropped .*while the write ran; nothing was committed"):
        ip.append(name, pa.RecordBatchReader.from_batches(schema, stream()), catalog=catalog)
    if recreate:
        assert catalog.load_table(name).current_snapshot() is None


@pytest.mark.parametrize("recreate", [True, False], ids=["recreated", "dropped"])
def test_a_table_dropped_during_the_write_is_a_clear_error(catalog: Catalog, recreate: bool) -> None:
    """Before: pyiceberg's bare ``ValueError: Table UUID does not match`` (or NoSuchTableError), with the
    written files left behind."""
    _table_replaced_during_the_write(catalog, "db.replaced", recreate)


def test_a_table_recreated_during_the_write_is_a_clear_error_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _table_replaced_during_the_write(catalog, f"{ns}.replaced", True)


def test_dictionary_encoded_ids_leave_a_table_every_reader_can_scan(catalog: Catalog) -> None:
    """Before: the dictionary type went into the file's Arrow schema (as pyiceberg's own append does), and
    from then on every full scan of the table failed: 'Unable to merge: ... dictionary vs string'."""
    table = ip.configure_identity(ip.configure_bloom(catalog.create_table("db.dict", SCHEMA), ["user_id"]), ["user_id"])
    ip.append(table, _rows(["bob"]))
    ip.erase(catalog, ["ann"], ["db.dict"])
    encoded = _rows(["ann", "cy", "ann", None], 1)
    encoded = encoded.set_column(0, "user_id", encoded.column("user_id").dictionary_encode())
    assert ip.append(table, encoded).dropped_rows == 2
    assert _users(table) == [None, "bob", "cy"]
    assert ip.lookup(table, "user_id", "cy").num_rows == 1


def test_a_list_of_narrow_integer_ids_is_indexed(catalog: Catalog) -> None:
    """Before: ``list<int8>`` ids for a ``list<int>`` identity column: the same bare hash-kernel ValueError."""
    from pyiceberg.types import IntegerType, ListType

    table = catalog.create_table("db.tags", Schema(NestedField(1, "tags", ListType(2, IntegerType(), element_required=False),
                                                               required=False)))
    table = ip.configure_identity(ip.configure_bloom(table, ["tags"]), ["tags"])
    ip.append(table, pa.table({"tags": pa.array([[1, 2], [3]], pa.list_(pa.int8()))}))
    assert ip.lookup(table.refresh(), "tags", 2).num_rows == 1


@pytest.mark.parametrize("file_format", ["orc", "avro"])
def test_a_table_set_to_write_another_format_is_a_clear_error(catalog: Catalog, file_format: str) -> None:
    """Before: pyiceberg's bare ``ValueError: No writer registered for FileFormat.ORC``."""
    table = catalog.create_table("db.orc", SCHEMA, properties={"write.format.default": file_format})
    with pytest.raises(ip.ConfigurationError, match="writes only Parquet"):
        ip.append(table, _rows(["ann"]))
    assert table.refresh().current_snapshot() is None


@pytest.mark.parametrize("fields", [
    (("bucket", 4), ("truncate", 1)),  # two transforms of the identity column
    (("bucket", 4), ("identity", None)),
])
def test_a_spec_with_two_fields_on_one_column_is_a_clear_error(catalog: Catalog, fields: Any) -> None:
    """Before: pyiceberg's bare ``ValueError: Cannot have redundant partitions: [...]`` from the writer threads
    (pyiceberg 0.12 writes no spec with two partition fields on one source column; found by advshape)."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import BucketTransform, IdentityTransform, TruncateTransform

    make = {"bucket": BucketTransform, "truncate": TruncateTransform, "identity": lambda _: IdentityTransform()}
    spec = PartitionSpec(*(PartitionField(1, 1000 + i, make[kind](arg), f"p{i}") for i, (kind, arg) in enumerate(fields)))
    table = ip.configure_index(catalog.create_table("db.redundant", SCHEMA, partition_spec=spec), "user_id",
                               "bloom,exact")
    for write in (lambda: ip.append(table, _rows(["ann", "bob"])),
                  lambda: ip.overwrite(table, _rows(["cy"]), "n > 0")):
        with pytest.raises(ip.ConfigurationError, match=r"user_id.*p0, p1.*remove_field\('p1'\).*Nothing was written"):
            write()
    assert table.refresh().current_snapshot() is None
    assert not [p for p in (Path(local_path(table.location())) / "data").rglob("*") if p.is_file()]


class _SourceGone(RuntimeError):
    pass


def _stream_failing_after(batches: int) -> pa.RecordBatchReader:
    schema = _rows([]).schema

    def gen():  # type: ignore[no-untyped-def]
        for i in range(batches):
            yield _rows([f"s{i}-{j}" for j in range(50)], i * 50).to_batches()[0]
        raise _SourceGone("the source went away mid-stream")

    return pa.RecordBatchReader.from_batches(schema, gen())


def _failing_stream_leaves_nothing(catalog: Catalog, name: str) -> None:
    from iceberg_privacy.storage import list_files

    table = ip.configure_index(catalog.create_table(name, SCHEMA), "user_id", "bloom,exact")
    ip.append(table, _rows(["bob"]))
    table = table.refresh()
    before_snapshot = table.metadata.current_snapshot_id
    before = {f.location for f in list_files(table.io, table.location())}
    with pytest.raises(_SourceGone):  # the caller's own error, unchanged
        ip.append(table, _stream_failing_after(3), chunk_bytes=1)
    left = {f.location for f in list_files(table.io, table.location())} - before
    assert not left, f"files of a write that never committed were left behind: {sorted(left)}"
    assert table.refresh().metadata.current_snapshot_id == before_snapshot and _users(table) == ["bob"]


def test_a_stream_failing_mid_way_leaves_no_files_of_its_chunks(catalog: Catalog) -> None:
    """Before: the data files of the chunks written before the source failed stayed in the table location
    (personal data no metadata references, until cleanup_orphans), though the writer knew every one of them."""
    _failing_stream_leaves_nothing(catalog, "db.gone")


def test_a_stream_failing_mid_way_leaves_no_files_on_object_storage(s3_sql_catalog: Catalog, lake_ns: str) -> None:
    _failing_stream_leaves_nothing(s3_sql_catalog, f"{lake_ns}.gone")


def test_a_format_v3_table_is_refused_before_any_file_is_written(rest_catalog: Catalog, lake_ns: str,
                                                                 seaweedfs: Any) -> None:
    """A REST catalog creates format-v3 tables, which pyiceberg 0.12 cannot commit to: the append failed only at the
    commit, with pyiceberg's bare 'Cannot write manifest for table version: 3', after writing every data file."""
    table = rest_catalog.create_table(f"{lake_ns}.v3", schema=pa.schema([("user_id", pa.string())]),
                                      properties={"format-version": "3"})
    assert table.metadata.format_version == 3
    ip.configure_bloom(table, ["user_id"])
    with pytest.raises(ip.ConfigurationError, match="format-v3"):
        ip.append(rest_catalog.load_table(f"{lake_ns}.v3"), pa.table({"user_id": ["ann"]}))
    table = rest_catalog.load_table(f"{lake_ns}.v3")
    assert table.current_snapshot() is None
    assert not [o for o in seaweedfs.list_objects(table.location()) if "/data/" in o]
    assert ip.lookup(table, "user_id", "ann").num_rows == 0  # reads work
    # the REST server writes the metadata: property and statistics commits to a v3 table work there
    ip.configure_identity(table, ["user_id"])
    assert ip.backfill(table).live_files == 0 and ip.expire_snapshots(table).live_files == 0


def _as_format_v3(catalog: Catalog, name: str) -> Any:
    """``name`` (a v2 table with data) re-registered under ``name + '_v3'`` with its metadata raised to format v3, as
    another engine (Spark with Iceberg 1.8+) leaves it: the SQL catalog then writes metadata.json on the client."""
    import json

    table = catalog.load_table(name)
    md = json.loads(table.io.new_input(table.metadata_location).open().read())
    md["format-version"], md["next-row-id"] = 3, 1000
    for snap in md["snapshots"]:
        snap.setdefault("first-row-id", 0)
        snap.setdefault("added-rows", 1)
    location = table.metadata_location.rsplit("/", 1)[0] + "/99990-raised-to-v3.metadata.json"
    with table.io.new_output(location).create(overwrite=True) as out:
        out.write(json.dumps(md).encode())
    return catalog.register_table(f"{name}_v3", location)


def test_verbs_that_commit_to_a_v3_table_through_a_client_side_catalog_are_refused_before_writing(
        catalog: Catalog) -> None:
    """Before: backfill, compact_sidecars and expire_snapshots wrote a sidecar, then failed with pyiceberg's bare
    NotImplementedError ('Writing V3 is not yet supported'), leaving the sidecar and an empty metadata.json behind;
    configure_* and annotate failed the same way (the empty metadata.json). Reads and lookups keep working."""
    from iceberg_privacy.storage import list_files

    table = catalog.create_table("db.fmt3", schema=pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    ip.configure_bloom(table, ["user_id"])
    for k in range(2):
        ip.append(table, pa.table({"user_id": [f"u{k}", "bob"], "n": [k, k]}))
    v3 = _as_format_v3(catalog, "db.fmt3")
    assert v3.metadata.format_version == 3
    before = {f.location for f in list_files(v3.io, v3.location())}
    verbs = {
        "backfill": lambda: ip.backfill(v3), "compact": lambda: ip.compact_sidecars(v3),
        "expire": lambda: ip.expire_snapshots(v3), "bloom": lambda: ip.configure_bloom(v3, ["user_id", "n"]),
        "identity": lambda: ip.configure_identity(v3, ["user_id"]), "index": lambda: ip.configure_index(v3, "user_id"),
        "annotate": lambda: ip.annotate(v3, purposes=["billing"]),
        "append": lambda: ip.append(v3, pa.table({"user_id": ["z"], "n": [9]})),
    }
    for verb, call in verbs.items():
        with pytest.raises(ip.ConfigurationError, match="format-v3 table") as refused:
            call()
        assert "format-version" in str(refused.value), verb  # says how to keep tables writable
        assert {f.location for f in list_files(v3.io, v3.location())} == before, f"{verb} left files behind"
    assert ip.lookup(v3, "user_id", "bob").num_rows == 2  # reads work
    assert catalog.load_table("db.fmt3_v3").metadata_location == v3.metadata_location  # nothing committed


@pytest.mark.parametrize("values", [[2.5, -0.0, 0.0], [2.5, float("nan")]], ids=["signed-zeros", "nan"])
def test_a_float_partition_pyiceberg_cannot_split_is_refused_not_duplicated(catalog: Catalog, values: list[float]) -> None:
    """pyiceberg selects each partition's rows by equality: -0.0 == 0.0 wrote both rows into both partitions (5 rows
    from 3), and a NaN partition selected no row (ZeroDivisionError from its file-size estimate)."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    t = catalog.create_table("db.float_part", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                     NestedField(2, "score", DoubleType(), required=False)),
                             partition_spec=PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "score")))
    data = pa.table({"user_id": [f"u{i}" for i in range(len(values))], "score": pa.array(values, pa.float64())})
    with pytest.raises(ip.UnsupportedDataError, match=r"NaN, or -0\.0 next to 0\.0.*\(score\)"):
        ip.append(t, data)
    assert t.refresh().current_snapshot() is None


def test_fixed_size_list_ids_are_screened_and_indexed(catalog: Catalog) -> None:
    """``fixed_size_list<string>[2]`` data for a ``list<string>`` identity column (pyiceberg writes it as a list).
    Before: once a forget list applied (or the column had a Bloom filter), every such write failed with
    "cannot write the data ... Function 'unique' has no kernel matching fixed_size_list": the id extraction did
    not descend into fixed-size lists."""
    from pyiceberg.types import ListType

    schema = Schema(NestedField(1, "ids", ListType(2, StringType(), element_required=False), required=False),
                    NestedField(3, "n", LongType(), required=False))
    table = ip.configure_identity(ip.configure_bloom(catalog.create_table("db.fixed", schema), ["ids"]), ["ids"])
    ip.append(table, pa.table({"ids": [["bob", "b2"]], "n": pa.array([0], pa.int64())}))
    ip.erase(catalog, ["ann"], ["db.fixed"])
    data = pa.table({"ids": pa.array([["x", "ann"], ["cy", None], None], pa.list_(pa.string(), 2)),
                     "n": pa.array([1, 2, 3], pa.int64())})
    report = ip.append(table, data)
    assert (report.rows, report.dropped_rows) == (2, 1)
    assert sorted(table.refresh().scan().to_arrow()["n"].to_pylist()) == [0, 2, 3]
    assert ip.lookup(table.refresh(), "ids", "cy").num_rows == 1


def test_a_fixed_size_list_of_narrow_integer_ids_is_screened_and_indexed(catalog: Catalog) -> None:
    """``fixed_size_list<int8>`` ids for a ``list<int>`` identity column. Before: pyiceberg-core's bare
    "ValueError: Unsupported data type for bucket transform: Int8" (the narrow-integer cast did not look into
    fixed-size lists)."""
    from pyiceberg.types import IntegerType, ListType

    table = catalog.create_table("db.fixedtags", Schema(NestedField(1, "tags", ListType(2, IntegerType(),
                                                                                    element_required=False),
                                                                    required=False)))
    table = ip.configure_identity(ip.configure_bloom(table, ["tags"]), ["tags"])
    ip.erase(catalog, [2], ["db.fixedtags"])
    report = ip.append(table, pa.table({"tags": pa.array([[1, 2], [3, 4]], pa.list_(pa.int8(), 2))}))
    assert (report.rows, report.dropped_rows) == (1, 1)
    assert ip.lookup(table.refresh(), "tags", 3).num_rows == 1
