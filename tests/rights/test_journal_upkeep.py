"""History upkeep of the request journal and the queue: their own snapshots and small files stay bounded under a
sustained request rate, every event and every pending request stays, and upkeep racing submitters and a pass
(killed at any of its steps, in other processes) loses no request and runs none twice."""

from __future__ import annotations

import os
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.index.orphans import referenced_files
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY
from iceberg_privacy.rights import queue as q
from iceberg_privacy.rights.journal import RESUMED, Journal, fold
from iceberg_privacy.rights.keyed import SECRET_ENV
from iceberg_privacy.storage import canonical, list_files, write_bytes
from tests.helpers import SCHEMA, SECRET, Forks, all_rows, make_table, rows


def _every(catalog: Catalog, n: int) -> None:
    for table in (Journal(catalog).load(), q.Queue(catalog).load()):
        assert table is not None
        table.transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: str(n)}).commit_transaction()


def _data_files_stored(table: Table) -> set[str]:
    return {canonical(f.location) for f in list_files(table.io, table.location()) if f.location.endswith(".parquet")}


def _live(table: Table) -> set[str]:
    return {canonical(t.file.file_path) for t in table.refresh().scan().plan_files()}


def test_one_at_a_time_submits_keep_history_bounded_and_every_request(catalog: Catalog) -> None:
    users = [f"u{i}" for i in range(8)]
    make_table(catalog, "db.t", [users[:4] + ["keep"], users[4:] + ["keep"]])
    ip.enqueue(catalog, "erase", [users[0]], request_id="r0")
    _every(catalog, 3)
    journal, queue = Journal(catalog), q.Queue(catalog)
    for i in range(1, 8):  # an unattended front end: one request per call
        ip.enqueue(catalog, "erase", [users[i]], request_id=f"r{i}")
        for table in (journal.load(), queue.load()):
            assert table is not None and len(table.metadata.snapshots) < 3  # upkeep ran at the 3rd commit
            assert len(_live(table)) < 3
    assert {r.request_id for r in journal.requests()} == {f"r{i}" for i in range(8)}
    assert {e.request_id for e in queue.entries()} == {f"r{i}" for i in range(8)}
    before = {rid: s.to_json() for rid, s in fold(journal.rows()).items()}
    rep = journal.maintain()
    assert rep is not None and rep.expired_snapshots >= 1 and not rep.delete_failures
    assert {rid: s.to_json() for rid, s in fold(journal.rows()).items()} == before  # the upkeep changes no state
    jt = journal.load()
    assert jt is not None and _data_files_stored(jt) == _live(jt)  # merged-away files are deleted

    report = ip.run_pending(catalog)
    assert sorted(report.completed) == sorted(f"r{i}" for i in range(8)) and not report.blocked
    assert [h.table for h in report.upkeep] == ["privacy_requests.requests", "privacy_requests.request_queue"]
    assert {r["user_id"] for r in all_rows(catalog.load_table("db.t"))} == {"keep"}
    qt = queue.load()
    assert qt is not None and queue.entries() == [] and _data_files_stored(qt) == set()  # ciphertext gone
    assert all(journal.get(f"r{i}").status == "completed" for i in range(8))
    assert "upkeep privacy_requests.requests" in str(report)


def test_upkeep_sweeps_old_orphans_and_keeps_young_ones(catalog: Catalog) -> None:
    """A killed submitter's uncommitted queue file (ciphertext) is deleted once older than the orphan age; a
    younger one may be another process's commit in flight and is kept."""
    make_table(catalog, "db.t", [["u1", "u2"]])
    ip.enqueue(catalog, "erase", ["u1"], request_id="r1")
    queue = q.Queue(catalog)
    table = queue.load()
    assert table is not None
    old, young = (f"{table.location()}/data/00000-0-{n}.parquet" for n in ("killed-old", "killed-young"))
    for loc in (old, young):
        write_bytes(table.io, loc, b"PAR1 not really")
    past = time.time() - 7200
    os.utime(old.removeprefix("file://"), (past, past))
    rep = queue.maintain()
    assert rep is not None and rep.orphans_deleted == 1
    stored = {canonical(f.location) for f in list_files(table.io, table.location())}
    assert canonical(old) not in stored and canonical(young) in stored
    assert [e.request_id for e in queue.entries()] == ["r1"]  # the pending request's ciphertext stays


def test_an_automatic_upkeep_stops_once_the_table_is_no_longer_due(catalog: Catalog) -> None:
    """The trigger after a commit (``only_if_due``) does nothing on a table that is not due, and skips the orphan
    sweep (a listing of the whole table location) when another upkeep expired the history meanwhile: that one
    sweeps. An explicit upkeep always runs every step."""
    make_table(catalog, "db.t", [["u1", "u2"]])
    ip.enqueue(catalog, "erase", ["u1"], request_id="r0")
    journal = Journal(catalog)
    _every(catalog, 100)
    for i in range(1, 4):
        ip.enqueue(catalog, "erase", ["u2"], request_id=f"r{i}")
    table = journal.load()
    assert table is not None and len(table.metadata.snapshots) == 4
    orphan, later = (f"{table.location()}/data/00000-0-killed-{n}.parquet" for n in ("first", "later"))

    def leave_orphan(location: str) -> None:  # what a killed writer left, older than the orphan age
        write_bytes(table.io, location, b"PAR1 not really")
        past = time.time() - 7200
        os.utime(location.removeprefix("file://"), (past, past))

    def stored(location: str = orphan) -> bool:
        return canonical(location) in {canonical(f.location) for f in list_files(table.io, table.location())}

    leave_orphan(orphan)

    rep = journal.maintain(quiet=True, only_if_due=True)  # 4 snapshots, every 100: not due
    assert rep is not None and (rep.compacted_files, rep.expired_snapshots, rep.orphans_deleted) == (0, 0, 0)
    after = journal.load()
    assert after is not None and after.metadata_location == table.metadata_location and stored()  # no commit

    _every(catalog, 3)
    other: list[Any] = []

    def another_upkeep_finishes_first(*_: object) -> None:
        if not other:
            other.append(None)
            other[0] = journal.maintain()  # a concurrent writer's upkeep, all steps, while ours is mid-way
            leave_orphan(later)  # ours sweeping again would find this one: it does not sweep

    with faults.injected("history.after_compact", another_upkeep_finishes_first):
        rep = journal.maintain(quiet=True, only_if_due=True)
    assert other[0] is not None and other[0].expired_snapshots >= 1 and other[0].orphans_deleted == 1
    assert rep is not None and rep.expired_snapshots == 0 and rep.orphans_deleted == 0 and not stored()
    assert stored(later)  # left for the next upkeep that is due
    assert journal.maintain().orphans_deleted == 1 and not stored(later)  # an explicit upkeep sweeps
    assert {r.request_id for r in journal.requests()} == {f"r{i}" for i in range(4)}


@settings(max_examples=4, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 5), st.just(-1)), min_size=2, max_size=7))
def test_property_upkeep_never_changes_the_events(shared_catalog: Catalog, ops: list[int]) -> None:
    """Any interleaving of appends (ids may repeat: a step recorded twice) and upkeeps: the journal holds exactly
    the events appended, folded to the same states."""
    journal = Journal(shared_catalog, namespace=f"up{time.time_ns()}")
    appended: dict[str, dict[str, Any]] = {}
    for op in ops:
        if op < 0:
            journal.maintain()
            continue
        ev = journal.event(f"x{op}", RESUMED, at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=op))
        ev["event_id"] = f"e{op}"  # deterministic: the same step again
        appended[ev["event_id"]] = ev
        journal.append([ev])
    journal.maintain()
    events = journal.rows()
    assert {r["event_id"] for r in events} == set(appended)
    assert {r["event_id"]: (r["request_id"], r["at"]) for r in events} == {
        k: (v["request_id"], v["at"]) for k, v in appended.items()}
    table = journal.load()
    if appended:
        assert table is not None and len(table.metadata.snapshots) == 1 and len(_live(table)) == 1
    else:
        assert table is None  # nothing appended: the upkeep creates nothing


def _script(home: Path, body: str) -> str:
    return textwrap.dedent(f"""
        import iceberg_privacy as ip
        catalog = ip.connect(home={str(home)!r})
    """) + textwrap.dedent(body)


@pytest.mark.slow
def test_upkeep_killed_anywhere_racing_submitters_and_a_pass_loses_no_request(tmp_path: Path) -> None:
    """Two submitter processes (each triggering upkeep every 3 commits) and a pass process, while upkeeps crash at
    each of their steps, all at once on one SQLite catalog: every request completes exactly once."""
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    users = [f"u{i}" for i in range(8)]
    make_table(catalog, "db.t", [users[k * 4:(k + 1) * 4] + ["keep"] for k in range(2)])
    ip.enqueue(catalog, "erase", ["nobody"], request_id="seed")
    _every(catalog, 3)
    crashed: set[str] = set()
    with Forks({SECRET_ENV: SECRET}) as forks:  # three processes, one import of the library
        procs = [forks.start(_script(home, f"""
            for i in range({k * 4}, {k * 4 + 4}):
                ip.enqueue(catalog, "erase", [f"u{{i}}"], request_id=f"s{{i}}")
        """)) for k in range(2)]
        procs.append(forks.start(_script(home, """
            import time
            for _ in range(2):
                ip.run_pending(catalog)
                time.sleep(0.1)
        """)))
        # Meanwhile, upkeeps in this process crash at each of their steps (the hook raises where a kill would stop
        # them: after the merge file is written, after the merge commit, after the expiry), again and again.
        while any(p.poll() is None for p in procs):
            for stage in ("history.after_write", "history.after_compact", "history.after_expire"):
                with faults.crash_at(stage):
                    for obj in (Journal(catalog), q.Queue(catalog)):
                        try:
                            obj.maintain()
                        except faults.InjectedCrash:
                            crashed.add(stage)
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
    assert crashed, "no upkeep was interrupted"
    for _ in range(2):
        ip.run_pending(catalog)
    journal = Journal(catalog)
    events = journal.rows()
    states = fold(events)
    claims = q._claims(events)
    for i in range(8):
        rid = f"s{i}"
        assert states[rid].status == "completed", rid  # no request lost
        assert sum(1 for r in events if r["request_id"] == rid and r["event"] == "completed") == 1
        assert claims[(rid, "db.t")] in states and rid in states[claims[(rid, "db.t")]].detail["queue"]["members"]
        assert sum(rid in s.detail["queue"]["members"] for s in states.values() if q.is_batch(s)) == 1  # run once
    batches = [s for s in states.values() if q.is_batch(s)]
    assert sum(b.rows for b in batches) == 8  # every victim row counted once, in one batch
    assert {r["user_id"] for r in all_rows(catalog.load_table("db.t"))} == {"keep"}
    queue = q.Queue(catalog)
    assert queue.entries() == []
    rep = queue.maintain(orphan_age=timedelta(0))  # whatever a killed upkeep wrote and never committed goes now
    assert rep is not None and not rep.delete_failures
    qt = queue.load()
    assert qt is not None and _data_files_stored(qt) == set()
    assert journal.maintain(orphan_age=timedelta(0)) is not None
    jt = journal.load()
    assert jt is not None
    stored = {canonical(f.location) for f in list_files(jt.io, jt.location())}
    assert stored <= referenced_files(jt)  # nothing a killed upkeep wrote is left behind


def test_upkeep_on_object_storage_with_the_rest_catalog(rest_catalog: Catalog, lake_ns: str) -> None:
    """SeaweedFS + the REST catalog, s3:// warehouse: the upkeep merges, expires and deletes through the FileIO
    there too, and every request stays readable and pending."""
    catalog = rest_catalog
    users = [f"{lake_ns}-u{i}" for i in range(3)]
    table = catalog.create_table(f"{lake_ns}.t", SCHEMA)
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    ip.append(table, rows(users + ["keep"]))
    ids = [f"{lake_ns}-r{i}" for i in range(3)]
    for rid, who in zip(ids, users, strict=True):  # one call each, like a front end
        ip.enqueue(catalog, "erase", [who], [f"{lake_ns}.t"], request_id=rid)
    journal, queue = Journal(catalog), q.Queue(catalog)
    for obj in (journal, queue):
        rep = obj.maintain()
        assert rep is not None and not rep.delete_failures, rep
        t = obj.load()
        assert t is not None and t.location().startswith("s3://")
        assert len(t.metadata.snapshots) == 1 and len(_live(t)) == 1  # history expired, small files merged
        assert _data_files_stored(t) == _live(t)  # merged-away files deleted from the bucket
    assert all(journal.get(rid).status == "received" for rid in ids)
    assert set(ids) <= {e.request_id for e in queue.entries(ids)}


def test_merged_journal_file_has_row_groups_a_single_request_read_can_skip(catalog: Catalog) -> None:
    """The upkeep's merged file is sorted by request id in row groups of 16,384 rows, so reading one request's
    events decodes one row group, not the whole history (one row group of 400,000 events made every submit's
    idempotency check read them all)."""
    import hashlib

    import pyarrow.parquet as pq

    journal = Journal(catalog)
    ids = [f"req-{hashlib.sha1(str(i).encode()).hexdigest()[:16]}" for i in range(40_000)]
    at = datetime.now(UTC)
    journal.append([Journal.event(rid, "created", kind="erase", key_id="k", subjects=[b"x" * 32], at=at,
                                  detail={"tables": ["db.t"], "subject_count": 1, "deadline": at.isoformat()})
                    for rid in ids[:20_000]])
    journal.append([Journal.event(rid, "created", kind="erase", key_id="k", subjects=[b"y" * 32], at=at,
                                  detail={"tables": ["db.t"], "subject_count": 1, "deadline": at.isoformat()})
                    for rid in ids[20_000:]])
    journal.maintain()
    table = journal.load()
    assert table is not None
    (task,) = list(table.scan().plan_files())
    with table.io.new_input(task.file.file_path).open() as f:
        meta = pq.ParquetFile(f).metadata
    assert meta.num_rows == 40_000 and meta.num_row_groups == 3
    ranges = [(meta.row_group(g).column(1).statistics.min, meta.row_group(g).column(1).statistics.max)
              for g in range(meta.num_row_groups)]
    assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))  # sorted: disjoint ranges
    assert journal.find(ids[12_345]) is not None and journal.find(ids[31_000]) is not None
