"""Erasure under continuous ingestion: a lost commit is rebased (same rewrite, no re-read) onto appends that do
not touch the files it replaces, and rows of the subject that arrive meanwhile are caught by another pass."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from tests.helpers import all_rows, make_table, rows

erasure = __import__("iceberg_privacy.rights.erasure", fromlist=["_load"])
purge = __import__("iceberg_privacy.rights.purge", fromlist=["_scrub_head"])



def _home(catalog: Catalog) -> Path:
    return Path(catalog.properties["uri"][len("sqlite:///"):]).parent


def test_erasure_succeeds_while_a_writer_appends_every_10ms(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [[f"u{i}" for i in range(k * 30, k * 30 + 30)] + ["victim"] for k in range(12)])
    stop = threading.Event()
    appended: list[int] = []
    errors: list[BaseException] = []
    started = threading.Event()

    def writer() -> None:
        own = ip.connect(home=_home(catalog))  # its own catalog connection (another SQLite connection)
        table = own.load_table("db.t")
        b = 0
        try:
            while not stop.is_set():
                ids = [f"n{b}_{i}" for i in range(3)]
                ip.append(table, rows(ids, 100_000 + b * 10), commit_retries=1000)
                appended.extend(range(100_000 + b * 10, 100_000 + b * 10 + 3))
                b += 1
                started.set()
                time.sleep(0.01)
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)
            started.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        assert started.wait(60)
        report = ip.erase(catalog, ["victim"], request_id="busy")
        batches_during = len(appended)
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert batches_during >= 3  # the writer really committed while the erasure ran
    got = all_rows(catalog.load_table("db.t"))
    assert not [r for r in got if r["user_id"] == "victim"]
    assert report.tables["db.t"].rows_removed == 12
    assert set(appended) <= {r["row_id"] for r in got}  # every appended row is still there
    assert len(got) == 12 * 30 + len(appended)


def test_lost_commit_is_rebased_without_reading_again(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unrelated append lands just before the erase commit: the same rewrite is committed on top of it,
    no candidate file is read a second time."""
    table = make_table(catalog, "db.t", [["a1", "victim"], ["a2"], ["a3", "victim"]])
    reads: list[str] = []
    real = erasure._load

    def counting(table, task, ts, secret):  # type: ignore[no-untyped-def]
        reads.append(task.file.file_path)
        return real(table, task, ts, secret)

    monkeypatch.setattr(erasure, "_load", counting)
    fired: list[str] = []

    def hook(stage: str) -> None:
        if stage == "erasure.before_commit" and not fired:
            fired.append(stage)
            ip.append(catalog.load_table("db.t"), rows(["late"], 900))

    with faults.injected("erasure.before_commit", hook):
        report = ip.erase(catalog, ["victim"], request_id="r")
    t = report.tables["db.t"]
    assert fired and len(t.snapshot_ids) == 1 and t.rows_removed == 2
    assert t.rebased == 1 and t.commit_attempts == 2  # the same rewrite, committed on top of the append
    assert len(reads) == len(set(reads))  # rebased: nothing read twice
    snap = table.refresh().current_snapshot()
    parent = table.metadata.snapshot_by_id(snap.parent_snapshot_id)
    assert parent.summary.operation.value == "append"  # the writer's append stays in the history
    assert snap.summary["total-records"] == "4" and snap.summary["total-data-files"] == str(len(list(table.scan().plan_files())))
    assert ip.lookup(table, "user_id", "victim").num_rows == 0
    assert sorted(r["user_id"] for r in all_rows(table)) == ["a1", "a2", "a3", "late"]


def _deleted_only(manifests: list) -> set[str]:  # type: ignore[type-arg]
    return {m.manifest_path for m in manifests if not m.has_added_files() and not m.has_existing_files()}


def test_a_rebase_never_lists_again_a_manifest_the_commits_since_dropped(catalog: Catalog) -> None:
    """The previous erasure's head lists the file it replaced as DELETED entries, in a manifest whose column
    bounds hold that subject's id; its purge's scrub (an empty append) drops that manifest from the head. An erase
    commit staged before the scrub and committed after it is rebased onto the scrub: it must not list that
    manifest again (found once in a README run: two queue passes on PostgreSQL, the first pass's verification
    then found its subject named by a referenced manifest; once expired, the manifest is gone from storage and
    the table would reference a missing file)."""
    table = make_table(catalog, "db.t", [["a1", "first", "second"], ["a2"]])
    ip.erase(catalog, ["first"], request_id="r1")
    dropped = _deleted_only(table.refresh().current_snapshot().manifests(table.io))
    assert dropped  # pyiceberg's overwrite lists the replaced file in a manifest of its own
    fired: list[str] = []

    def scrub(stage: str) -> None:  # the first request's purge, between the second's staging and its commit
        if not fired:
            fired.append(stage)
            assert purge._scrub_head(catalog.load_table("db.t")) is not None

    with faults.injected("erasure.before_commit", scrub):
        report = ip.erase(catalog, ["second"], request_id="r2")
    t = report.tables["db.t"]
    assert fired and t.rows_removed == 1 and t.rebased == 1  # the same rewrite, re-parented onto the scrub
    head = table.refresh().current_snapshot()
    manifests = head.manifests(table.io)
    assert not dropped & {m.manifest_path for m in manifests}
    assert len(_deleted_only(manifests)) == 1  # the second erasure's own, which its purge scrubs in turn
    assert sorted(r["user_id"] for r in all_rows(table)) == ["a1", "a2"]
    assert ip.purge(catalog, "r1", orphan_age=timedelta(0)).completed
    assert ip.purge(catalog, "r2", orphan_age=timedelta(0)).completed


def test_a_rebase_across_a_manifest_merging_append_stages_again(catalog: Catalog) -> None:
    """An append that merges manifests (Java's and Spark's default past 100 manifests; pyiceberg's with
    commit.manifest-merge.enabled) rewrites the base's manifests into one listing their files as EXISTING, the
    file the erasure replaces among them: re-parenting the staged manifests next to it would list that file live
    again, the subject's rows back. The erasure stages again on the new head instead."""
    table = make_table(catalog, "db.t", [["a1", "victim"], ["a2"], ["a3"]])
    fired: list[str] = []

    def merging_append(stage: str) -> None:
        if not fired:
            fired.append(stage)
            other = catalog.load_table("db.t")
            with other.transaction() as tx:
                tx.set_properties({"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"})
            other = catalog.load_table("db.t")
            other.append(rows(["late"], 900).cast(other.schema().as_arrow()))
            merged = other.current_snapshot()
            assert merged.summary.operation.value == "append"
            assert any(m.has_existing_files() for m in merged.manifests(other.io))  # it did merge

    with faults.injected("erasure.before_commit", merging_append):
        report = ip.erase(catalog, ["victim"], request_id="r")
    assert fired and report.tables["db.t"].rows_removed == 1
    assert sorted(r["user_id"] for r in all_rows(table.refresh())) == ["a1", "a2", "a3", "late"]
    assert ip.lookup(table, "user_id", "victim").num_rows == 0


@pytest.mark.parametrize("point", ["erasure.staging", "erasure.before_commit"])
def test_history_purged_under_a_staging_erasure_is_a_lost_race(catalog: Catalog, point: str) -> None:
    """Another pass commits and purges between this erasure's plan and its staging (or its rebase): the
    manifest list of the head it planned on is gone. That is a lost race, re-planned on the new head, not a
    storage error (two queue passes racing over one queue used to fail this way)."""
    table = make_table(catalog, "db.t", [["a1", "victim"], ["a2"], ["a3", "victim"]])
    fired: list[str] = []

    def other_pass(stage: str) -> None:
        if stage != point or fired:
            return
        fired.append(stage)
        other = catalog.load_table("db.t")
        planned_on = other.metadata.current_snapshot_id
        old = other.metadata.snapshot_by_id(planned_on)
        ip.append(other, rows(["late"], 900))
        ip.expire_snapshots(other, snapshot_ids=[planned_on])
        other.io.delete(old.manifest_list)  # what the other pass's purge deletes
        assert not other.io.new_input(old.manifest_list).exists()

    with faults.injected(point, other_pass):
        report = ip.erase(catalog, ["victim"], request_id="r")
    assert fired
    assert report.tables["db.t"].rows_removed == 2
    assert sorted(r["user_id"] for r in all_rows(table)) == ["a1", "a2", "a3", "late"]
    assert ip.lookup(table, "user_id", "victim").num_rows == 0


def test_a_lost_erase_commit_is_not_rebased_over_another_erasures_rewrite(catalog: Catalog) -> None:
    """Regression (four processes erasing different subjects of one table at once: rows came back, some twice,
    and every request reported success). A lost erase commit was re-parented onto the new head whenever the
    files it replaces were still live there, keeping the manifests it had been staged with; when the commit in
    between was another erasure's rewrite of another file (not an append), those manifests still listed that
    file, so it came back next to its rewrite: the other request's subject resurrected, its other rows twice.
    It is staged again on the new head instead. Replayed with a second real catalog erasing right before our
    first commit attempt."""
    make_table(catalog, "db.t", [["u1", "keep1"], ["u2", "keep2"]])
    theirs = ip.connect(home=_home(catalog))
    raced: list[bool] = []

    def other_erasure(_: str) -> None:
        if not raced:
            raced.append(True)
            ip.erase(theirs, ["u2"], request_id="theirs")  # rewrites the other file and lands first

    with faults.injected("erasure.before_commit", other_erasure):
        report = ip.erase(catalog, ["u1"], request_id="ours")
    assert raced and report.tables["db.t"].rows_removed == 1
    assert sorted(r["user_id"] for r in all_rows(catalog.load_table("db.t"))) == ["keep1", "keep2"]
