"""A person whose id is a small number (user 0, 1, 2, or the table's record count) can be purged: the
verification looked for the subject's text in every snapshot summary value, table property and Avro header, so
``total-delete-files=0``, ``added-data-files=1``, ``format-version=2`` in every manifest, the
``privacy.identity.field-ids`` mapping ``user_id=1,email=2`` and the purge's own ``previous-versions-max=1`` were
"traces" of users 0, 1 and 2: their erasure never completed. Counts, settings and field ids are skipped now; a
value anywhere else (a summary a user wrote, a partition key, a path) still fails the verification."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
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


def test_a_subject_in_a_summary_a_writer_chose_is_still_a_trace(shared_catalog: Catalog) -> None:
    """(A string identity column: text is matched against its values, as the request's int 2 is "2" there.)"""
    from pyiceberg.types import StringType

    from iceberg_privacy.rights.keyed import digest_literals, load_secret
    from iceberg_privacy.rights.traces import SubjectMatcher

    name = unique_name("people")
    table = ip.configure_identity(shared_catalog.create_table(name, schema=pa.schema([("user_id", pa.string())])),
                                  ["user_id"])
    secret = load_secret(catalog=shared_catalog)
    matcher = SubjectMatcher(table, set(digest_literals(secret, ["2"], StringType(), "user_id")), secret, None)
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
    from pyiceberg.types import StringType

    from iceberg_privacy.rights.keyed import digest_literals, load_secret
    from iceberg_privacy.rights.traces import SubjectMatcher

    name = unique_name("people")
    table = ip.configure_identity(shared_catalog.create_table(name, schema=pa.schema([("user_id", pa.string())])),
                                  ["user_id"])
    secret = load_secret(catalog=shared_catalog)
    matcher = SubjectMatcher(table, set(digest_literals(secret, ["ann"], StringType(), "user_id")), secret, None)
    root = table.location().rstrip("/")
    assert not matcher.scan_text(f"{root}/data/00000-0-x.parquet") and not matcher.scan_text(root)
    assert matcher.scan_text(f"{root}/data/ann/00000-0-x.parquet")
    assert matcher.scan_text(f"{root}/data/user_id=ann/00000-0-x.parquet") is not None
    assert matcher.name("data/ann") is not None and matcher.name("data") is None
    assert matcher.scan_text("s3://elsewhere/ann/x.parquet")  # outside the location: every segment counts
