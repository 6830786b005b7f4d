"""A data-file path reused for other bytes with the SAME record count must not be pruned by the index written
for the old bytes (docs/exact-index.md 3.3: every file-table row carries the file's byte size).

Before file-table version 2 a delta's rows were ``[path, manifest, record_count]``: the planner could compare
only row counts, so a file added (``add_files``) at a removed file's path with as many rows was treated as
indexed by the old delta, and a lookup of one of its new values skipped it (an erasure would have reported
complete with the person's rows still there). Old (version-1) indexes are still read: their sizes come from
the same Puffin file's sidecar files blob.
"""

from __future__ import annotations

import warnings
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyiceberg.expressions import EqualTo
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index import exact
from tests.helpers import unique_name

SCHEMA = Schema(NestedField(1, "k", StringType(), required=False), NestedField(2, "f", LongType(), required=False),
                NestedField(3, "r", LongType(), required=False))


def _batch(keys: list[str], file_no: int, start: int) -> pa.Table:
    return pa.table({"k": pa.array(keys, pa.string()), "f": pa.array([file_no] * len(keys), pa.int64()),
                     "r": pa.array(range(start, start + len(keys)), pa.int64())})


def _file_of(table: Any, file_no: int) -> Any:
    return next(t.file for t in table.scan(row_filter=EqualTo("f", file_no)).plan_files())


def _reuse(catalog: Any, name: str, file_no: int, keys: list[str], start: int) -> tuple[int, int]:
    """Drop data file ``file_no`` from the table, write other rows (as many) at its path, ``add_files`` it.
    Returns (old size, new size)."""
    table = catalog.load_table(name)
    old = _file_of(table, file_no)
    table.delete(EqualTo("f", file_no))  # min = max = file_no: the whole file leaves, nothing is rewritten
    table = catalog.load_table(name)
    assert all(t.file.file_path != old.file_path for t in table.scan().plan_files())
    new = _batch(keys, 100 + file_no, start)
    with table.io.new_output(old.file_path).create(overwrite=True) as out:
        pq.write_table(new, out)
    table.add_files([old.file_path])
    size = _file_of(catalog.load_table(name), 100 + file_no).file_size_in_bytes
    return int(old.file_size_in_bytes), int(size)


def _check(catalog: Any, name: str, probes: list[str]) -> None:
    table = catalog.load_table(name)
    everything = table.scan().to_arrow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in probes:
            want = sorted(r for k, r in zip(everything.column("k").to_pylist(), everything.column("r").to_pylist(),
                                            strict=True) if k == v)
            got = sorted(ip.lookup(table, "k", v).column("r").to_pylist())
            assert got == want, (v, got, want)
        many = sorted(set(probes))
        want_many = sorted(r for k, r in zip(everything.column("k").to_pylist(), everything.column("r").to_pylist(),
                                             strict=True) if k in set(many))
        assert sorted(ip.lookup(table, "k", many).column("r").to_pylist()) == want_many


def _scenario(catalog: Any, name: str, files: list[list[str]], reused: int, new_keys: list[str],
              steps: tuple[str, ...] = ("fresh", "compact")) -> bool:
    """Build, reuse one path with equal record count, and check pruned == full scan after each step.
    Returns False when the new bytes happen to have the old size (then nothing can tell them apart)."""
    table = catalog.create_table(name, SCHEMA)
    ip.configure_index(table, "k", "exact")
    start = 0
    for i, keys in enumerate(files):
        ip.append(catalog.load_table(name), _batch(keys, i, start))
        start += len(keys)
    old_size, new_size = _reuse(catalog, name, reused, new_keys, start)
    if old_size == new_size:
        return False
    probes = sorted({k for ks in files for k in ks} | set(new_keys) | {"absent"})
    for step in steps:
        if step == "compact":
            ip.compact_sidecars(catalog.load_table(name))
        _check(catalog, name, probes)
    return True


def test_reused_path_with_equal_record_count_is_not_pruned(catalog) -> None:
    """The regression: exact-only column, new bytes at an old path, same row count. Failed before the fix
    (``lookup('k', 'zz')`` returned nothing)."""
    assert _scenario(catalog, "db.reuse_eq", [["a", "b", "c"], ["d"]], 0, ["zz", "yy", "a"])
    status = ip.sidecar_status(catalog.load_table("db.reuse_eq"))
    # the reused path is not counted as indexed; an exact-only column has no Bloom coverage line
    assert status.covered == {"k (exact)": 1} and status.live_files == 2, str(status)
    plan = ip.plan_lookup(catalog.load_table("db.reuse_eq"), "k", "d")
    # the index still prunes: one candidate, plus the reused path (no index describes its bytes) scanned
    assert plan.exact_index_used and plan.files_after_exact_index == 1 and len(plan.tasks) == 2, plan.explain()


_keys = st.lists(st.sampled_from([f"u{i}" for i in range(12)]), min_size=1, max_size=6)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(files=st.lists(_keys, min_size=1, max_size=3), data=st.data())
def test_property_pruned_equals_full_scan_with_reused_paths(shared_catalog, files: list[list[str]], data) -> None:
    reused = data.draw(st.integers(0, len(files) - 1))
    new_keys = data.draw(st.lists(st.sampled_from([f"u{i}" for i in range(6, 18)]),
                                  min_size=len(files[reused]), max_size=len(files[reused])))
    assume(_scenario(shared_catalog, unique_name("reuse"), files, reused, new_keys))


def test_reused_path_on_seaweedfs_rest(rest_catalog, lake_ns: str) -> None:
    assert _scenario(rest_catalog, f"{lake_ns}.reuse", [["a", "b", "c"], ["d", "e"]], 0, ["zz", "yy", "a"])


def test_version_1_index_still_read(catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index written by the version-1 writer (short rows without a size) is read: it still prunes, and a
    path reused with an equal record count is still scanned (its size comes from the sidecar's files blob)."""
    monkeypatch.setattr(exact, "_META_VERSION", 1)
    table = catalog.create_table("db.v1", SCHEMA)
    ip.configure_index(table, "k", "exact")
    for i, keys in enumerate([["a", "b", "c"], ["d"], ["e", "f"]]):
        ip.append(catalog.load_table("db.v1"), _batch(keys, i, 10 * i))
    old_size, new_size = _reuse(catalog, "db.v1", 0, ["zz", "yy", "a"], 100)
    assert old_size != new_size
    monkeypatch.setattr(exact, "_META_VERSION", 2)  # a reader of this version from here on
    exact.CACHE.clear()
    table = catalog.load_table("db.v1")
    idx = [exact.CACHE.get(table.io, r.location, r.size)[0] for r in ip.index.registry.sidecar_refs(table.metadata)]
    assert {i.meta_version for i in idx if i is not None} == {1}
    rows = [f for i in idx if i is not None for f in i.all_files()]
    assert rows and all(f.file_size_in_bytes is not None for f in rows)  # sizes from the files blob
    plan = ip.plan_lookup(table, "k", "d")
    # old deltas still prune ("e", "f" not read); the reused path is scanned
    assert plan.exact_index_used and plan.files_after_exact_index == 1 and len(plan.tasks) == 2, plan.explain()
    _check(catalog, "db.v1", ["a", "b", "d", "e", "yy", "zz", "absent"])
    ip.compact_sidecars(catalog.load_table("db.v1"))  # rewrites the base in version 2
    exact.CACHE.clear()
    table = catalog.load_table("db.v1")
    base = exact.CACHE.get(table.io, table.properties["privacy.sidecar.compacted"])[0]
    assert base is not None and base.meta_version == 2
    _check(catalog, "db.v1", ["a", "b", "d", "e", "yy", "zz", "absent"])


def test_rows_of_the_wrong_length_for_their_version_make_the_index_unusable(tmp_path) -> None:
    """A version-2 file table with a size-less (3-element) row is malformed: the index file is not used (its
    files are scanned), never read as if the row described the live file."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    from iceberg_privacy.errors import SidecarError
    from iceberg_privacy.index.exact import ExactFile, ExactIndex, ExactKeys
    from iceberg_privacy.index.puffin import write_puffin

    io = PyArrowFileIO()
    import numpy as np

    keys = ExactKeys.build(np.array([1, 2], np.uint64), np.array([0, 0], np.uint32))
    good = [ExactFile("s3://b/f0.parquet", -1, 2, None, 100)]
    loc = f"file://{tmp_path}/x.stats"
    write_puffin(io, loc, exact.exact_blobs(good, [(1, "k")], {1: {0: keys}}), snapshot_id=1, sequence_number=1, properties={})
    idx = ExactIndex.open(io, loc)
    assert idx is not None and idx.all_files()[0].file_size_in_bytes == 100
    original = exact._row_json
    try:
        exact._row_json = lambda f: [f.path, f.manifest, f.record_count]  # type: ignore[assignment]
        write_puffin(io, loc, exact.exact_blobs(good, [(1, "k")], {1: {0: keys}}), snapshot_id=1, sequence_number=1, properties={})
    finally:
        exact._row_json = original  # type: ignore[assignment]
    idx = ExactIndex.open(io, loc)
    assert idx is not None
    with pytest.raises(SidecarError, match="3 fields"):
        idx.all_files()
