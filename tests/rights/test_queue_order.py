"""Requests of one subject in the queue are served in the order they were submitted: an access request submitted
before an erasure of the same person exports their rows, one submitted after it exports none. Before, a pass
without ``out`` left the access requests queued and ran the erasure, so the access request submitted first later
exported 0 rows (and with ``out`` every access request was exported before any erasure, whatever the order)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, make_table, unique_name


def _exported(out: Path, rid: str) -> list[str]:
    return sorted(pq.read_table(out / rid / "db.t.parquet").column("user_id").to_pylist())


@pytest.mark.parametrize("passes", ["one pass with out", "first pass without out"])
@pytest.mark.parametrize("submit", ["enqueue", "enqueue_many"])
def test_access_before_an_erasure_exports_the_rows_and_access_after_it_none(
        catalog: Catalog, tmp_path: Path, passes: str, submit: str) -> None:
    table = make_table(catalog, "db.t", [["bob", "ann"], ["bob", "zed"]])
    order = [("access", "before"), ("erase", "er"), ("access", "after"), ("access", "other")]
    subjects = {"before": ["bob"], "er": ["bob"], "after": ["bob"], "other": ["ann"]}
    if submit == "enqueue":
        for kind, rid in order:
            ip.enqueue(catalog, kind, subjects[rid], request_id=rid)
    else:  # one call: the same submission time for all but for their order in the list
        ip.enqueue_many(catalog, [ip.QueuedRequest(kind, subjects[rid], request_id=rid) for kind, rid in order])
    out = tmp_path / "out"
    if passes == "first pass without out":
        first = ip.run_pending(catalog)
        assert "er" in first.skipped and "before" in first.skipped["er"]
        assert sorted(r["user_id"] for r in all_rows(catalog.load_table("db.t"))).count("bob") == 2  # not erased yet
    ip.run_pending(catalog, out=out)
    assert _exported(out, "before") == ["bob", "bob"]
    assert _exported(out, "after") == []
    assert _exported(out, "other") == ["ann"]
    assert sorted(r["user_id"] for r in all_rows(catalog.load_table(table.name()))) == ["ann", "zed"]
    assert all(Journal(catalog).get(rid).status == "completed" for _, rid in order)


def test_an_erasure_of_another_subject_is_not_held_back(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["bob", "ann"]])
    ip.enqueue(catalog, "access", ["ann"], request_id="acc")
    ip.enqueue(catalog, "erase", ["bob"], request_id="er")
    report = ip.run_pending(catalog)
    assert report.completed == ["er"]
    assert "acc" in report.skipped


@settings(max_examples=4)
@given(requests=st.lists(st.tuples(st.sampled_from(["access", "erase"]), st.sampled_from(["s1", "s2"])),
                         min_size=2, max_size=5),
       passes=st.lists(st.booleans(), max_size=2))
def test_property_each_access_sees_exactly_the_erasures_submitted_before_it(
        shared_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory, requests: list[tuple[str, str]],
        passes: list[bool]) -> None:
    name = unique_name("qo")
    rows = {"s1": 2, "s2": 1}
    make_table(shared_catalog, name, [["s1", "keep"], ["s1", "s2"]])
    ids = [f"{name}-{i}" for i in range(len(requests))]
    ip.enqueue_many(shared_catalog, [ip.QueuedRequest(kind, [subject], [name], rid)
                                     for (kind, subject), rid in zip(requests, ids, strict=True)])
    out = tmp_path_factory.mktemp("out")
    for with_out in [*passes, True, True]:  # a last pass may wait for an erasure the one before it erased
        ip.run_pending(shared_catalog, out=out if with_out else None, upkeep=False)
    for i, ((kind, subject), rid) in enumerate(zip(requests, ids, strict=True)):
        assert Journal(shared_catalog).get(rid).status == "completed", rid
        if kind == "access":
            erased_before = any(k == "erase" and s == subject for k, s in requests[:i])
            table = pq.read_table(out / rid / f"{name}.parquet")
            assert table.num_rows == (0 if erased_before else rows[subject]), (requests, i)
