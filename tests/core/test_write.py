"""Ingest: data and sidecar in one commit, what Iceberg metadata records, and writer edge cases."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy._internal.faults import injected
from iceberg_privacy.index.registry import SUMMARY_FILES, SUMMARY_PATH
from iceberg_privacy.index.sidecar import Sidecar

SCHEMA = Schema(
    NestedField(1, "user_id", StringType(), required=False),
    NestedField(2, "day", StringType(), required=False),
    NestedField(3, "n", LongType(), required=False),
)


def _data(n: int, seed: int = 0, days: int = 3) -> pa.Table:
    users = [str(uuid.UUID(int=(seed * 1_000_003 + i) % 997 + 1)) for i in range(n)]
    return pa.table({
        "user_id": pa.array(users, pa.string()),
        "day": pa.array([f"d{i % days}" for i in range(n)], pa.string()),
        "n": pa.array(range(n), pa.int64()),
    })


@pytest.fixture
def table(catalog):  # type: ignore[no-untyped-def]
    spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "day"))
    t = catalog.create_table("db.events", SCHEMA, partition_spec=spec, properties={"write.target-file-size-bytes": "4000"})
    return ip.configure_bloom(t, ["user_id"])


def test_append_commits_data_and_sidecar_atomically(table, catalog) -> None:
    report = ip.append(table, _data(600))
    table = table.refresh()
    snap = table.current_snapshot()
    assert report.snapshot_id == snap.snapshot_id and report.rows == 600 and report.data_files >= 3
    extra = snap.summary.additional_properties
    assert extra[SUMMARY_PATH] == report.sidecar_path and int(extra[SUMMARY_FILES]) == report.data_files
    [stat] = table.metadata.statistics
    assert stat.snapshot_id == snap.snapshot_id and stat.statistics_path == report.sidecar_path
    assert stat.blob_metadata == []  # invisible to engines that reject unknown blob types
    files = {t.file.file_path for t in table.scan().plan_files()}
    sc = Sidecar.open(table.io, report.sidecar_path)
    assert {f.path for f in sc.files} == files  # every committed data file is covered
    # Vanilla pyiceberg 0.12 still loads and scans the table.
    vanilla = SqlCatalog("default", **catalog.properties).load_table("db.events")
    assert vanilla.scan(row_filter=EqualTo("day", "d1")).to_arrow().num_rows == 200
    assert vanilla.metadata.statistics[0].statistics_path == report.sidecar_path


def test_stream_with_bounded_chunks_into_partitioned_table(table) -> None:
    data = _data(3000, seed=1)
    reader = pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=250))
    report = ip.append(table, reader, chunk_bytes=20_000)
    table = table.refresh()
    assert report.rows == 3000 and table.scan().to_arrow().num_rows == 3000
    assert report.sidecar_bytes > 0
    for user in data.column("user_id").to_pylist()[:25]:
        assert ip.lookup(table, "user_id", user).num_rows == data.filter(pa.compute.equal(data["user_id"], user)).num_rows


def test_overwrite_covers_rewritten_files(table) -> None:
    ip.append(table, _data(900, seed=2))
    table = table.refresh()
    # Deleting one user from partition d1 rewrites (copy-on-write) only files with that user.
    victim = _data(900, seed=2).column("user_id")[1].as_py()
    new = pa.table({"user_id": ["new-user"], "day": ["d1"], "n": pa.array([1], pa.int64())})
    report = ip.overwrite(table, new, overwrite_filter=EqualTo("user_id", victim))
    table = table.refresh()
    assert ip.lookup(table, "user_id", victim).num_rows == 0
    assert ip.lookup(table, "user_id", "new-user").num_rows == 1
    from iceberg_privacy.index.maintenance import sidecar_status

    status = sidecar_status(table)
    assert status.covered["user_id"] == status.live_files  # rewritten files got filters in the same commit
    assert report.operation == "overwrite"
    # Full overwrite replaces everything.
    ip.overwrite(table, _data(30, seed=3))
    assert table.refresh().scan().to_arrow().num_rows == 30


def test_empty_input_commits_nothing(table) -> None:
    before = table.metadata.current_snapshot_id
    report = ip.append(table, _data(0))
    assert report.snapshot_id is None and table.refresh().metadata.current_snapshot_id == before


def test_schema_mismatch_is_a_clear_error_and_writes_nothing(table) -> None:
    bad = pa.table({"user_id": pa.array([1, 2], pa.int64()), "day": ["d0", "d1"], "n": pa.array([1, 2], pa.int64())})
    with pytest.raises(ip.SchemaMismatchError, match="does not match the schema"):
        ip.append(table, bad)
    assert table.refresh().current_snapshot() is None
    with pytest.raises(TypeError, match="pyarrow.Table"):  # still a TypeError for callers that catch one
        ip.append(table, [{"user_id": "x"}])  # type: ignore[arg-type]


def test_non_arrow_data_is_a_library_error_saying_how_to_convert(table) -> None:
    import pandas as pd

    df = pd.DataFrame({"user_id": ["a"], "day": ["d0"], "n": [1]})
    for write in (ip.append, ip.overwrite):
        with pytest.raises(ip.UnsupportedDataError, match=r"Table.from_pandas\(df, preserve_index=False\)"):
            write(table, df)  # type: ignore[arg-type]
    batch = pa.record_batch({"user_id": ["a"]})
    with pytest.raises(ip.UnsupportedDataError, match="from_batches"):
        ip.append(table, batch)  # type: ignore[arg-type]
    assert table.refresh().current_snapshot() is None


@pytest.mark.parametrize("pyiceberg_retries", ["4", "0"], ids=["pyiceberg-retry", "our-retry"])
def test_concurrent_commit_is_retried(table, catalog, pyiceberg_retries) -> None:
    """A writer that loses the commit race lands on the new snapshot with its sidecar registered."""
    with table.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": pyiceberg_retries})
    table = table.refresh()
    other = catalog.load_table("db.events")
    landed: list[ip.WriteReport] = []
    started: list[bool] = []

    def commit_first(_: str) -> None:  # another writer commits between our attempt's read and its commit
        if not started:
            started.append(True)  # the other writer passes this checkpoint too
            landed.append(ip.append(table, _data(50, seed=4)))

    with injected("write.before_commit", commit_first):
        report = ip.append(other, _data(50, seed=5))
    first = landed[0]
    if pyiceberg_retries == "0":
        assert report.commit_attempts == 2  # our loop re-ran the transaction on the new base
    final = catalog.load_table("db.events")
    assert final.scan().to_arrow().num_rows == 100
    snapshots = {s.snapshot_id for s in final.snapshots()}
    assert {first.snapshot_id, report.snapshot_id} <= snapshots
    assert {s.snapshot_id for s in final.metadata.statistics} == {first.snapshot_id, report.snapshot_id}
    for user in _data(50, seed=5).column("user_id").to_pylist()[:5]:
        plan = ip.plan_lookup(final, "user_id", user)
        assert plan.files_without_sidecar == 0 and ip.lookup(final, "user_id", user).num_rows >= 1


def test_unconfigured_table_writes_no_sidecar(catalog) -> None:
    t = catalog.create_table("db.plain", SCHEMA)
    report = ip.append(t, _data(10))
    assert report.sidecar_path is None and t.refresh().metadata.statistics == []
    plan = ip.plan_lookup(t.refresh(), "user_id", "x")
    assert not plan.bloom_configured and plan.files_after_bloom_pruning == plan.files_after_manifest_pruning


def test_stream_memory_stays_bounded(catalog) -> None:
    """A 64 MB stream is written in ~4 MB chunks: Arrow's allocations never approach the total."""
    table = ip.configure_bloom(catalog.create_table("db.stream", SCHEMA), ["user_id"])
    batch_rows, batches = 16_384, 64
    schema = pa.schema([("user_id", pa.string()), ("day", pa.string()), ("n", pa.int64())])
    peak = [0]

    def gen():  # type: ignore[no-untyped-def]
        for b in range(batches):
            peak[0] = max(peak[0], pa.total_allocated_bytes())
            ids = pa.array([f"user-{b}-{i % 4096:04d}-" + "x" * 40 for i in range(batch_rows)], pa.string())
            yield pa.record_batch([ids, pa.array(["d0"] * batch_rows), pa.array(range(batch_rows), pa.int64())],
                                  schema=schema)

    total = sum(b.nbytes for b in [next(gen())]) * batches
    base = pa.total_allocated_bytes()
    report = ip.append(table, pa.RecordBatchReader.from_batches(schema, gen()), chunk_bytes=4 * 2**20)
    assert report.rows == batch_rows * batches and total > 60 * 2**20
    assert peak[0] - base < 24 * 2**20, (peak[0] - base, total)  # a few chunks in flight, not the stream
    assert report.data_files >= 10
    assert ip.lookup(table.refresh(), "user_id", "user-63-0007-" + "x" * 40).num_rows == 4


_CATALOG_CALLS = ("load_table", "table_exists", "commit_table", "list_tables", "create_table", "load_namespace_properties")


def _count_catalog_calls(catalog, monkeypatch) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Count every catalog round trip of interest (the instance's methods, so internal calls count too)."""
    calls = dict.fromkeys(_CATALOG_CALLS, 0)
    for name in _CATALOG_CALLS:
        real = getattr(catalog, name)

        def counted(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(catalog, name, counted)
    return calls


def test_plain_append_makes_exactly_pyiceberg_catalog_calls(catalog, monkeypatch) -> None:
    """No identity, no bloom columns: ip.append costs the catalog what pyiceberg's append costs (one
    commit) plus one reload of the table before the commit (a ``Table`` loaded before
    ``configure_identity`` must not skip the forget list), and no forget-list lookup."""
    ours = catalog.create_table("db.plain_ours", SCHEMA)
    theirs = catalog.create_table("db.plain_theirs", SCHEMA)
    calls = _count_catalog_calls(catalog, monkeypatch)
    theirs.append(_data(50))
    pyiceberg_calls = dict(calls)
    calls.update(dict.fromkeys(calls, 0))
    report = ip.append(ours, _data(50))
    assert calls == {**pyiceberg_calls, "load_table": pyiceberg_calls["load_table"] + 1}
    assert calls["commit_table"] == 1
    # The caller's object sees its commit, as after pyiceberg's append, without a reload.
    assert ours.current_snapshot().snapshot_id == report.snapshot_id
    assert ours.metadata_location == catalog.load_table("db.plain_ours").metadata_location


def test_identity_table_without_forget_list_checks_it_once_per_commit(catalog, monkeypatch) -> None:
    """Identity columns and no forget list: the list is looked up when the write starts (with the
    one-time legacy-name check) and once more at the commit (the re-check), nothing else."""
    from iceberg_privacy.config import configure_identity

    t = configure_identity(catalog.create_table("db.ident", SCHEMA), ["user_id"])
    theirs = catalog.create_table("db.ident_theirs", SCHEMA)
    calls = _count_catalog_calls(catalog, monkeypatch)
    theirs.append(_data(50))
    baseline = dict(calls)
    calls.update(dict.fromkeys(calls, 0))
    ip.append(t, _data(50))
    extra = {k: calls[k] - baseline[k] for k in calls if calls[k] != baseline[k]}
    # start: the forget table, its legacy name, and whether a concurrent migrator moved it meanwhile
    # (SqlCatalog.table_exists is a load_table); commit: the table itself (its identity columns may
    # have changed since it was loaded) and the forget table by name. Before: 6 and 2.
    assert extra == {"load_table": 5, "table_exists": 1}


def test_a_write_copies_the_transactions_metadata_once(table, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pyiceberg's ``Transaction.table_metadata`` deep-copies the whole metadata (every snapshot) on each access;
    the commit attempt read it three times for an append and five for an overwrite (a tenth of a write's time on a
    table of 30 snapshots). Now once per attempt; the sidecar still names the snapshot being made."""
    from pyiceberg.table import Transaction

    real = Transaction.table_metadata
    reads: list[str] = []

    def counted(self):  # type: ignore[no-untyped-def]
        import sys

        reads.append(sys._getframe(1).f_globals.get("__name__", ""))
        return real.fget(self)

    monkeypatch.setattr(Transaction, "table_metadata", property(counted))
    ip.append(table, _data(30, seed=1))
    assert reads.count("iceberg_privacy.write") == 1, reads
    reads.clear()
    ip.overwrite(table, _data(30, seed=2), EqualTo("day", "d1"))
    assert reads.count("iceberg_privacy.write") == 1, reads
    monkeypatch.undo()
    table = table.refresh()
    snap = table.current_snapshot()
    # the sidecar is registered on the snapshot the overwrite made, with that snapshot's sequence number
    stat = [s for s in table.metadata.statistics if s.snapshot_id == snap.snapshot_id]
    assert stat and stat[0].statistics_path == snap.summary.additional_properties[SUMMARY_PATH]
    blobs = Sidecar.open(table.io, stat[0].statistics_path).reader.footer.blobs
    assert blobs and {(b.snapshot_id, b.sequence_number) for b in blobs} == {(snap.snapshot_id, snap.sequence_number)}
    for who in _data(30, seed=2)["user_id"].to_pylist()[:5]:
        assert ip.lookup(table, "user_id", who).num_rows == table.scan(row_filter=EqualTo("user_id", who)).to_arrow().num_rows > 0
