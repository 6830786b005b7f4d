"""Liveness without decoding every manifest equals pyiceberg's own planning.

The oracle is ``table.scan(snapshot_id=T, row_filter=F).plan_files()``. For random histories (appends with
and without manifest merging, copy-on-write deletes and overwrites, merge-on-read position deletes scoped
to a file or to a partition, snapshot expiry), an index "covering" a random snapshot C, random candidates
among C's files and a random target T (older or newer than C), :func:`liveness.resolve` must return exactly
the oracle's tasks (and their delete files) for the candidates, plus the oracle's tasks for files C did
not have; and a warm process decodes only manifests it has not seen.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In, LessThan
from pyiceberg.manifest import ManifestContent
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import LongType, NestedField, StringType

from iceberg_privacy.errors import IcebergPrivacyError
from iceberg_privacy.index import liveness
from tests.helpers import commit_delete_file, unique_name

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))
ARROW = pa.schema([("user_id", pa.string()), ("n", pa.int64())])
BUCKETS = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=BucketTransform(3), name="n_b"))


def _create(catalog: Catalog, *, partitioned: bool, merge: bool) -> Table:
    props = {"format-version": "2"}
    if merge:
        props |= {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"}
    return catalog.create_table(unique_name("live"), schema=SCHEMA, partition_spec=BUCKETS if partitioned else PartitionSpec(),
                                properties=props)


def _batch(ns: list[int]) -> pa.Table:
    return pa.table({"user_id": [f"u{n}" for n in ns], "n": ns}, schema=ARROW)


def _covered(table: Table, snapshot_id: int) -> tuple[dict[str, str], frozenset[str]]:
    """What an index covering ``snapshot_id`` records, computed with pyiceberg alone: live data file ->
    the manifest listing it, and the snapshot's manifest paths."""
    snap = table.metadata.snapshot_by_id(snapshot_id)
    assert snap is not None
    files: dict[str, str] = {}
    manifests = snap.manifests(table.io)
    for m in manifests:
        if m.content == ManifestContent.DATA:
            for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
                files[e.data_file.file_path] = m.manifest_path
    return files, frozenset(m.manifest_path for m in manifests)


def _tasks(tasks: Any) -> dict[str, frozenset[str]]:
    return {t.file.file_path: frozenset(d.file_path for d in t.delete_files) for t in tasks}


def _check(table: Table, covered_id: int, target_id: int, chosen: list[bool], row_filter: BooleanExpression) -> liveness.Liveness:
    files, manifests = _covered(table, covered_id)
    candidates = {p: m for (p, m), keep in zip(sorted(files.items()), chosen + [True] * len(files), strict=False) if keep}
    got = liveness.resolve(table.io, table.metadata, target_id, candidates, manifests, lambda p, _data_file: p in files, row_filter)
    oracle = _tasks(table.scan(snapshot_id=target_id, row_filter=row_filter).plan_files())
    assert _tasks(got.live.values()) == {p: d for p, d in oracle.items() if p in candidates}
    assert _tasks(got.not_indexed) == {p: d for p, d in oracle.items() if p not in files}
    assert len(got.not_indexed) == len(_tasks(got.not_indexed))  # no file twice
    # residuals as pyiceberg computes them (ArrowScan filters rows by them)
    residuals = {t.file.file_path: str(t.residual) for t in table.scan(snapshot_id=target_id, row_filter=row_filter).plan_files()}
    assert {t.file.file_path: str(t.residual) for t in got.tasks} == {p: residuals[p] for p in _tasks(got.tasks)}
    return got


OPS = st.one_of(
    st.tuples(st.just("append"), st.lists(st.integers(0, 11), min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.integers(0, 12)),
    st.tuples(st.just("overwrite"), st.integers(0, 11), st.lists(st.integers(0, 11), min_size=1, max_size=3)),
    st.tuples(st.just("posdel"), st.integers(0, 50), st.booleans(), st.lists(st.integers(0, 5), min_size=1, max_size=3)),
    st.tuples(st.just("expire"), st.integers(0, 50)),
)
FILTERS = st.one_of(
    st.just(AlwaysTrue()),
    st.integers(0, 11).map(lambda v: EqualTo("n", v)),
    st.sets(st.integers(0, 11), min_size=2, max_size=4).map(lambda vs: In("n", vs)),
    st.integers(0, 12).map(lambda v: LessThan("n", v)),
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
        live = sorted((t.file for t in table.scan().plan_files()),  # by content: reproducible examples
                      key=lambda f: (f.lower_bounds.get(2, b""), f.upper_bounds.get(2, b""), f.record_count))
        if live:
            f = live[op[1] % len(live)]
            table = commit_delete_file(table, f, [p % f.record_count for p in op[3]], referenced=op[2])
    elif kind == "expire":
        current = table.current_snapshot()
        old = [s.snapshot_id for s in table.metadata.snapshots if current is None or s.snapshot_id != current.snapshot_id]
        if old:
            table.maintenance.expire_snapshots().by_id(old[op[1] % len(old)]).commit()
    return table.refresh()


@settings(max_examples=int(__import__("os").environ.get("IP_PROPERTY_EXAMPLES", 40)))
@given(partitioned=st.booleans(), merge=st.booleans(), ops=st.lists(OPS, min_size=1, max_size=7),
       picks=st.tuples(st.integers(0, 50), st.integers(0, 50)), chosen=st.lists(st.booleans(), max_size=40),
       row_filter=FILTERS)
def test_resolve_equals_pyiceberg_planning(catalog: Catalog, partitioned: bool, merge: bool, ops: list[Any],
                                           picks: tuple[int, int], chosen: list[bool], row_filter: BooleanExpression) -> None:
    table = _create(catalog, partitioned=partitioned, merge=merge)
    table.append(_batch([0, 5, 10]))
    for op in ops:
        table = _apply(table, op)
    snaps = [s.snapshot_id for s in table.metadata.snapshots]
    covered, target = snaps[picks[0] % len(snaps)], snaps[picks[1] % len(snaps)]
    first = _check(table, covered, target, chosen, row_filter)
    again = _check(table, covered, target, chosen, row_filter)  # the same answer from a warm cache
    assert again.manifests_decoded == 0 and again.manifests_cached == first.manifests_decoded + first.manifests_cached


def test_warm_cache_decodes_only_new_manifests(catalog: Catalog) -> None:
    liveness.clear_cache()
    table = _create(catalog, partitioned=False, merge=False)
    for i in range(6):
        table.append(_batch([i]))
    covered_id = table.current_snapshot().snapshot_id
    files, manifests = _covered(table, covered_id)
    candidates = dict(sorted(files.items())[:2])  # two candidates, each in its own manifest (fast appends)
    warm = liveness.resolve(table.io, table.metadata, covered_id, candidates, manifests, lambda p, _data_file: p in files)
    assert warm.manifests_decoded == 2 and warm.new_manifests == 0 and set(warm.live) == set(candidates)
    for i in range(3):
        table.append(_batch([100 + i]))
    later = liveness.resolve(table.io, table.metadata, table.current_snapshot().snapshot_id, candidates, manifests,
                             lambda p, _data_file: p in files)
    assert later.new_manifests == 3 and later.manifests_decoded == 3 and later.manifests_cached == 2
    assert len(later.not_indexed) == 3 and set(later.live) == set(candidates)
    assert liveness.cache_info().manifests_decoded_total >= 5


def test_manifest_merge_moves_candidates_into_new_manifests(catalog: Catalog) -> None:
    """A merge rewrites the covered manifests: candidates are found in the merged one, indexed non-candidates
    are not returned, and files the index never saw are."""
    table = catalog.create_table(unique_name("merge"), schema=SCHEMA, properties={"format-version": "2"})
    for i in range(3):
        table.append(_batch([i]))
    covered_id = table.current_snapshot().snapshot_id
    files, manifests = _covered(table, covered_id)
    with table.transaction() as tx:
        tx.set_properties({"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"})
    table.append(_batch([7]))
    table = table.refresh()
    target = table.current_snapshot().snapshot_id
    assert not manifests & {m.manifest_path for m in table.current_snapshot().manifests(table.io)}  # all rewritten
    candidates = dict(sorted(files.items())[:1])
    got = liveness.resolve(table.io, table.metadata, target, candidates, manifests, lambda p, _data_file: p in files)
    assert set(got.live) == set(candidates) and len(got.not_indexed) == 1 and got.candidates_dead == 0


def test_equality_deletes_are_refused_like_pyiceberg(catalog: Catalog) -> None:
    table = _create(catalog, partitioned=False, merge=False)
    table.append(_batch([1, 2]))
    f = next(iter(table.scan().plan_files())).file
    table = commit_delete_file(table, f, [], equality_ids=[2], rows=pa.table({"n": pa.array([1], pa.int64())}))
    with pytest.raises(ValueError):
        list(table.scan().plan_files())
    files, manifests = _covered(table, table.current_snapshot().snapshot_id)
    with pytest.raises(IcebergPrivacyError, match="equality delete"):
        liveness.resolve(table.io, table.metadata, table.current_snapshot().snapshot_id, files, manifests)


def test_cache_is_bounded() -> None:
    liveness.clear_cache()
    try:
        liveness.set_cache_capacity(10)
        cache = liveness._CACHE
        for i in range(8):
            cache.put(f"k{i}", i, 3)
        assert cache.weight <= 10 and cache.get("k7") == 7 and cache.get("k0") is None
        liveness.set_cache_capacity(4)
        assert cache.weight <= 4
        with pytest.raises(IcebergPrivacyError):
            liveness.set_cache_capacity(-1)
    finally:
        liveness.set_cache_capacity(liveness.DEFAULT_CACHE_ENTRIES)
        liveness.clear_cache()


def test_unknown_snapshot_is_a_clear_error(catalog: Catalog) -> None:
    table = _create(catalog, partitioned=False, merge=False)
    table.append(_batch([1]))
    with pytest.raises(IcebergPrivacyError, match="snapshot 42"):
        liveness.resolve(table.io, table.metadata, 42, {}, frozenset())


def test_s3_warehouse(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.live", schema=SCHEMA, partition_spec=BUCKETS, properties={"format-version": "2"})
    table.append(_batch([0, 1, 2, 3]))
    covered_id = table.current_snapshot().snapshot_id
    table.append(_batch([4, 5]))
    table = commit_delete_file(table.refresh(), next(iter(table.scan().plan_files())).file, [0])
    table.delete(EqualTo("n", 1))
    table = table.refresh()
    assert table.location().startswith("s3://")
    got = _check(table, covered_id, table.current_snapshot().snapshot_id, [True, False, True], AlwaysTrue())
    assert got.live or got.not_indexed


@pytest.mark.parametrize("kind", ["bloom", None])
def test_a_lookup_without_the_exact_index_refuses_equality_deletes_clearly(catalog: Catalog, kind: str | None) -> None:
    """The exact-index path refused equality delete files with the library's error; the Bloom path (and a lookup on
    a column without any index) let pyiceberg's bare ValueError through ("PyIceberg does not yet support equality
    deletes"), for one value and for a large batch."""
    import iceberg_privacy as ip
    from iceberg_privacy._internal import compat

    table = _create(catalog, partitioned=False, merge=False)
    if kind:
        table = ip.configure_index(table, "user_id", kind)
    table.append(_batch([1, 2]))
    f = next(iter(table.scan().plan_files())).file
    table = commit_delete_file(table, f, [], equality_ids=[2], rows=pa.table({"n": pa.array([1], pa.int64())}))
    with pytest.raises(ValueError) as raw:  # pyiceberg's own refusal, as compat recognises it
        list(table.scan().plan_files())
    assert compat.is_equality_deletes_refused(raw.value)
    for values in ("u1", [f"u{i}" for i in range(300)]):
        with pytest.raises(IcebergPrivacyError, match="equality delete files.*rewrite_data_files"):
            ip.lookup(table, "user_id", values)
