"""A queued erasure whose rows come back between its erase and its purge (a pass with ``purge=False``, then a writer
outside the library appends the subject's row again, or someone rolls the table back to before the erase).

Before, the batch was journaled ``erased``, so every later pass skipped the erasure, ran only the purge, found the
rows live and blocked the batch with the same message again, pass after pass, until a person ran
``requests run <batch id>``; the queue holds the subjects' values, so the pass now erases them itself (as that
command would) and the request completes. A completed request is not looked at again (docs/subject-rights.md)."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights import queue as q
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.purge import verify_table
from tests.helpers import SECRET, all_rows, make_table, rows


@pytest.mark.parametrize("how", ["foreign-append", "rollback"])
def test_rows_back_before_the_purge_are_erased_by_the_next_pass(catalog: Catalog, how: str) -> None:
    make_table(catalog, "db.t", [["ann", "bob"], ["carl"]])
    before = catalog.load_table("db.t").current_snapshot()
    assert before is not None
    ip.enqueue(catalog, "erase", ["ann"], ["db.t"], request_id="r1")
    ip.enqueue(catalog, "erase", ["carl"], ["db.t"], request_id="r2")
    first = ip.run_pending(catalog, purge=False)  # erased, not purged: the requests stay open
    assert first.completed == [] and not first.blocked
    assert sorted(r["user_id"] for r in all_rows(catalog.load_table("db.t"))) == ["bob"]
    if how == "foreign-append":  # pyiceberg's own append: no forget list
        catalog.load_table("db.t").append(rows(["ann"], start=10))
    else:
        catalog.load_table("db.t").manage_snapshots().rollback_to_snapshot(before.snapshot_id).commit()
    assert "ann" in {r["user_id"] for r in all_rows(catalog.load_table("db.t"))}

    report = ip.run_pending(catalog)
    assert not report.blocked, report
    assert sorted(report.completed) == ["r1", "r2"]
    assert sorted(r["user_id"] for r in all_rows(catalog.load_table("db.t"))) == ["bob"]
    journal = Journal(catalog)
    batches = [r for r in journal.requests() if q.is_batch(r)]
    assert len(batches) == 1 and batches[0].status == "completed"
    assert verify_table(catalog.load_table("db.t"), set(batches[0].subjects), SECRET.encode()).rows_found == 0
    assert q.Queue(catalog).entries() == []
    assert ip.run_pending(catalog).batches == {}  # nothing left to do
