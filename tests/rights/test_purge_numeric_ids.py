"""A person whose id is a small number (user 0, 1, 2, or the table's record count) can be purged: the
verification looked for the subject's text in every snapshot summary value, table property and Avro header, so
``total-delete-files=0``, ``added-data-files=1``, ``format-version=2`` in every manifest, the
``privacy.identity.field-ids`` mapping ``user_id=1,email=2`` and the purge's own ``previous-versions-max=1`` were
"traces" of users 0, 1 and 2: their erasure never completed. Counts, settings and field ids are skipped now; a
value anywhere else (a summary a user wrote, a partition key, a path) still fails the verification."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.traces import _scan_json
from tests.helpers import unique_name

N = 40


@settings(max_examples=4, deadline=None)
@given(subjects=st.lists(st.sampled_from([0, 1, 2, 3, 4, 16, N - 1, N]), min_size=1, max_size=3, unique=True),
       link=st.booleans())
def test_small_numeric_ids_are_purged_and_verified(shared_catalog: Catalog, subjects: list[int], link: bool) -> None:
    name = unique_name("people")
    users = pa.table({"user_id": pa.array(range(N), pa.int64()), "email": [f"p{i}@x.org" for i in range(N)]})
    table = ip.configure_bloom(ip.configure_identity(shared_catalog.create_table(name, schema=users.schema),
                                                     ["user_id", "email"]), ["user_id"])
    for k in range(4):
        ip.append(table, users.slice(k * 10, 10))
    report = ip.erase(shared_catalog, subjects, [name], purge=True, link_identifiers=link)
    assert report.purge is not None and report.purge.completed, report.purge
    verify = report.purge.tables[name].verify
    assert verify is not None and verify.ok and not verify.traces
    left = shared_catalog.load_table(name).scan().to_arrow().column("user_id").to_pylist()
    assert sorted(left) == [i for i in range(N) if i not in subjects]


def _new_table_and_matcher(catalog: Catalog, arrow_type: pa.DataType, subjects: list[Any]) -> tuple[Any, Any]:
    """A new table with the identity column ``user_id`` of ``arrow_type``, and the purge verification's matcher of
    ``subjects`` in it (keyed digests of the column's own type)."""
    from iceberg_privacy.rights.keyed import digest_literals, load_secret
    from iceberg_privacy.rights.traces import SubjectMatcher

    table = ip.configure_identity(catalog.create_table(unique_name("people"), schema=pa.schema([("user_id", arrow_type)])),
                                  ["user_id"])
    kind = table.schema().find_field("user_id").field_type
    secret = load_secret(catalog=catalog)
    return table, SubjectMatcher(table, set(digest_literals(secret, subjects, kind, "user_id")), secret, None)


def test_a_subject_in_a_summary_a_writer_chose_is_still_a_trace(shared_catalog: Catalog) -> None:
    """(A string identity column: text is matched against its values, as the request's int 2 is "2" there.)"""
    table, matcher = _new_table_and_matcher(shared_catalog, pa.string(), ["2"])
    clean = {"snapshots": [{"summary": {"operation": "append", "total-records": "2", "added-data-files": "2"}}],
             "properties": {"privacy.identity.field-ids": "user_id=2", "write.metadata.previous-versions-max": "2"}}
    assert _scan_json(matcher, clean) == []
    for doc in ({"snapshots": [{"summary": {"operation": "append", "app.customer": "2"}}]},
                {"snapshots": [{"summary": {"partitions.user_id=2": "added-records=1"}}]},
                {"properties": {"owner": "2"}},
                {"refs": {"2": {"snapshot-id": 1, "type": "tag"}}}):
        assert _scan_json(matcher, doc), doc


@settings(max_examples=4, deadline=None)
@given(subjects=st.lists(st.sampled_from(["data", "metadata", "append", "main", "true", "db", "words"]),
                         min_size=1, max_size=2, unique=True))
def test_ids_that_are_words_of_every_table_are_purged(shared_catalog: Catalog, subjects: list[str]) -> None:
    """``data/`` and ``metadata/`` in every path, ``operation=append`` in every summary, the ``main`` branch, a
    ``true`` setting, the namespace and the table's own name in every location: none of them is the person."""
    name = unique_name("words")
    ids = ["data", "metadata", "append", "main", "true", "db", name.split(".")[1], "kept"]
    people = pa.table({"user_id": ids * 2})
    table = ip.configure_identity(shared_catalog.create_table(name, schema=people.schema), ["user_id"])
    for k in range(2):
        ip.append(table, people.slice(k * len(ids), len(ids)))
    wanted = [name.split(".")[1] if s == "words" else s for s in subjects]
    report = ip.erase(shared_catalog, wanted, [name], purge=True)
    assert report.purge is not None and report.purge.completed, report.purge
    left = shared_catalog.load_table(name).scan().to_arrow().column("user_id").to_pylist()
    assert sorted(left) == sorted(i for i in ids * 2 if i not in wanted)


def test_a_subject_below_the_table_location_is_still_a_trace(shared_catalog: Catalog) -> None:
    table, matcher = _new_table_and_matcher(shared_catalog, pa.string(), ["ann"])
    root = table.location().rstrip("/")
    assert not matcher.scan_text(f"{root}/data/00000-0-x.parquet") and not matcher.scan_text(root)
    assert matcher.scan_text(f"{root}/data/ann/00000-0-x.parquet")
    assert matcher.scan_text(f"{root}/data/user_id=ann/00000-0-x.parquet") is not None
    assert matcher.name("data/ann") is not None and matcher.name("data") is None
    assert matcher.scan_text("s3://elsewhere/ann/x.parquet")  # outside the location: every segment counts


@pytest.mark.parametrize("arrow_type, subject, text", [
    (pa.int32(), 12345, "12345"), (pa.int64(), 9_000_000_001, "9000000001"),
    (pa.decimal128(12, 2), Decimal("123.45"), "123.45"), (pa.date32(), datetime.date(2020, 1, 2), "2020-01-02"),
])
def test_a_numeric_or_date_id_a_writer_wrote_as_text_is_still_a_trace(
        shared_catalog: Catalog, arrow_type: pa.DataType, subject: Any, text: str) -> None:
    """A long user_id 12345 in a property (``owner=12345``), a summary value a writer chose, a ref name or a
    path folder is the person's id: only string columns were matched against text, so after erase+purge the
    verification of an int/long/decimal/date identity column reported complete with the id still there."""
    table, matcher = _new_table_and_matcher(shared_catalog, arrow_type, [subject])
    for doc in ({"snapshots": [{"summary": {"operation": "overwrite", "app.customer": text}}]},
                {"properties": {"owner": text}},
                {"refs": {text: {"snapshot-id": 1, "type": "tag"}}}):
        assert _scan_json(matcher, doc), doc
    assert matcher.scan_text(f"{table.location().rstrip('/')}/data/{text}/00000-0-x.parquet")
    assert not matcher.scan_text(f"{table.location().rstrip('/')}/data/00000-0-x.parquet")


def test_a_long_id_left_in_a_table_property_fails_the_purge(shared_catalog: Catalog) -> None:
    name = unique_name("people")
    users = pa.table({"user_id": pa.array([12345, 7, 8], pa.int64())})
    table = ip.configure_identity(shared_catalog.create_table(name, schema=users.schema), ["user_id"])
    ip.append(table, users)
    with table.transaction() as tx:
        tx.set_properties({"owner": "12345"})
    with pytest.raises(VerificationFailedError):
        ip.erase(shared_catalog, [12345], [name], purge=True)


def test_a_bucket_number_equal_to_a_numeric_id_is_not_a_trace(shared_catalog: Catalog) -> None:
    """Guard: ``user_id_bucket=1`` folders of other people's files (and ``store=2`` of another column) are not
    user 1 or 2: only string ids are matched as text in another partition field's value."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import BucketTransform, IdentityTransform
    from pyiceberg.types import LongType, NestedField

    name = unique_name("people")
    schema = Schema(NestedField(1, "user_id", LongType(), required=False), NestedField(2, "store", LongType(), required=False))
    spec = PartitionSpec(PartitionField(1, 1000, BucketTransform(4), "user_id_bucket"),
                         PartitionField(2, 1001, IdentityTransform(), "store"))
    table = ip.configure_identity(shared_catalog.create_table(name, schema=schema, partition_spec=spec), ["user_id"])
    users = pa.table({"user_id": pa.array(range(20), pa.int64()), "store": pa.array([i % 3 for i in range(20)], pa.int64())})
    ip.append(table, users)
    report = ip.erase(shared_catalog, [1, 2], [name], purge=True)
    assert report.purge is not None and report.purge.completed, report.purge
    left = shared_catalog.load_table(name).scan().to_arrow().column("user_id").to_pylist()
    assert sorted(left) == [i for i in range(20) if i not in (1, 2)]


def test_a_v3_default_holding_a_numeric_id_is_a_trace(shared_catalog: Catalog) -> None:
    """A v3 ``initial-default``/``write-default`` of an int/long column is a JSON number, and a struct's default
    nests its fields' values under their ids: only strings were looked at, so ``"write-default": 12345`` of a long
    user_id stayed after a purge that reported complete."""
    table, matcher = _new_table_and_matcher(shared_catalog, pa.int64(), [12345])
    field = {"id": 1, "name": "user_id", "required": False, "type": "long"}
    for key in ("initial-default", "write-default"):
        assert _scan_json(matcher, {"schemas": [{"fields": [{**field, key: 12345}]}]}), key
        nested = {"id": 2, "name": "s", "required": False, "type": {"type": "struct", "fields": [field]},
                  key: {"1": "12345"}}
        assert _scan_json(matcher, {"schemas": [{"fields": [nested]}]}), key
    assert _scan_json(matcher, {"schemas": [{"fields": [{**field, "initial-default": 7}]}],
                                "current-snapshot-id": 12345, "snapshots": [{"sequence-number": 12345}]}) == []


def test_a_writer_property_or_summary_named_like_iceberg_structure_is_still_searched(shared_catalog: Catalog) -> None:
    """Keys of Iceberg's structure (``type``, ``format``, ``content``, ``schema``, ``operation``) were skipped at any
    depth, so a table property or summary entry a writer named so kept the subject through a complete purge;
    Iceberg's own values there (``"operation": "append"``, a statistics blob's ``ndv``) are still structure."""
    table, matcher = _new_table_and_matcher(shared_catalog, pa.int64(), [3])
    for key in ("type", "format", "content", "schema", "operation", "partition-spec"):
        assert _scan_json(matcher, {"properties": {key: "3"}}), key
        assert _scan_json(matcher, {"snapshots": [{"summary": {"operation": "append", key: "3"}}]}), key
    assert _scan_json(matcher, {
        "snapshots": [{"summary": {"operation": "overwrite", "added-records": "3",
                                   "flink.max-committed-checkpoint-id": "3"}}],
        "statistics": [{"blob-metadata": [{"type": "apache-datasketches-theta-v1", "fields": [1],
                                           "properties": {"ndv": "3"}}]}]}) == []
