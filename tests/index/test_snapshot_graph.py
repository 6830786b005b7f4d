"""The identity index on a snapshot GRAPH, not a line: rollback, forks, branches, tags, other writers.

The index's base records the snapshot it covers and readers skip the deltas of that snapshot's ancestors
(docs/exact-index.md 6), so every rule that walks parents is exercised here with a current snapshot that is an
ancestor of the covered one (rollback), unrelated to it (set-current, forks), and with branch and tag heads
the main line no longer reaches. The oracle is always a full scan of the same snapshot.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pyiceberg.expressions import EqualTo
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index import exact, maintenance
from iceberg_privacy.index.hash64 import hash64_value
from iceberg_privacy.index.registry import referenced_sidecar_locations, sidecar_refs
from tests.helpers import unique_name

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))
USERS = [f"u{i}" for i in range(6)]
_rows = iter(range(10**9))


def _batch(users: list[str]) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.string()), "n": pa.array([next(_rows) for _ in users], pa.int64())})


def _table(catalog: Any, kind: str = "bloom,exact") -> Any:
    t = catalog.create_table(unique_name("g"), SCHEMA, properties={"write.target-file-size-bytes": "600"})
    t = ip.configure_index(t, "user_id", kind)
    return ip.configure_identity(t, ["user_id"])


def occupy_current_statistics_slot(table: Any) -> Any:
    """Another engine's statistics file on the current snapshot (e.g. Spark's compute_table_stats): a compaction
    then registers its base on the newest other snapshot, here a branch or tag head."""
    from pyiceberg.table.statistics import StatisticsFile

    table = table.refresh()
    path = f"{table.location()}/metadata/{table.metadata.current_snapshot_id}-theta.stats"
    with table.io.new_output(path).create(overwrite=True) as out:
        out.write(b"PFA1 not ours")
    with table.transaction() as tx:
        tx.update_statistics().set_statistics(StatisticsFile(
            snapshot_id=table.metadata.current_snapshot_id, statistics_path=path, file_size_in_bytes=13,
            file_footer_size_in_bytes=4, blob_metadata=[])).commit()
    return table.refresh()


def _referenced_bases(table: Any, gone: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Referenced sidecars whose exact meta records a covered snapshot: bases (a delta records none)."""
    out = []
    for ref in sidecar_refs(table.metadata):
        if ref.location in gone:
            continue
        idx, _ = exact.CACHE.get(table.io, ref.location, ref.size)
        if idx is not None and idx.covered_snapshot_id is not None:
            out.append(ref.location)
    return out


def _holds_key(table: Any, location: str, value: str) -> bool:
    import numpy as np

    idx, _ = exact.CACHE.get(table.io, location)
    return idx is not None and len(idx.probe(1, np.array([hash64_value(value, StringType())], dtype=np.uint64)).files) > 0


def _check_lookups(table: Any, snapshot_id: int | None, probes: list[list[str]]) -> None:
    scan = table.scan(snapshot_id=snapshot_id).to_arrow()
    pairs = list(zip(scan.column("user_id").to_pylist(), scan.column("n").to_pylist(), strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for probe in probes:
            expected = sorted(n for u, n in pairs if u in probe)
            got = ip.lookup(table, "user_id", probe, snapshot_id=snapshot_id, selected_fields=["n"])
            plan = ip.plan_lookup(table, "user_id", probe, snapshot_id=snapshot_id)
            assert sorted(got.column("n").to_pylist()) == expected, (snapshot_id, probe, plan.explain())


# ------------------------------------------------------------------------------- superseded bases
@pytest.mark.parametrize("ref_kind", ["branch", "tag"])
def test_a_base_registered_on_a_branch_or_tag_head_is_unregistered_when_superseded(catalog, ref_kind: str) -> None:
    """A compacted sidecar goes on the newest retained snapshot: here a branch (or tag) head. The next compaction
    registers its base elsewhere; the old base must stop being referenced and be deleted, not live on with the
    ref (it held keys of files long gone, and every lookup probed it as a delta)."""
    t = _table(catalog)
    ip.append(t, _batch(["u0", "u1"]))
    t = t.refresh()
    s0 = t.metadata.current_snapshot_id
    t.manage_snapshots().create_branch(s0, "dev").commit()
    t = t.refresh()
    t.append(_batch(["u2"]), branch="dev")  # another writer's commit on the branch: the newest snapshot
    t = t.refresh()
    if ref_kind == "tag":
        t.manage_snapshots().create_tag(t.metadata.refs["dev"].snapshot_id, "audit").commit()
        t = t.refresh()
        t.manage_snapshots().remove_branch("dev").commit()
    first = maintenance.compact_sidecars(occupy_current_statistics_slot(t))
    head = "dev" if ref_kind == "branch" else "audit"
    assert first.registered_on_snapshot == t.refresh().metadata.refs[head].snapshot_id
    ip.append(t.refresh(), _batch(["u3"]))
    second = maintenance.compact_sidecars(t.refresh())
    t = t.refresh()
    assert second.registered_on_snapshot != first.registered_on_snapshot
    assert first.sidecar_path not in referenced_sidecar_locations(t.metadata)
    assert first.sidecar_path in second.deleted_sidecars and not t.io.new_input(first.sidecar_path).exists()
    assert _referenced_bases(t) == [second.sidecar_path]
    for sid in (None, t.metadata.refs[head].snapshot_id):
        _check_lookups(t, sid, [["u0"], ["u2"], ["u3"], USERS])


def test_a_base_left_registered_by_an_earlier_version_is_unregistered_by_the_next_compaction(
        catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bases an earlier version left on a branch head (the property moved on, the statistics entry stayed) are
    recognised by their covered snapshot and dropped too."""
    t = _table(catalog, "exact")
    ip.append(t, _batch(["u0"]))
    t = t.refresh()
    t.manage_snapshots().create_branch(t.metadata.current_snapshot_id, "dev").commit()
    t.refresh().append(_batch(["u1"]), branch="dev")
    first = maintenance.compact_sidecars(occupy_current_statistics_slot(t))
    ip.append(t.refresh(), _batch(["u2"]))
    with monkeypatch.context() as m:  # the earlier version: only the property was replaced
        m.setattr(maintenance, "unregister_former_bases", lambda *a, **k: None)
        second = maintenance.compact_sidecars(t.refresh())
    t = t.refresh()
    assert sorted(_referenced_bases(t)) == sorted([first.sidecar_path, second.sidecar_path])
    ip.append(t, _batch(["u3"]))
    third = maintenance.compact_sidecars(t.refresh())
    t = t.refresh()
    assert _referenced_bases(t) == [third.sidecar_path]
    assert not t.io.new_input(first.sidecar_path).exists() and not t.io.new_input(second.sidecar_path).exists()
    _check_lookups(t, None, [["u0"], ["u1"], ["u3"]])


@pytest.mark.parametrize(("ref_kind", "index_kind"), [("branch", "exact"), ("tag", "bloom")])
def test_purge_completes_when_the_old_base_sat_on_a_branch_or_tag_head(catalog, _secret, ref_kind: str,
                                                                         index_kind: str) -> None:
    """The purge's verification reads every index file under the table: a superseded base kept alive by the
    statistics entry of a branch or tag head (that never held the subject) still held the subject's key, so the
    purge failed on every run, and running the request again could not help."""
    t = _table(catalog, index_kind)
    name = t.name()
    ip.append(t, _batch(["a1", "a2"]))
    t = t.refresh()
    t.manage_snapshots().create_branch(t.metadata.current_snapshot_id, "dev").commit()
    ip.append(t.refresh(), _batch(["victim", "a3"]))
    t.refresh().append(_batch(["b1"]), branch="dev")
    t = t.refresh()
    if ref_kind == "tag":
        t.manage_snapshots().create_tag(t.metadata.refs["dev"].snapshot_id, "audit").commit()
        t.refresh().manage_snapshots().remove_branch("dev").commit()
    base = maintenance.compact_sidecars(occupy_current_statistics_slot(t))
    assert base.registered_on_snapshot != t.refresh().metadata.current_snapshot_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ip.erase(catalog, ["victim"], tables=[".".join(name)], request_id=f"graph-{ref_kind}", purge=True)
    assert report.purge is not None and report.purge.completed, str(report)
    t = t.refresh()
    assert not t.io.new_input(base.sidecar_path).exists()
    for loc in referenced_sidecar_locations(t.metadata):
        assert not _holds_key(t, loc, "victim"), loc
    _check_lookups(t, None, [["victim"], ["a1", "a3", "b1"]])


def test_the_base_goes_on_the_current_snapshot_not_on_a_newer_one_no_ref_keeps(catalog) -> None:
    """After a rollback the newest snapshot is one no ref keeps, the first any expiry removes; Java's expiry also
    deletes its statistics files. A base registered there was deleted with it (the property still naming it), and
    every lookup scanned the whole table, with warnings, until the next compaction. It goes on the current
    snapshot first."""
    t = _table(catalog, "exact")
    for users in (["u0", "u1"], ["u2"], ["u3"]):
        ip.append(t, _batch(users))
    t = t.refresh()
    first = t.snapshots()[0].snapshot_id
    t.manage_snapshots().rollback_to_snapshot(first).commit()
    report = maintenance.compact_sidecars(t.refresh())
    t = t.refresh()
    assert report.registered_on_snapshot == t.metadata.current_snapshot_id == first
    dangling = [s.snapshot_id for s in t.metadata.snapshots if s.snapshot_id != first]
    stats = [x.statistics_path for x in t.metadata.statistics if x.snapshot_id in dangling]
    t.maintenance.expire_snapshots().by_ids(dangling).commit()
    for path in stats:  # as Java's expiry: the expired snapshots' statistics files go with them
        t.io.delete(path)
    t = t.refresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no index file is missing
        plan = ip.plan_lookup(t, "user_id", "u1")
    assert plan.exact_index_used and plan.files_after_exact_index == 1 and plan.files_not_in_index == 0, plan.explain()
    _check_lookups(t, None, [["u0"], ["u1"], ["u2"]])


@pytest.fixture
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, "snapshot-graph-test-secret-0123456789")


# ------------------------------------------------------------------------------- the graph property
GRAPH_OPS = ["append", "foreign-append", "foreign-delete", "rollback", "set-current", "branch", "branch-append",
             "tag", "compact", "expire", "drop-ref", "foreign-expire"]


@settings(max_examples=int(os.environ.get("IP_PROPERTY_EXAMPLES", "8")))
@given(ops=st.lists(st.sampled_from(GRAPH_OPS), min_size=2, max_size=7), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["exact", "bloom,exact"]))
def test_lookups_equal_full_scans_on_every_ref_of_a_snapshot_graph(shared_catalog, ops, seed, kind) -> None:
    """After any sequence of graph operations, lookups (single, multi-value and a batch above the batch
    threshold) at the current snapshot and at every branch and tag head return exactly a full scan's rows;
    every referenced index file exists, and at most one base is referenced."""
    rng = random.Random(seed)
    t = _table(shared_catalog, kind)
    ip.append(t, _batch(["u0", "u1", "u2"]))
    ip.append(t.refresh(), _batch(["u3", "u0"]))
    refs = 0
    foreign_deleted: set[str] = set()
    batch_probe = USERS + [f"absent-{i}" for i in range(250)]  # above planner.BATCH_THRESHOLD: the batch path
    for op in [*ops, "compact"]:  # ending with a compaction: the graph's bases are superseded at least once
        event(op)
        t = t.refresh()
        md = t.metadata
        snaps = [s.snapshot_id for s in md.snapshots]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if op == "append":
                ip.append(t, _batch(rng.sample(USERS, 2)))
            elif op == "foreign-append":
                t.append(_batch(rng.sample(USERS, 2)))
            elif op == "foreign-delete" and md.current_snapshot_id is not None:
                t.delete(EqualTo("user_id", rng.choice(USERS)))
            elif op == "rollback":
                ancestors = []
                sid = md.current_snapshot_id
                while sid is not None and md.snapshot_by_id(sid) is not None:
                    ancestors.append(sid)
                    sid = md.snapshot_by_id(sid).parent_snapshot_id  # type: ignore[union-attr]
                if len(ancestors) > 1:
                    t.manage_snapshots().rollback_to_snapshot(rng.choice(ancestors[1:])).commit()
            elif op == "set-current":
                t.manage_snapshots().set_current_snapshot(rng.choice(snaps)).commit()
            elif op == "branch":
                refs += 1
                t.manage_snapshots().create_branch(rng.choice(snaps), f"b{refs}").commit()
            elif op == "branch-append":
                branches = [n for n, r in md.refs.items() if n != "main" and r.snapshot_ref_type.value == "branch"]
                if branches:
                    t.append(_batch(rng.sample(USERS, 2)), branch=rng.choice(branches))
            elif op == "tag":
                refs += 1
                t.manage_snapshots().create_tag(rng.choice(snaps), f"t{refs}").commit()
            elif op == "compact":
                maintenance.compact_sidecars(t)
            elif op == "expire":
                maintenance.expire_snapshots(t, retain_last=1)
            elif op == "foreign-expire":  # another tool's expiry: no compaction; its statistics files deleted (Java)
                heads = {md.current_snapshot_id} | {r.snapshot_id for r in md.refs.values()}
                victims = [i for i in snaps if i not in heads]
                if victims:
                    victim = rng.choice(victims)
                    stats = [x.statistics_path for x in md.statistics if x.snapshot_id == victim]
                    t.maintenance.expire_snapshots().by_id(victim).commit()
                    still = {x.statistics_path for x in t.refresh().metadata.statistics}  # Java keeps only these
                    for path in stats:
                        if path not in still:
                            t.io.delete(path)
                            foreign_deleted.add(path)  # maybe the base the property names: lookups then scan
            elif op == "drop-ref":
                others = [n for n in md.refs if n != "main"]
                if others:
                    n = rng.choice(others)
                    ms = t.manage_snapshots()
                    (ms.remove_branch(n) if md.refs[n].snapshot_ref_type.value == "branch" else ms.remove_tag(n)).commit()
        t = t.refresh()
        for ref in sidecar_refs(t.metadata):  # our maintenance never deletes what metadata references
            assert ref.location in foreign_deleted or t.io.new_input(ref.location).exists(), (op, ref)
        assert len(_referenced_bases(t, foreign_deleted)) <= 1, (op, _referenced_bases(t, foreign_deleted))
        heads = {t.metadata.current_snapshot_id} | {r.snapshot_id for r in t.metadata.refs.values()}
        for sid in sorted(h for h in heads if h is not None):
            _check_lookups(t, sid, [["u0"], [rng.choice(USERS)], USERS[:3], batch_probe])
