"""Purge and its verification cover every place the table's writers put files, not only its location.

``write.data.path`` / ``write.metadata.path`` (standard Iceberg properties) send data and metadata files
outside the table location. The verification used to list only the location: a normal purge verified 0 of
the table's live files, and a crashed writer's Parquet file holding the subject under ``write.data.path``
was reported "completed".
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal.faults import InjectedCrash, crash_at
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import table_roots
from tests.helpers import SCHEMA, all_rows, rows


def _table(catalog: Catalog, tmp_path: Path, name: str) -> tuple[object, Path]:
    elsewhere = tmp_path / f"{name.replace('.', '_')}_data_elsewhere"
    table = catalog.create_table(name, SCHEMA, properties={"write.data.path": f"file://{elsewhere}"})
    table = ip.configure_bloom(table, ["user_id"])
    table = ip.configure_identity(table, ["user_id"])
    ip.append(table, rows(["bob", "ann", "cy"], 0))
    ip.append(table, rows(["dee", "eve"], 3))
    return catalog.load_table(name), elsewhere


def test_verification_reads_the_live_files_under_write_data_path(catalog: Catalog, tmp_path: Path) -> None:
    table, elsewhere = _table(catalog, tmp_path, "db.wp")
    assert list(elsewhere.rglob("*.parquet")), "the writer did not honour write.data.path"
    report = ip.erase(catalog, ["ann"], ["db.wp"], request_id="wp-1", purge=True, orphan_age=timedelta(0))
    v = report.purge.tables["db.wp"].verify if report.purge else None
    assert v is not None and v.ok
    live = catalog.load_table("db.wp").inspect.files().num_rows
    assert v.files_scanned >= live >= 1  # was 0: nothing under the table location is Parquet
    assert Journal(catalog).get("wp-1").status == "completed"


def test_a_crashed_writers_file_under_write_data_path_fails_the_purge(catalog: Catalog, tmp_path: Path) -> None:
    table, elsewhere = _table(catalog, tmp_path, "db.wc")
    with crash_at("write.before_commit"), pytest.raises(InjectedCrash):
        ip.append(table, rows(["ann"], 10))  # the file is written, the commit never happens
    with pytest.raises(VerificationFailedError, match="outside the table location"):
        ip.erase(catalog, ["ann"], ["db.wc"], request_id="wc-1", purge=True, orphan_age=timedelta(0))
    assert Journal(catalog).get("wc-1").status != "completed"
    leftovers = [p for p in elsewhere.rglob("*.parquet")
                 if "ann" in pq.read_table(p).column("user_id").to_pylist()]
    assert leftovers, "the crashed writer's file is gone: the test no longer exercises the case"
    for p in leftovers:  # the operator deletes it, as the error says; then the request completes
        p.unlink()
    ip.run_request(catalog, "wc-1", purge=True, orphan_age=timedelta(0))
    assert Journal(catalog).get("wc-1").status == "completed"


def test_an_erasure_killed_after_staging_under_write_metadata_path_is_finished_by_the_rerun(
        catalog: Catalog, tmp_path: Path) -> None:
    """The erasure journals the commit it stages (snapshot id, commit uuid) so that a re-run deletes the staged
    manifests a crash left uncommitted (their bounds hold the subject's id). It looked for them only under
    ``<location>/metadata``: with ``write.metadata.path`` elsewhere they stayed, and the purge failed its
    verification for good, advising a cleanup that does not list that path either."""
    meta = tmp_path / "metadata_elsewhere"
    victim = "victim-with-a-long-identifier-0042"
    table = catalog.create_table("db.wm", SCHEMA, properties={"write.metadata.path": f"file://{meta}",
                                                              "write.metadata.metrics.column.user_id": "full"})
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    ip.append(table, rows(["bob", victim, "cy"], 0))
    with crash_at("erasure.before_commit"), pytest.raises(InjectedCrash):
        ip.erase(catalog, [victim], ["db.wm"], request_id="wm-1", purge=True)
    report = ip.run_request(catalog, "wm-1", [victim], purge=True)
    assert report.purge is not None and report.purge.completed
    assert not [p for p in meta.rglob("*") if p.is_file() and victim[:16].encode() in p.read_bytes()]


def test_a_purge_killed_before_the_catalog_swap_under_write_metadata_path_is_finished_by_the_rerun(
        catalog: Catalog, tmp_path: Path) -> None:
    """A purge commit killed after writing its metadata.json and before the catalog's swap leaves a version no swap
    can make current, holding the history (here the partition summaries naming the subject). Under the location
    the orphan cleanup deletes it at once; under ``write.metadata.path`` it is deleted too when its table-uuid is
    this table's (that path may be shared: another table's files there are never touched)."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    meta = tmp_path / "metadata_elsewhere"
    victim = "victim-with-a-long-identifier-0042"
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="user_id"))
    table = catalog.create_table("db.ws", SCHEMA, partition_spec=spec, properties={
        "write.metadata.path": f"file://{meta}", "write.summary.partition-limit": "100"})
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    ip.append(table, rows(["bob", victim], 0))
    ip.append(table, rows(["cy"], 2))
    other = catalog.create_table("db.neighbour", SCHEMA, properties={"write.metadata.path": f"file://{meta}"})
    ip.append(other, rows(["dee"], 0))
    ip.erase(catalog, [victim], ["db.ws"], request_id="ws-1")
    real_write = type(catalog)._write_metadata

    def write(metadata, io, metadata_path):  # type: ignore[no-untyped-def]
        real_write(metadata, io, metadata_path)
        if str(metadata.table_uuid) == str(table.metadata.table_uuid):
            raise InjectedCrash("killed before the catalog's swap")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(InjectedCrash):
        patch.setattr(type(catalog), "_write_metadata", staticmethod(write))
        ip.purge(catalog, "ws-1")
    report = ip.run_request(catalog, "ws-1", [victim], purge=True)
    assert report.purge is not None and report.purge.completed
    assert not [p for p in meta.rglob("*") if p.is_file() and victim[:16].encode() in p.read_bytes()]
    assert all_rows(catalog.load_table("db.neighbour"))  # its metadata in the shared folder is untouched


def test_table_roots() -> None:
    loc = "s3://lake/db/t"
    assert table_roots(loc, {}) == [loc]
    assert table_roots(loc + "/", {"write.data.path": "s3://lake/db/t/data"}) == [loc]
    assert table_roots(loc, {"write.data.path": "s3://other/d/", "write.metadata.path": "s3://lake/db/t/meta"}) == [
        loc, "s3://other/d"]
    assert table_roots(loc, {"write.data.path": "s3://lake/db"}) == ["s3://lake/db"]  # a parent covers the location
    assert table_roots(loc, {"write.object-storage.path": " "}) == [loc]


def test_crashed_writer_under_write_data_path_on_s3(s3_catalog: tuple[Catalog, str], seaweedfs: object) -> None:
    """The same on SeaweedFS (REST and SQL catalogs): the external data path is another S3 prefix."""
    catalog, ns = s3_catalog
    data_path = f"s3://{seaweedfs.bucket}/elsewhere-{ns}"  # type: ignore[attr-defined]
    table = catalog.create_table(f"{ns}.w", SCHEMA, properties={"write.data.path": data_path})
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    ip.append(table, rows(["bob", "ann"], 0))
    with crash_at("write.before_commit"), pytest.raises(InjectedCrash):
        ip.append(table, rows(["ann"], 10))
    with pytest.raises(VerificationFailedError, match="outside the table location"):
        ip.erase(catalog, ["ann"], [f"{ns}.w"], request_id=f"{ns}-1", purge=True, orphan_age=timedelta(0))
    assert Journal(catalog).get(f"{ns}-1").status != "completed"
    v = ip.purge(catalog, f"{ns}-1", orphan_age=timedelta(0), raise_on_failure=False).tables[f"{ns}.w"].verify
    assert v is not None and v.rows_found == 1 and v.files_scanned >= 2
    assert all(f.startswith(data_path) for f in v.files_with_subjects)
