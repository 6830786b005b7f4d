"""Scan tasks built from the base's file table equal pyiceberg's own planning (docs/exact-index.md 3.3).

A base file-table row may carry what a candidate needs to become a ``FileScanTask`` (content, format, size,
spec, partition values, sequence numbers), so a candidate of a covered manifest still in the target needs no
manifest decoded. The oracle is ``table.scan(snapshot_id=T).plan_files()``: for random histories with
partition evolution (bucket, identity, day and truncate transforms over long, string, timestamp and decimal
columns), merge-on-read position deletes, copy-on-write deletes and overwrites, and expiry, the tasks built
from stored rows must have the oracle's paths, delete files, partition values, spec, format and sizes;
rows without the fields (old bases) or with values that do not decode fall back to the manifest.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In, LessThan
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.manifest import (
    DATA_FILE_TYPE,
    DEFAULT_READ_VERSION,
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform, TruncateTransform
from pyiceberg.typedef import Record
from pyiceberg.types import DecimalType, LongType, NestedField, StringType, TimestampType

import iceberg_privacy as ip
from iceberg_privacy._internal.compat import data_file_factory
from iceberg_privacy.index import exact, liveness, maintenance
from iceberg_privacy.index.exact import ExactFile, ExactIndex, ExactKeys, StoredTask, exact_blobs
from iceberg_privacy.index.puffin import write_puffin
from iceberg_privacy.index.sidecar import clear_sidecar_cache
from tests.helpers import commit_delete_file, unique_name

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False),
                NestedField(3, "ts", TimestampType(), required=False),
                NestedField(4, "d", DecimalType(9, 2), required=False))
ARROW = pa.schema([("user_id", pa.string()), ("n", pa.int64()), ("ts", pa.timestamp("us")), ("d", pa.decimal128(9, 2))])
T0 = dt.datetime(2024, 1, 1)
EVOLUTIONS = {  # name -> (source column, transform, partition field name)
    "bucket_n": ("n", BucketTransform(3), "n_b"),
    "id_user": ("user_id", IdentityTransform(), "user_id"),
    "day_ts": ("ts", DayTransform(), "ts_day"),
    "id_d": ("d", IdentityTransform(), "d"),
    "trunc_user": ("user_id", TruncateTransform(2), "user_trunc"),
}


def _batch(ns: list[int]) -> pa.Table:
    return pa.table({"user_id": [f"u{n % 7}" for n in ns], "n": ns,
                     "ts": [T0 + dt.timedelta(days=n % 3, hours=n) for n in ns],
                     "d": [Decimal(n % 4) / 4 for n in ns]}, schema=ARROW)


OPS = st.one_of(
    st.tuples(st.just("append"), st.lists(st.integers(0, 11), min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.integers(0, 12)),
    st.tuples(st.just("overwrite"), st.integers(0, 11), st.lists(st.integers(0, 11), min_size=1, max_size=3)),
    st.tuples(st.just("posdel"), st.integers(0, 50), st.booleans(), st.lists(st.integers(0, 5), min_size=1, max_size=3)),
    st.tuples(st.just("evolve"), st.sampled_from(sorted(EVOLUTIONS)), st.booleans()),
    st.tuples(st.just("expire"), st.integers(0, 50)),
)


def _apply(table: Table, op: tuple[Any, ...]) -> Table:
    kind = op[0]
    if kind == "append":
        table.append(_batch(op[1]))
    elif kind == "delete" and table.current_snapshot() is not None:
        table.delete(LessThan("n", op[1]))
    elif kind == "overwrite":
        table.overwrite(_batch(op[2]), overwrite_filter=EqualTo("n", op[1]))
    elif kind == "posdel" and table.current_snapshot() is not None:
        live = sorted((t.file for t in table.scan().plan_files()),
                      key=lambda f: (f.file_path.rsplit("/", 1)[0], f.lower_bounds.get(2, b""), f.record_count))
        if live:
            f = live[op[1] % len(live)]
            table = commit_delete_file(table, f, [p % f.record_count for p in op[3]], referenced=op[2])
    elif kind == "evolve":
        source, transform, name = EVOLUTIONS[op[1]]
        present = name in {f.name for f in table.spec().fields}
        source_id = table.schema().find_field(source).field_id
        if not present and any(f.source_id == source_id for f in table.spec().fields):
            return table  # pyiceberg 0.12 cannot write to a spec with two fields from one column ("redundant partitions")
        with table.update_spec() as up:
            if present and op[2]:
                up.remove_field(name)
            elif not present:
                up.add_field(source, transform, name)
    elif kind == "expire":
        current = table.current_snapshot()
        old = [s.snapshot_id for s in table.metadata.snapshots if current is None or s.snapshot_id != current.snapshot_id]
        if old:
            table.maintenance.expire_snapshots().by_id(old[op[1] % len(old)]).commit()
    return table.refresh()


def _base_rows(table: Table, snapshot_id: int, drop: list[bool]) -> tuple[dict[str, str], frozenset[str], dict[str, ExactFile]]:
    """What a base covering ``snapshot_id`` records: file -> manifest, the manifests, and its file-table rows
    (the stored task as compaction writes it; rows picked by ``drop`` lack it, as an old base's rows do)."""
    snap = table.metadata.snapshot_by_id(snapshot_id)
    assert snap is not None
    files: dict[str, str] = {}
    rows: dict[str, ExactFile] = {}
    manifests = snap.manifests(table.io)
    for m in manifests:
        if m.content != ManifestContent.DATA:
            continue
        for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
            p = e.data_file.file_path
            files[p] = m.manifest_path
            old = drop[len(rows) % len(drop)] if drop else False
            rows[p] = ExactFile(p, 0, e.data_file.record_count, None if old else liveness.stored_task(e, table.metadata),
                                e.data_file.file_size_in_bytes)
    return files, frozenset(m.manifest_path for m in manifests), rows


def _shape(task: Any) -> tuple[Any, ...]:
    f = task.file
    return (f.file_path, f.content, f.file_format, f.spec_id, f.partition, f.record_count, f.file_size_in_bytes,
            frozenset(d.file_path for d in task.delete_files), str(task.residual))


@settings(max_examples=int(__import__("os").environ.get("IP_PROPERTY_EXAMPLES", 40)), deadline=None)
@given(ops=st.lists(OPS, min_size=1, max_size=8), picks=st.tuples(st.integers(0, 50), st.integers(0, 50)),
       drop=st.lists(st.booleans(), max_size=5), row_filter=st.one_of(
           st.just(AlwaysTrue()), st.integers(0, 11).map(lambda v: EqualTo("n", v)),
           st.sets(st.sampled_from([f"u{i}" for i in range(7)]), min_size=1, max_size=3).map(lambda v: In("user_id", v))))
def test_stored_tasks_equal_pyiceberg_planning(catalog: Catalog, ops: list[Any], picks: tuple[int, int],
                                               drop: list[bool], row_filter: BooleanExpression) -> None:
    table = catalog.create_table(unique_name("stored"), schema=SCHEMA, properties={"format-version": "2"})
    with table.update_spec() as up:
        up.add_field("n", BucketTransform(3), "n_b")
    table = table.refresh()
    table.append(_batch([0, 5, 10]))
    for op in ops:
        table = _apply(table, op)
    snaps = [s.snapshot_id for s in table.metadata.snapshots]
    covered, target = snaps[picks[0] % len(snaps)], snaps[picks[1] % len(snaps)]
    files, manifests, rows = _base_rows(table, covered, drop)
    liveness.clear_cache()
    got = liveness.resolve(table.io, table.metadata, target, files, manifests, lambda p, _data_file: p in files, AlwaysTrue(), stored=rows)
    oracle = {t.file.file_path: _shape(t) for t in table.scan(snapshot_id=target).plan_files()}
    assert {p: _shape(t) for p, t in got.live.items()} == {p: s for p, s in oracle.items() if p in files}
    assert {_shape(t) for t in got.not_indexed} == {s for p, s in oracle.items() if p not in files}
    listed = table.metadata.snapshot_by_id(target).manifests(table.io)
    target_manifests = {m.manifest_path for m in listed if m.content == ManifestContent.DATA}
    delete_manifests = [m for m in listed if m.content == ManifestContent.DELETES]
    from_stored = [p for p in got.live if files[p] in target_manifests and rows[p].task is not None]
    assert got.candidates_stored == len(from_stored)
    # a candidate with a stored task never costs its manifest: only manifests of fallbacks, new data manifests
    # and delete manifests are read
    assert got.manifests_decoded <= len(delete_manifests) + len(target_manifests - manifests) + len(
        {files[p] for p in got.live if p not in from_stored and files[p] in target_manifests})
    # With a row filter, stored tasks are pruned by partition values only (no column metrics are kept): never
    # fewer files than pyiceberg, never a file pyiceberg's partition pruning drops, the same residuals.
    filtered = liveness.resolve(table.io, table.metadata, target, files, manifests, lambda p, _data_file: p in files, row_filter,
                                stored=rows)
    want = {t.file.file_path: str(t.residual) for t in table.scan(snapshot_id=target, row_filter=row_filter).plan_files()}
    assert {p for p in want if p in files} <= set(filtered.live) <= set(got.live)
    for p, t in filtered.live.items():
        assert p not in want or str(t.residual) == want[p]
    assert all(str(t.residual) == want[t.file.file_path] for t in filtered.not_indexed)


def test_data_file_factory_matches_from_args() -> None:
    """The positional constructor builds what ``from_args`` (and pyiceberg's manifest reader) builds."""
    make = data_file_factory()
    fast = make(DataFileContent.DATA, "s3://b/f.parquet", FileFormat.PARQUET, Record(1, "x"), 20, 4096, 3)
    slow = DataFile.from_args(content=DataFileContent.DATA, file_path="s3://b/f.parquet", file_format=FileFormat.PARQUET,
                              partition=Record(1, "x"), record_count=20, file_size_in_bytes=4096)
    slow.spec_id = 3
    names = [f.name for f in DATA_FILE_TYPE[DEFAULT_READ_VERSION].fields]
    assert [getattr(fast, n) for n in names] == [getattr(slow, n) for n in names]
    assert fast.spec_id == 3 and type(fast) is DataFile


def test_file_table_rows_with_and_without_stored_tasks_round_trip(tmp_path: Path) -> None:
    """Readers accept rows with and without the stored-task fields (docs/exact-index.md 3.3)."""
    io = PyArrowFileIO()
    files = [ExactFile(f"s3://b/f{i}.parquet", i % 2, 10 + i,
                       StoredTask(0, "PARQUET", 1000 + i, 1, ("0000000000000003", None), 4, 4) if i % 3 else None,
                       1000 + i)
             for i in range(150)]
    keys = {i: ExactKeys.build(__import__("numpy").array([i * 7919], "uint64"), __import__("numpy").array([0], "uint32"))
            for i in range(len(files))}
    location = f"file://{tmp_path}/idx.puffin"
    write_puffin(io, location, exact_blobs(files, [(1, "user_id")], {1: keys}, covered_snapshot_id=1, manifests=["a", "b"]),
                 snapshot_id=1, sequence_number=1, properties={})
    idx = ExactIndex.open(io, location)
    assert idx is not None and idx.all_files() == files
    ordinals, rows = idx.rows(__import__("numpy").array([149, 3, 3, 64, 0]))
    assert ordinals == [0, 3, 64, 149] and rows == [files[o] for o in ordinals]


def test_plans_from_the_base_decode_no_manifest(catalog: Catalog) -> None:
    t = catalog.create_table("db.stored", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                 NestedField(2, "n", LongType(), required=False)))
    with t.update_spec() as up:
        up.add_field("n", BucketTransform(4), "n_b")
    t = ip.configure_index(t.refresh(), "user_id", "bloom,exact")
    for f in range(5):
        ip.append(t, pa.table({"user_id": [f"u{f}-{i}" for i in range(40)], "n": list(range(40))}))
    maintenance.compact_sidecars(t)
    t = t.refresh()
    clear_sidecar_cache()
    liveness.clear_cache()
    plan = ip.plan_lookup(t, "user_id", ["u1-3", "u4-17"])
    assert plan.exact_index_used and len(plan.tasks) == 2 and plan.manifests_decoded == 0  # (distinct buckets)
    oracle = {task.file.file_path: _shape(task) for task in t.scan().plan_files()}
    assert all(_shape(task)[:-1] == oracle[task.file.file_path][:-1] for task in plan.tasks)
    assert sorted(ip.lookup(t, "user_id", ["u1-3", "u4-17"]).column("n").to_pylist()) == [3, 17]
    batch = ip.plan_lookup(t, "user_id", [f"u{f}-{i}" for f in range(5) for i in range(40)] + [f"x{i}" for i in range(500)])
    assert len(batch.tasks) == 20 and batch.manifests_decoded == 0  # 5 appends x 4 buckets, every file a hit


def test_s3_base_builds_tasks_without_manifests(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    t = catalog.create_table(f"{ns}.stored",
                             Schema(NestedField(1, "user_id", StringType(), required=False),
                                    NestedField(2, "n", LongType(), required=False)))
    t = ip.configure_index(t, "user_id", "bloom,exact")
    for f in range(3):
        ip.append(t, pa.table({"user_id": [f"u{f}-{i}" for i in range(30)], "n": list(range(30))}))
    maintenance.compact_sidecars(t)
    t = t.refresh()
    assert t.location().startswith("s3://")
    clear_sidecar_cache()
    exact.CACHE.clear()
    liveness.clear_cache()
    plan = ip.plan_lookup(t, "user_id", "u2-9")
    assert len(plan.tasks) == 1 and plan.manifests_decoded == 0
    assert ip.lookup(t, "user_id", "u2-9").column("n").to_pylist() == [9]


@pytest.mark.parametrize("stored", [True, False])
def test_old_base_rows_fall_back_to_the_manifest(catalog: Catalog, stored: bool) -> None:
    """A base written without the fields (rows of three) plans as before: the candidate's manifest is decoded."""
    t = catalog.create_table("db.old", Schema(NestedField(1, "user_id", StringType(), required=False)))
    t.append(pa.table({"user_id": pa.array(["a", "b"], pa.string())}))
    t.append(pa.table({"user_id": pa.array(["c"], pa.string())}))
    t = t.refresh()
    files, manifests, rows = _base_rows(t, t.metadata.current_snapshot_id, [not stored])
    liveness.clear_cache()
    got = liveness.resolve(t.io, t.metadata, t.metadata.current_snapshot_id, files, manifests, lambda p, _data_file: p in files,
                           stored=rows)
    assert set(got.live) == set(files)
    assert got.manifests_decoded == (0 if stored else 2) and got.candidates_stored == (2 if stored else 0)


def test_planning_pauses_and_restores_the_collector(catalog: Catalog) -> None:
    import gc
    import threading

    from iceberg_privacy.index.exact_plan import paused_gc

    t = catalog.create_table("db.gc", Schema(NestedField(1, "user_id", StringType(), required=False)))
    t = ip.configure_index(t, "user_id", "exact")
    ip.append(t, pa.table({"user_id": pa.array(["a", "b"], pa.string())}))
    t = t.refresh()
    assert gc.isenabled()
    assert len(ip.plan_lookup(t, "user_id", "a").tasks) == 1
    assert gc.isenabled()
    gc.disable()  # a caller that disabled the collector keeps it disabled
    try:
        ip.plan_lookup(t, "user_id", "a")
        assert not gc.isenabled()
    finally:
        gc.enable()
    # overlapping plans in threads: collection resumes only after the last one ends
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with paused_gc():
            inside.set()
            release.wait(10)

    th = threading.Thread(target=hold)
    th.start()
    inside.wait(10)
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()
    release.set()
    th.join()
    assert gc.isenabled()


def test_refreshed_metadata_sees_the_new_base(catalog: Catalog) -> None:
    """Sidecar references are memoized per metadata object: a compaction's new metadata finds its base."""
    t = catalog.create_table("db.memo", Schema(NestedField(1, "user_id", StringType(), required=False)))
    t = ip.configure_index(t, "user_id", "exact")
    for i in range(3):
        ip.append(t, pa.table({"user_id": pa.array([f"u{i}"], pa.string())}))
    t = t.refresh()
    before = ip.plan_lookup(t, "user_id", "u1")
    assert before.exact_indexes_probed == 3
    maintenance.compact_sidecars(t)
    after = ip.plan_lookup(t.refresh(), "user_id", "u1")
    assert after.exact_indexes_probed == 1 and len(after.tasks) == 1 and after.manifests_decoded == 0
