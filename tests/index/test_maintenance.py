"""Coverage survives backfill, compaction and expiry in any order; compaction bounds probe cost."""

from __future__ import annotations

import os
import warnings

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index import maintenance, orphans
from iceberg_privacy.index.registry import referenced_sidecar_locations, sidecar_refs
from iceberg_privacy.index.sidecar import clear_sidecar_cache
from tests.helpers import unique_name

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _batch(tag: int, n: int = 60) -> pa.Table:
    return pa.table({"user_id": pa.array([f"u{tag}-{i % 15}" for i in range(n)], pa.string()),
                     "n": pa.array(range(n), pa.int64())})


@settings(max_examples=int(os.environ.get("IP_PROPERTY_EXAMPLES", "25")))
@given(st.lists(st.sampled_from(["append", "compact", "expire", "backfill", "expire-all-but-2"]), min_size=1, max_size=7))
def test_coverage_survives_any_maintenance_sequence(shared_catalog, ops) -> None:
    table = shared_catalog.create_table(unique_name("m"), SCHEMA, properties={"write.target-file-size-bytes": "1500"})
    table = ip.configure_bloom(table, ["user_id"])
    ip.append(table, _batch(0))
    tags = [0]
    for op in ops:
        table = table.refresh()
        if op == "append":
            tags.append(len(tags))
            ip.append(table, _batch(tags[-1]))
        elif op == "compact":
            maintenance.compact_sidecars(table)
        elif op == "backfill":
            assert not maintenance.backfill(table).built  # everything was already covered
        elif op == "expire":
            maintenance.expire_snapshots(table, retain_last=1)
        else:
            maintenance.expire_snapshots(table, retain_last=2)
        table = table.refresh()
        status = maintenance.sidecar_status(table)
        assert status.covered["user_id"] == status.live_files, (op, str(status))
        for ref in sidecar_refs(table.metadata):  # nothing referenced was deleted
            assert table.io.new_input(ref.location).exists(), ref
    for tag in tags:
        assert ip.lookup(table, "user_id", f"u{tag}-3").num_rows == 4
        assert ip.plan_lookup(table, "user_id", f"u{tag}-3").files_without_sidecar == 0


def test_compaction_makes_probes_read_one_sidecar_and_removes_garbage(catalog) -> None:
    table = catalog.create_table("db.c", SCHEMA)
    table = ip.configure_bloom(table, ["user_id"])
    for tag in range(12):
        ip.append(table, _batch(tag))
    table = table.refresh()
    assert ip.plan_lookup(table, "user_id", "u3-1").sidecars_opened >= 1
    clear_sidecar_cache()
    first = maintenance.compact_sidecars(table)
    table = table.refresh()
    plan = ip.plan_lookup(table, "user_id", "u3-1")
    assert plan.sidecars_opened == 1 and plan.files_after_bloom_pruning == 1
    ip.append(table, _batch(12))  # a quiet table's next compaction has nothing to do (and commits nothing)
    second = maintenance.compact_sidecars(table.refresh())
    assert first.sidecar_path in second.deleted_sidecars  # the superseded compacted sidecar is removed
    assert not table.io.new_input(first.sidecar_path).exists()
    # Expiry of everything but the current snapshot keeps exactly the live references.
    report = maintenance.expire_snapshots(table.refresh(), retain_last=1)
    table = table.refresh()
    assert len(report.expired_snapshots) == 12 and len(table.snapshots()) == 1
    assert report.deleted_sidecars and all(not table.io.new_input(p).exists() for p in report.deleted_sidecars)
    assert len(referenced_sidecar_locations(table.metadata)) <= 2
    vanilla = SqlCatalog("default", **catalog.properties).load_table("db.c")
    assert vanilla.scan().to_arrow().num_rows == 13 * 60


def test_compaction_does_not_steal_foreign_statistics_slot(catalog) -> None:
    """A statistics file another engine registered on the current snapshot is left alone."""
    from pyiceberg.table.statistics import BlobMetadata, StatisticsFile

    table = catalog.create_table("db.s", SCHEMA)
    table = ip.configure_bloom(table, ["user_id"])
    ip.append(table, _batch(0))
    ip.append(table, _batch(1))
    table = table.refresh()
    current = table.metadata.current_snapshot_id
    foreign = StatisticsFile(snapshot_id=current, statistics_path=f"{table.location()}/metadata/theta.stats",
                             file_size_in_bytes=10, file_footer_size_in_bytes=5, blob_metadata=[
                                 BlobMetadata(type="apache-datasketches-theta-v1", snapshot_id=current,
                                              sequence_number=2, fields=[1], properties={})])
    with table.transaction() as tx:
        tx.update_statistics().set_statistics(foreign).commit()
    report = maintenance.compact_sidecars(table.refresh())
    table = table.refresh()
    stats = {s.snapshot_id: s.statistics_path for s in table.metadata.statistics}
    assert stats[current].endswith("theta.stats")
    assert report.registered_on_snapshot != current and report.registered_on_snapshot in stats


@pytest.mark.parametrize("kinds", ["bloom", "exact", "bloom,exact"])
def test_compacting_an_already_compact_table_writes_and_commits_nothing(catalog, kinds: str) -> None:
    """Regression: a scheduled ``sidecars compact`` on a quiet table rewrote the base and committed a new metadata
    version every run. Whatever could change a re-compaction's base makes it compact again: a write through the
    library, a write by another engine (no sidecar), a new FPP, another index kind, a lost base."""
    table = catalog.create_table(f"db.q_{kinds.replace(',', '_')}", SCHEMA, properties={"write.target-file-size-bytes": "1500"})
    table = ip.configure_bloom(table, ["user_id"])
    table = ip.configure_index(table, "user_id", kinds)
    ip.append(table, _batch(0))
    ip.append(table, _batch(1))

    def compact() -> maintenance.IndexReport:
        nonlocal table
        before = table.refresh().metadata_location
        report = maintenance.compact_sidecars(table)
        table = table.refresh()
        assert report.unchanged == (table.metadata_location == before), report
        assert table.metadata.properties[maintenance.PROPERTY_COMPACTED] == report.sidecar_path
        assert all(table.io.new_input(p).exists() for p in referenced_sidecar_locations(table.metadata))
        for tag in range(4):
            assert ip.lookup(table, "user_id", f"u{tag}-3").num_rows == (4 if tag in written else 0)
            if report.unchanged:
                assert ip.plan_lookup(table, "user_id", f"u{tag}-3").files_without_sidecar == 0
        return report

    written = {0, 1}
    assert not compact().unchanged
    again = compact()
    assert again.unchanged and "already compact" in str(again) and again.live_files == len(table.inspect.files())
    assert set(again.covered.values()) == {again.live_files}
    changes = {
        "library write": lambda: (ip.append(table, _batch(2)), written.add(2)),
        "another engine's write": lambda: (table.append(_batch(3)), written.add(3)),
        "new fpp": lambda: ip.configure_bloom(table, ["user_id"], fpp=0.001),
        "another index kind": lambda: ip.configure_index(table, "user_id", "bloom,exact" if kinds != "bloom,exact" else "exact"),
        "lost base": lambda: table.io.delete(table.metadata.properties[maintenance.PROPERTY_COMPACTED]),
    }
    for what, change in changes.items():
        change()
        clear_sidecar_cache()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert not compact().unchanged, what
        assert bool(seen) == (what == "lost base"), (what, [str(w.message) for w in seen])
        # a filter only a build makes (bloom,exact -> exact only drops the Bloom filters)
        if what in ("another engine's write", "lost base") or (what == "another index kind" and kinds != "bloom,exact"):
            assert not compact().unchanged, what  # partly covered: compacted again until a backfill builds it
            maintenance.backfill(table)
        assert compact().unchanged, what


def test_verify_sidecars_of_a_table_loaded_before_an_expiry_checks_the_current_sidecars(catalog) -> None:
    """A Table loaded before another process expired the snapshots (compacting the sidecars and deleting the ones
    it superseded): every
    sidecar it listed was reported broken (a false alarm telling the user to rebuild) and the compacted sidecar
    the table uses was never read."""
    table = ip.configure_bloom(catalog.create_table("db.v", SCHEMA), ["user_id"])
    for tag in range(3):
        ip.append(table, _batch(tag))
    stale = catalog.load_table("db.v")
    expired = maintenance.expire_snapshots(catalog.load_table("db.v"), retain_last=1)
    assert expired.deleted_sidecars  # sidecars the stale Table lists are gone
    report = ip.verify_sidecars(stale)
    current = [r.location for r in sidecar_refs(catalog.load_table("db.v").metadata)]
    assert expired.sidecar_path in current and not set(expired.deleted_sidecars) & set(current)
    assert report.ok and [c.location for c in report.checks] == current


def test_cleanup_by_default_leaves_the_files_of_a_write_running_for_hours(catalog) -> None:
    """A write's data files are unreferenced until its one commit at the end. The default age was one hour: the
    first files of an ingest running for two hours were deleted by a default cleanup, and its commit then named
    files that no longer existed. The default is now Iceberg's three days."""
    import time

    from iceberg_privacy.config import bloom_columns
    from iceberg_privacy.datafiles import write_data_files
    from iceberg_privacy.write import commit_written

    table = ip.configure_bloom(catalog.create_table("db.long", SCHEMA), ["user_id"])
    columns = bloom_columns(table.schema(), table.properties)
    written = write_data_files(table.io, table.metadata, _batch(0), columns, where="db.long")  # still running
    two_hours_ago = time.time() - 2 * 3600
    for f in written.files:
        os.utime(f.file_path.removeprefix("file://"), (two_hours_ago, two_hours_ago))
    report = ip.cleanup_orphans(table, delete=True)
    assert report.deleted == [] and report.older_than == orphans.DEFAULT_ORPHAN_AGE
    commit_written(table.refresh(), written, columns)  # the write ends
    assert table.refresh().scan().to_arrow().num_rows == _batch(0).num_rows
    assert ip.lookup(table, "user_id", "u0-1").num_rows == 4  # rows 1, 16, 31, 46


def test_verify_sidecars_reports_a_sidecar_whose_size_is_not_the_registered_one(catalog) -> None:
    """Another valid sidecar's bytes at a registered sidecar's path (an overwritten key, a mistaken copy): every CRC
    matches, but its size is not the one its statistics entry registered, so every lookup and ``sidecar_status``
    ignore it ("its files will be scanned"). ``verify_sidecars`` read it without the size check and reported
    "0 broken": the one check meant to find damage said the index was fine while no lookup used it."""
    table = ip.configure_index(catalog.create_table("db.sz", SCHEMA), "user_id", "bloom,exact")
    ip.append(table, _batch(0, 2))
    ip.append(table, _batch(1, 50))
    table = table.refresh()
    refs = sidecar_refs(table.metadata)
    assert len(refs) == 2 and refs[0].size != refs[1].size
    data = table.io.new_input(refs[1].location).open().read()
    with table.io.new_output(refs[0].location).create(overwrite=True) as out:
        out.write(data)
    clear_sidecar_cache()
    report = ip.verify_sidecars(table)
    assert not report.ok
    assert list(report.broken) == [refs[0].location]
    assert f"expected {refs[0].size}" in report.broken[refs[0].location]


def test_expiring_an_unknown_snapshot_id_says_so(catalog) -> None:  # type: ignore[no-untyped-def]
    """snapshot_ids naming no snapshot of the table (a typo, another table's id) returned an empty report with no
    word: the user believed the snapshot gone."""
    table = ip.configure_bloom(catalog.create_table("db.ids", SCHEMA), ["user_id"])
    for tag in range(3):
        ip.append(table, _batch(tag))
    table = table.refresh()
    first = table.snapshots()[0].snapshot_id
    with pytest.warns(Warning, match="not snapshots of db.ids"):
        report = maintenance.expire_snapshots(table, snapshot_ids=[123, first])
    assert report.expired_snapshots == [first]
    assert any("123" in w for w in report.warnings)
