"""Statistics files other engines register (``statistics``: NDV sketches; ``partition-statistics``: one row
per partition tuple) hold a subject too: after erase + purge none of them is left, and a partition-statistics
file the purge cannot delete fails the verification."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.table.statistics import BlobMetadata, PartitionStatisticsFile, StatisticsFile
from pyiceberg.table.update import SetPartitionStatisticsUpdate
from pyiceberg.transforms import IdentityTransform

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.index.puffin import write_puffin
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import write_bytes
from tests.helpers import SCHEMA, commit_delete_file, rows

VICTIM = "victim-0042"
SPEC = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="user_id"))


def _fid(name: str, typ: pa.DataType, fid: int) -> pa.Field:
    return pa.field(name, typ, metadata={b"PARQUET:field_id": str(fid).encode()})


def _partition_stats(table: Table, users: list[str]) -> pa.Table:
    """A partition-statistics file as the Iceberg spec lays it out (field ids 1-3 of the spec's schema)."""
    part = pa.struct([_fid("user_id", pa.string(), 1000)])
    schema = pa.schema([_fid("partition", part, 1), _fid("spec_id", pa.int32(), 2),
                        _fid("data_record_count", pa.int64(), 3)])
    return pa.table([pa.array([{"user_id": u} for u in users], part), pa.array([0] * len(users), pa.int32()),
                     pa.array([1] * len(users), pa.int64())], schema=schema)


def _write_parquet(table: Table, location: str, data: pa.Table) -> int:
    buf = pa.BufferOutputStream()
    pq.write_table(data, buf)
    raw = buf.getvalue().to_pybytes()
    write_bytes(table.io, location, raw)
    return len(raw)


def _register_partition_stats(catalog: Catalog, table: Table, users: list[str], folder: str) -> str:
    sid = table.metadata.current_snapshot_id
    location = f"{table.location()}/{folder}/partition-stats-{sid}-{uuid.uuid4()}.parquet"
    size = _write_parquet(table, location, _partition_stats(table, users))
    entry = PartitionStatisticsFile(snapshot_id=sid, statistics_path=location, file_size_in_bytes=size)
    catalog.commit_table(table, (), (SetPartitionStatisticsUpdate(partition_statistics=entry),))  # as Spark does
    return location


def _register_sketch(table: Table, users: list[str]) -> str:
    """A Trino/Spark NDV statistics file: a Puffin blob of 64-bit hashes of the column's values (a theta
    sketch keeps every hash of a small column), which a dictionary of candidate ids inverts."""
    sid = table.metadata.current_snapshot_id
    location = f"{table.location()}/metadata/{sid}-{uuid.uuid4()}.stats"
    payload = b"".join(hashlib.sha256(u.encode()).digest()[:8] for u in sorted(users))
    footer = write_puffin(table.io, location, [("apache-datasketches-theta-v1", [2], payload, {"ndv": str(len(users))})],
                          snapshot_id=sid, sequence_number=table.metadata.last_sequence_number, properties={})
    entry = StatisticsFile(snapshot_id=sid, statistics_path=location, file_size_in_bytes=footer.file_size,
                           file_footer_size_in_bytes=footer.footer_size,
                           blob_metadata=[BlobMetadata(type="apache-datasketches-theta-v1", snapshot_id=sid,
                                                       sequence_number=table.metadata.last_sequence_number,
                                                       fields=[2], properties={})])
    with table.transaction() as tx:
        tx.update_statistics().set_statistics(entry).commit()
    return location


def _table(catalog: Catalog, name: str) -> Table:
    table = catalog.create_table(name, SCHEMA, partition_spec=SPEC)
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    ip.append(table, rows(["ann", VICTIM, "bob"], 0))
    ip.append(table, rows(["carl", VICTIM], 10))
    return catalog.load_table(name)


def _exists(table: Table, location: str) -> bool:
    return bool(table.io.new_input(location).exists())


def _erase_and_purge(catalog: Catalog, name: str, request_id: str) -> Table:
    table = _table(catalog, name)
    users = ["ann", VICTIM, "bob", "carl"]
    part = _register_partition_stats(catalog, table, users, "metadata")
    sketch = _register_sketch(catalog.load_table(name), users)
    report = ip.erase(catalog, [VICTIM], [name], request_id=request_id, purge=True)
    assert report.purge is not None and report.purge.completed
    table = catalog.load_table(name)
    # Both were registered for a snapshot the purge expired: referenced by nothing, and gone.
    assert not _exists(table, part) and not _exists(table, sketch)
    assert not table.metadata.partition_statistics  # pyiceberg's expiry alone kept the entry (and the file)
    assert all(s.statistics_path != sketch for s in table.metadata.statistics)
    deleted = report.purge.tables[name].deleted_by_kind
    assert deleted.get("partition-statistics") == 1 and deleted.get("statistics") == 1
    return table


def test_statistics_of_expired_snapshots_are_deleted(catalog: Catalog) -> None:
    _erase_and_purge(catalog, "db.p", "r")
    assert Journal(catalog).get("r").status == "completed"


@pytest.mark.slow
def test_statistics_and_dangling_deletes_go_on_object_storage(rest_catalog: Catalog, lake_ns: str) -> None:
    """SeaweedFS with the REST catalog, an s3:// warehouse: foreign statistics, partition statistics and a
    position delete file left dangling by the erasure (its entry holds the partition value) are all gone. The
    first purge dies with the manifest list dropping the delete file written and not committed (its partition
    summaries name the subject): the re-run finds it again from the journal (s3:// locations) and deletes it."""
    catalog, name = rest_catalog, f"{lake_ns}.p"
    table = _table(catalog, name)
    victim_file = next(t.file for t in table.scan().plan_files() if VICTIM in t.file.file_path)
    table = commit_delete_file(table, victim_file, [0])
    delete_path = next(d.file_path for t in table.scan().plan_files() for d in t.delete_files)
    users = ["ann", VICTIM, "bob", "carl"]
    part = _register_partition_stats(catalog, table, users, "data")  # the table bucket refuses Parquet in metadata/
    sketch = _register_sketch(catalog.load_table(name), users)
    with faults.crash_at("purge.dangling_staged"), pytest.raises(faults.InjectedCrash):
        ip.erase(catalog, [VICTIM], [name], request_id=f"{lake_ns}-r", purge=True)
    report = ip.run_request(catalog, f"{lake_ns}-r", [VICTIM], purge=True)
    assert report.purge is not None and report.purge.completed
    table = catalog.load_table(name)
    assert not any(_exists(table, p) for p in (part, sketch, delete_path))
    assert not table.metadata.partition_statistics
    assert all(m.content == 0 for m in table.current_snapshot().manifests(table.io))  # type: ignore[union-attr]


def test_a_partition_statistics_file_naming_a_subject_fails_the_verification(catalog: Catalog) -> None:
    """A partition-statistics file the metadata no longer references (a crashed writer's, younger than the
    orphan age) holds the erased id as a partition tuple: the verification reads it, by partition field id."""
    table = _table(catalog, "db.p")
    ip.erase(catalog, [VICTIM], ["db.p"], request_id="r")
    stray = f"{table.location()}/metadata/partition-stats-{uuid.uuid4()}.parquet"
    _write_parquet(table, stray, _partition_stats(table, ["ann", VICTIM]))
    clean = f"{table.location()}/metadata/partition-stats-{uuid.uuid4()}.parquet"
    _write_parquet(table, clean, _partition_stats(table, ["ann", "bob"]))
    with pytest.raises(VerificationFailedError, match="partition statistics tuple user_id=<subject>"):
        ip.purge(catalog, "r", subjects=[VICTIM])
    assert ip.purge(catalog, "r", orphan_age=timedelta(0)).completed
    assert not _exists(table, stray) and not _exists(table, clean)


def test_a_tag_whose_only_trace_is_its_partition_statistics_is_named_with_remove_tag(catalog: Catalog) -> None:
    """A tag on a snapshot after another tool deleted the subject reads none of their rows, but the partition
    statistics an engine registered for that snapshot keep the subject's tuple, and a tag keeps them from expiring.
    The verification failed correctly, but told the operator to run the request again, which cannot change a tag.
    Now the tag is named with the command that drops it; once dropped, the next run completes."""
    from pyiceberg.expressions import EqualTo

    from iceberg_privacy.errors import RefHoldsSubjectError

    table = _table(catalog, "db.p")
    table.delete(EqualTo("user_id", VICTIM))  # another tool's delete, before the request
    ip.append(catalog.load_table("db.p"), rows(["dan"], 20))
    table = catalog.load_table("db.p")
    with table.manage_snapshots() as ms:
        ms.create_tag(table.metadata.current_snapshot_id, "audit")
    stats = _register_partition_stats(catalog, catalog.load_table("db.p"), ["ann", VICTIM, "bob"], "metadata")
    ip.append(catalog.load_table("db.p"), rows(["eve"], 30))
    with pytest.raises(RefHoldsSubjectError, match=r"tag 'audit' of db\.p .*remove_tag\('audit'\)") as caught:
        ip.erase(catalog, [VICTIM], ["db.p"], request_id="r", purge=True)
    assert "remove_tag('audit')" in caught.value.next_step
    with catalog.load_table("db.p").manage_snapshots() as ms:
        ms.remove_tag("audit")
    report = ip.run_request(catalog, "r", purge=True)
    assert report.purge is not None and report.purge.completed
    assert not _exists(catalog.load_table("db.p"), stats)
