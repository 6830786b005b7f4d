"""Requests of one subject in the queue are served in the order they were submitted: an access request submitted
before an erasure of the same person exports their rows, one submitted after it exports none. Before, a pass
without ``out`` left the access requests queued and ran the erasure, so the access request submitted first later
exported 0 rows (and with ``out`` every access request was exported before any erasure, whatever the order)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, make_table


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
