"""Purge of truncate-partitioned tables (``truncate(2, user_id)``): a partition value that another,
remaining person's id also truncates to (``an`` of ``anna`` when ``ann`` is erased) is not a trace of the
erased subject. Before, such a request failed verification forever: no run could ever complete it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import TruncateTransform

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import local_path
from tests.helpers import SCHEMA, all_rows, rows, unique_name


def _table(catalog: Catalog, name: str, batches: list[list[str]]):  # type: ignore[no-untyped-def]
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=TruncateTransform(2), name="p"))
    table = catalog.create_table(name, SCHEMA, partition_spec=spec)
    table = ip.configure_bloom(table, ["user_id"])
    table = ip.configure_identity(table, ["user_id"])
    start = 0
    for b in batches:
        ip.append(table, rows(b, start))
        start += len(b)
    return catalog.load_table(name)


def _partition_dirs(table) -> set[str]:  # type: ignore[no-untyped-def]
    root = Path(local_path(table.location())) / "data"
    return {p.name[2:] for p in root.glob("p=*")} if root.exists() else set()


@pytest.mark.parametrize("with_values", [True, False], ids=["erase-purge", "purge-later"])
def test_shared_truncated_prefix_does_not_block_completion(catalog: Catalog, with_values: bool) -> None:
    table = _table(catalog, "db.tr", [["ann", "anna", "bob"], ["ann", "zed"]])
    report = ip.erase(catalog, ["ann"], request_id="r", purge=with_values)
    if not with_values:
        ip.purge(catalog, "r")
    assert Journal(catalog).get(report.request_id).status == "completed"
    assert sorted(r["user_id"] for r in all_rows(table)) == ["anna", "bob", "zed"]
    assert _partition_dirs(table) == {"an", "bo", "ze"}


def test_a_dirty_file_in_a_shared_partition_still_fails(catalog: Catalog, tmp_path: Path) -> None:
    """The clean file explains the partition value, never the rows of another file in it."""
    import shutil

    table = _table(catalog, "db.tr2", [["ann", "anna"]])
    ann_file = next(p for p in (Path(local_path(table.location())) / "data").rglob("*.parquet"))
    copy = tmp_path / "ann.parquet"
    shutil.copy(ann_file, copy)
    ip.erase(catalog, ["ann"], request_id="r")
    shutil.copy(copy, ann_file.parent / "stray.parquet")  # a young leftover holding ann next to anna's clean file
    with pytest.raises(VerificationFailedError, match="still in db.tr2 .1 rows"):
        ip.purge(catalog, "r", subjects=["ann"])
    assert Journal(catalog).get("r").status != "completed"


IDS = ["kq1", "kq2-long", "kqz", "mq1", "wq4", "wx5"]  # shared two-letter prefixes


@settings(max_examples=4)
@given(batches=st.lists(st.lists(st.sampled_from(IDS), min_size=1, max_size=4), min_size=1, max_size=3),
       erased=st.sets(st.sampled_from(IDS), min_size=1, max_size=3))
def test_truncate_partitions_left_are_those_of_remaining_ids(shared_catalog: Catalog, batches: list[list[str]],
                                                            erased: set[str]) -> None:
    name = unique_name("tp")
    table = _table(shared_catalog, name, batches)
    keep = [r for r in all_rows(table) if r["user_id"] not in erased]
    report = ip.erase(shared_catalog, sorted(erased), tables=[name], purge=True)
    assert Journal(shared_catalog).get(report.request_id).status == "completed"
    table = shared_catalog.load_table(name)
    assert all_rows(table) == keep
    assert _partition_dirs(table) == {r["user_id"][:2] for r in keep}  # no directory only erased ids made


def test_shared_truncated_prefix_completes_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    table = _table(catalog, f"{ns}.tr", [["ann", "anna", "bob"], ["ann"]])
    report = ip.erase(catalog, ["ann"], [f"{ns}.tr"], request_id=f"{ns}-r", purge=True)
    assert report.purge is not None and report.purge.completed
    assert sorted(r["user_id"] for r in all_rows(table)) == ["anna", "bob"]
