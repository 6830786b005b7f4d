"""Manifests that another writer's landed commit left behind: the purge deletes them.

pyiceberg's merge append (``commit.manifest-merge.enabled``) writes the manifest of the new files
(``<commit uuid>-m0.avro``), merges it into another manifest and commits only that one: the first stays in
``metadata/``, unreferenced and young, with the column bounds of the rows it added. When those rows were a subject's,
the purge took it for an in-flight commit's file, left it, and its verification failed ("manifest ... not referenced
by the table's metadata holds a subject: lower bound of user_id") until someone deleted orphans with age 0. A
manifest named after a commit whose snapshot is in the metadata belongs to a commit that is over: the purge now
deletes it whatever its age.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import list_files
from tests.helpers import subject_traces

VICTIM = "victim-0815-zq"
SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _merged(catalog: Catalog, name: str) -> None:
    table = catalog.create_table(name, SCHEMA, properties={
        "commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"})
    table = ip.configure_index(table, "user_id", "bloom,exact")
    ip.configure_identity(table, ["user_id"])
    for i, user in enumerate(["bob-zq", VICTIM, "carol-zq"]):  # another job's appends, merged by pyiceberg
        catalog.load_table(name).append(pa.table({"user_id": [user], "n": pa.array([i], pa.int64())}))


def _erase_and_purge(catalog: Catalog, name: str) -> None:
    report = ip.erase(catalog, [VICTIM], [name], purge=True, link_identifiers=False)
    assert report.purge is not None and report.purge.completed, str(report)
    assert Journal(catalog).get(report.request_id).status == "completed"
    rows = catalog.load_table(name).scan().to_arrow()
    assert sorted(zip(*rows.to_pydict().values(), strict=True)) == [("bob-zq", 0), ("carol-zq", 2)]


def test_a_merge_appends_left_over_manifest_is_purged(catalog: Catalog) -> None:
    _merged(catalog, "db.t")
    _erase_and_purge(catalog, "db.t")
    assert subject_traces(Path(catalog.load_table("db.t").location().removeprefix("file://")), [VICTIM]) == []


def test_a_merge_appends_left_over_manifest_is_purged_on_object_storage(rest_catalog: Catalog, lake_ns: str) -> None:
    name = f"{lake_ns}.t"
    _merged(rest_catalog, name)
    _erase_and_purge(rest_catalog, name)
    table = rest_catalog.load_table(name)
    left = []
    for f in list_files(table.io, table.location()):
        with table.io.new_input(f.location).open() as stream:
            if b"victim-0815" in stream.read():
                left.append(f.location)
    assert left == []


def test_an_unreferenced_manifest_of_a_commit_not_in_the_metadata_is_left_to_the_orphan_age(catalog: Catalog) -> None:
    """A manifest whose commit is not in the metadata may be a commit in flight: never deleted before the orphan age."""
    _merged(catalog, "db.t")
    table = catalog.load_table("db.t")
    stray = f"{table.location()}/metadata/01234567-89ab-cdef-0123-456789abcdef-m0.avro"
    first = table.metadata.snapshots[0]  # bob's append: a valid manifest without the subject
    with table.io.new_input(first.manifests(table.io)[0].manifest_path).open() as src, \
            table.io.new_output(stray).create() as out:
        out.write(src.read())
    _erase_and_purge(catalog, "db.t")
    assert table.io.new_input(stray).exists()


@pytest.fixture(autouse=True)
def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore", message=".*merge.*")
