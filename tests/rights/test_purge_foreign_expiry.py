"""Snapshots expired by another process between the erase and the purge.

The files the erase commits replaced are journaled with the commit (keyed hashes of their paths), so the purge finds
and deletes them even when no snapshot names them any more. Files holding a subject that the library never planned
(another tool removed them, then someone expired the history) are young orphans that the purge (rightly) does not
delete, so verification fails: the message must say what helps (an orphan cleanup or a smaller orphan_age), not
"run the request again", which cannot delete unreferenced files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, files_with, make_table, rows


def test_files_an_erasure_replaced_are_purged_after_another_process_expired_their_snapshots(tmp_path: Path) -> None:
    """Regression: erase now, purge later, a scheduled expire_snapshots in another process in between (here right
    after the erase commit landed): the expiry removed every snapshot naming the rewritten originals and the
    manifests holding their bounds (it leaves files to an orphan sweep), the purge no longer knew them, took them
    for young orphans and failed its verification until someone deleted them by hand with orphan_age=0 (dangerous
    while writers run). The erasure also reported 0 rows removed: it counted from the history the expiry had
    removed. Replayed with a second real catalog."""
    home = tmp_path / "home"
    ours, theirs = ip.connect(home=home), ip.connect(home=home)
    ours.create_namespace("db")
    table = make_table(ours, "db.t", [["u1", "u2", "u3"], ["u4", "u5"]])
    originals = files_with(table, {"u2"})

    def expire_elsewhere(_: str) -> None:  # another process's maintenance, right after the erase commit landed
        ip.append("db.t", rows(["w11"], start=100), catalog=theirs)  # a writer goes on
        ip.expire_snapshots("db.t", retain_last=1, catalog=theirs)

    with faults.injected("erasure.after_commit", expire_elsewhere):
        erased = ip.erase(ours, ["u2"], request_id="r1", home=home)
    assert erased.tables["db.t"].rows_removed == 1 and Journal(ours).get("r1").tables["db.t"].rows == 1
    report = ip.purge(ours, "r1", home=home)  # the default orphan age: nothing younger is an orphan to it
    assert report.completed and Journal(ours).get("r1").status == "completed"
    assert originals and not any(Path(p.removeprefix("file://")).exists() for p in originals)
    assert {r["user_id"] for r in all_rows(ours.load_table("db.t"))} == {"u1", "u3", "u4", "u5", "w11"}


def test_orphans_of_a_foreign_expiry_get_a_message_that_helps(catalog: Catalog) -> None:
    # A table that keeps no metadata history: once the expiry's version is out of the log, nothing names the file
    # (while an older metadata.json in the log lists the expired snapshot, the purge deletes what it reached:
    # tests/rights/test_purge_foreign_maintenance.py).
    table = make_table(catalog, "db.t", [["u1", "u2", "u3"], ["u4", "u5"]], properties={
        "write.metadata.previous-versions-max": "1", "write.metadata.delete-after-commit.enabled": "true"})
    table.delete("user_id == 'u2'")  # another tool removes the subject's rows (its file is now in no head) ...
    ip.append(table.refresh(), rows(["u6"], start=100))  # a writer goes on
    ip.expire_snapshots(table, retain_last=1)  # ... and someone's maintenance leaves that file for an orphan sweep
    for i in range(2):  # later commits roll the expired snapshots out of the one-version metadata log
        with catalog.load_table("db.t").transaction() as tx:
            tx.set_properties({"owner": f"team-{i}"})
    ip.erase(catalog, ["u2"], request_id="r1")
    with pytest.raises(VerificationFailedError) as err:
        ip.purge(catalog, "r1")
    msg = str(err.value)
    assert "not referenced by the table's metadata" in msg and "`iceberg-privacy cleanup " in msg and "orphan_age=timedelta(0)" in msg
    assert "run the request again" not in msg  # it would not delete them
    assert Journal(catalog).get("r1").status != "completed"
    report = ip.purge(catalog, "r1", orphan_age=timedelta(0))  # what the message says
    assert report.completed and Journal(catalog).get("r1").status == "completed"
