"""Bad input and faults: a broken sidecar costs a scan (with a warning), never a missed row."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.config import bloom_columns
from iceberg_privacy.index import maintenance
from iceberg_privacy.index import orphans as orphan_cleanup
from iceberg_privacy.index.registry import PROPERTY_COMPACTED, PROPERTY_COMPACTED_BYTES, sidecar_refs
from iceberg_privacy.index.sidecar import (
    ColumnInfo,
    CoveredFile,
    FileFilter,
    clear_sidecar_cache,
    write_sidecar,
)
from iceberg_privacy.storage import local_path

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _table(catalog, name: str = "db.f", commits: int = 3):  # type: ignore[no-untyped-def]
    t = catalog.create_table(name, SCHEMA, properties={"write.target-file-size-bytes": "3000"})
    t = ip.configure_bloom(t, ["user_id"])
    for c in range(commits):
        ip.append(t, pa.table({"user_id": pa.array([f"u{c}-{i % 40}" for i in range(300)], pa.string()),
                               "n": pa.array(range(300), pa.int64())}))
    return t.refresh()



def _assert_exact(table, user: str, expected: int) -> ip.LookupPlan:  # type: ignore[no-untyped-def]
    plan = ip.plan_lookup(table, "user_id", user)
    assert ip.lookup(table, "user_id", user).num_rows == expected
    assert table.scan(row_filter=plan.row_filter).to_arrow().num_rows == expected
    return plan


@pytest.mark.parametrize("damage", ["bitflip-row", "bitflip-footer", "truncate", "delete", "garbage"])
def test_broken_sidecar_means_scan_and_warn(catalog, damage: str) -> None:
    table = _table(catalog)
    healthy = _assert_exact(table, "u1-7", 8)
    victim = next(r.location for r in sidecar_refs(table.metadata) if r.snapshot_id)
    path = local_path(victim)
    data = bytearray(Path(path).read_bytes())
    if damage == "bitflip-row":
        data[len(data) // 3] ^= 0x04
    elif damage == "bitflip-footer":
        data[-30] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 9]
    elif damage == "garbage":
        data = bytearray(b"PFA1" + os.urandom(len(data) - 8) + b"PFA1")
    if damage == "delete":
        os.remove(path)
    else:
        Path(path).write_bytes(bytes(data))
    clear_sidecar_cache()
    with pytest.warns(ip.SidecarWarning):
        plan = _assert_exact(table, "u1-7", 8)
        # a row bit flip is only seen when the probed row is the damaged one: probe many keys
        ip.lookup(table, "user_id", [f"u{c}-{i}" for c in range(3) for i in range(40)])
    assert plan.files_after_bloom_pruning >= healthy.files_after_bloom_pruning
    assert maintenance.backfill(table).sidecar_path is not None  # coverage is restorable
    clear_sidecar_cache()
    assert _assert_exact(table.refresh(), "u1-7", 8).files_without_sidecar == 0


def test_sidecar_naming_files_not_in_snapshot_is_harmless(catalog) -> None:
    table = _table(catalog)
    location = f"{table.location()}/metadata/foreign.privacy-sidecar.puffin"
    import numpy as np

    from iceberg_privacy.index import bloom

    footer = write_sidecar(
        table.io, location, [CoveredFile("file:///nowhere/x.parquet", 1, 1)], [ColumnInfo(1, "user_id", 0.01)],
        {1: {0: FileFilter(0, bloom.build(np.empty(0, np.uint64), 1))}}, snapshot_id=1, sequence_number=1,
        created_by="test",
    )
    with table.transaction() as tx:
        tx.set_properties({PROPERTY_COMPACTED: location, PROPERTY_COMPACTED_BYTES: str(footer.file_size)})
    table = table.refresh()
    assert _assert_exact(table, "u2-3", 8).files_without_sidecar == 0
    ip.overwrite(table, pa.table({"user_id": pa.array(["solo"], pa.string()), "n": pa.array([1], pa.int64())}))
    table = table.refresh()  # every older sidecar now names only files outside the snapshot
    assert _assert_exact(table, "u2-3", 0).files_after_bloom_pruning == 0
    assert _assert_exact(table, "solo", 1).files_without_sidecar == 0


def test_lost_statistics_reference_falls_back_to_summary_then_backfill(catalog) -> None:
    """What Spark's compute_table_stats (replacing the entry) and plain expiry do to coverage."""
    table = _table(catalog)
    with table.transaction() as tx:
        for s in table.metadata.statistics:
            tx.update_statistics().remove_statistics(s.snapshot_id).commit()
    table = table.refresh()
    assert table.metadata.statistics == []
    assert _assert_exact(table, "u0-1", 8).files_without_sidecar == 0  # summaries still point at them
    # pyiceberg's own expiry drops the summaries of expired snapshots: those files become uncovered.
    table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in table.snapshots()[:-1]]).commit()
    table = table.refresh()
    plan = _assert_exact(table, "u0-1", 8)
    assert plan.files_without_sidecar > 0  # scanned, not skipped
    status = maintenance.sidecar_status(table)
    uncovered = status.live_files - status.covered["user_id"]
    assert uncovered >= plan.files_without_sidecar
    report = maintenance.backfill(table)
    assert report.built["user_id"] == uncovered
    assert _assert_exact(table.refresh(), "u0-1", 8).files_without_sidecar == 0


def test_killed_writer_leaves_old_snapshot_and_reports_orphans(catalog, tmp_path) -> None:
    table = _table(catalog, commits=1)
    before = table.metadata.current_snapshot_id
    script = textwrap.dedent(f"""
        import os, signal
        import pyarrow as pa
        import pyiceberg.table
        import iceberg_privacy as ip
        def die(self, *a, **k):
            os.kill(os.getpid(), signal.SIGKILL)  # after files and sidecar are written, before the commit
        pyiceberg.table.Transaction.commit_transaction = die
        cat = ip.connect(home={str(tmp_path / "home")!r})
        t = cat.load_table("db.f")
        ip.append(t, pa.table({{"user_id": pa.array(["late"] * 500, pa.string()), "n": pa.array(range(500), pa.int64())}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    table = table.refresh()
    assert table.metadata.current_snapshot_id == before
    assert ip.lookup(table, "user_id", "late").num_rows == 0
    orphans = orphan_cleanup.cleanup_orphans(table, older_than=timedelta(0)).orphans
    assert any(p.endswith(".parquet") for p in orphans) and any(p.endswith(".privacy-sidecar.stats") for p in orphans)
    assert not orphan_cleanup.cleanup_orphans(table, older_than=timedelta(hours=1)).orphans  # too young to be sure
    orphan_cleanup.cleanup_orphans(table, older_than=timedelta(0), delete=True)
    assert orphan_cleanup.cleanup_orphans(table, older_than=timedelta(0)).orphans == []
    assert table.scan().to_arrow().num_rows == 300  # nothing live was touched


def test_metadata_versions_no_commit_can_make_current_are_orphans_whatever_their_age(catalog) -> None:
    """A commit killed between writing its metadata.json and the catalog's swap leaves a version that can never
    become current (every swap expects the version it was built on): an orphan at once, not after the orphan age.
    The current version, those in the log, and a version above the current one (a commit in flight) are not."""
    table = _table(catalog, commits=2)
    folder = table.metadata_location.rsplit("/", 1)[0]
    current = int(table.metadata_location.rsplit("/", 1)[1].split("-", 1)[0])
    body = table.io.new_input(table.metadata_location).open().read()
    dead = f"{folder}/{current:05d}-6c0b2d0e-0000-4000-8000-000000000001.metadata.json"  # lost the swap
    older = f"{folder}/{current - 1:05d}-6c0b2d0e-0000-4000-8000-000000000002.metadata.json"
    in_flight = f"{folder}/{current + 1:05d}-6c0b2d0e-0000-4000-8000-000000000003.metadata.json"
    for loc in (dead, older, in_flight):
        with table.io.new_output(loc).create() as out:
            out.write(body)
    found = set(orphan_cleanup.cleanup_orphans(table, older_than=timedelta(hours=1)).orphans)
    assert found == {dead, older}
    orphan_cleanup.cleanup_orphans(table, older_than=timedelta(hours=1), delete=True)
    table = catalog.load_table("db.f")  # the current version and its log are untouched
    assert table.io.new_input(in_flight).exists() and not table.io.new_input(dead).exists()
    assert table.scan().to_arrow().num_rows == 600


def test_bad_lookup_input(catalog) -> None:
    table = _table(catalog, commits=1)
    with pytest.raises(ip.InvalidLookupValueError, match="null"):
        ip.lookup(table, "user_id", [None, "u0-1"])
    with pytest.raises(ip.InvalidLookupValueError, match="column 'user_id'"):
        ip.lookup(table, "user_id", 3.5)
    with pytest.raises(ip.UnknownColumnError, match="available: user_id, n"):
        ip.lookup(table, "email", "x")
    assert ip.lookup(table, "n", ["7", 8]).num_rows == 2  # strings coerced to long, as Iceberg does
    empty = ip.lookup(table, "user_id", [])
    assert empty.num_rows == 0 and empty.schema.names == ["user_id", "n"]
    assert ip.plan_lookup(table, "user_id", []).files_after_bloom_pruning == 0
    with pytest.raises(ip.IcebergPrivacyError, match="snapshot 42 does not exist"):
        ip.lookup(table, "user_id", "u0-1", snapshot_id=42)


def test_bad_configuration(catalog) -> None:
    t = catalog.create_table("db.cfg", SCHEMA)
    with pytest.raises(ip.UnknownColumnError):
        ip.configure_bloom(t, ["nope"])
    with pytest.raises(ip.ConfigurationError, match=r"\(0, 0.5\]"):
        ip.configure_bloom(t, ["user_id"], fpp=0.7)
    with pytest.raises(ip.ConfigurationError, match=r"\(0, 0.5\]"):
        ip.configure_bloom(t, ["user_id"], fpp=0)
    with pytest.raises(ip.ConfigurationError, match="> 0"):
        ip.configure_bloom(t, ["user_id"], ndv=0)
    with pytest.raises(ip.ConfigurationError, match="at least one"):
        ip.configure_bloom(t, [])
    t2 = catalog.create_table("db.cfg2", Schema(NestedField(1, "score", LongType(), required=False),
                                                 NestedField(2, "f", __import__("pyiceberg.types").types.DoubleType(), required=False)))
    with pytest.raises(ip.UnsupportedTypeError, match="cannot be an identity"):
        ip.configure_bloom(t2, ["f"])
    t = ip.configure_bloom(t, {"user_id": {"fpp": 0.001, "ndv": 5000}, "n": {}})
    cols = {c.name: c for c in bloom_columns(t.schema(), t.properties)}
    assert cols["user_id"].fpp == 0.001 and cols["user_id"].ndv == 5000 and cols["n"].fpp == 0.01
    assert t.properties["privacy.bloom.columns"] == "user_id,n"


def test_renamed_bloom_column_keeps_everything_working(catalog) -> None:
    table = _table(catalog, commits=1)
    with table.update_schema() as upd:
        upd.rename_column("user_id", "uid")
    table = table.refresh()
    ip.append(table, pa.table({"uid": pa.array(["after"], pa.string()), "n": pa.array([1], pa.int64())}))
    table = table.refresh()
    # Filters are keyed by field id: the old files are still pruned under the new name.
    plan = ip.plan_lookup(table, "uid", "u0-5")
    assert ip.lookup(table, "uid", "u0-5").num_rows == 8 and plan.files_after_bloom_pruning < plan.files_total
    assert ip.lookup(table, "uid", "after").num_rows == 1
    table = ip.configure_bloom(table, ["uid"])
    assert table.properties["privacy.bloom.columns"] == "uid"
