"""A table renamed between a request's submission and its run is not a dropped table.

Before, the run found no table under the recorded name, treated it as dropped, and completed the request
(the queue also shredded the subjects' ciphertext) while every row of the subject was still in the
renamed table. Requests now record each table's uuid; a run that finds the uuid under another name blocks
the request with the exact fix, and runs it to completion once the name is back. A dropped table still
completes (its rows are gone with it)."""

from __future__ import annotations

import shutil

from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import local_path
from tests.helpers import all_rows, make_table


def _users(catalog: Catalog, name: str) -> list[str]:
    return sorted(r["user_id"] for r in all_rows(catalog.load_table(name)))


def _renamed_between_submit_and_run(catalog: Catalog, ns: str) -> None:
    make_table(catalog, f"{ns}.t", [["ann", "bob"]])
    ip.submit_request(catalog, "erase", ["ann"], [f"{ns}.t"], request_id=f"{ns}-r")
    catalog.rename_table(f"{ns}.t", f"{ns}.t2")
    try:
        ip.run_request(catalog, f"{ns}-r", purge=True)
        raise AssertionError("the run must not complete")
    except ip.RequestBlockedError as exc:
        assert f"renamed to {ns}.t2" in str(exc) and "rename_table" in exc.next_step
    state = Journal(catalog).get(f"{ns}-r")
    assert state.status == "blocked" and _users(catalog, f"{ns}.t2") == ["ann", "bob"]
    catalog.rename_table(f"{ns}.t2", f"{ns}.t")
    ip.run_request(catalog, f"{ns}-r", purge=True)
    assert Journal(catalog).get(f"{ns}-r").status == "completed" and _users(catalog, f"{ns}.t") == ["bob"]


def test_renamed_table_blocks_the_request_until_renamed_back(catalog: Catalog) -> None:
    _renamed_between_submit_and_run(catalog, "db")


def test_renamed_table_blocks_a_queued_request_and_keeps_its_values(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["ann", "bob"]])
    ip.enqueue(catalog, "erase", ["ann"], ["db.t"], request_id="q")
    catalog.rename_table("db.t", "db.t2")
    report = ip.run_pending(catalog)
    assert report.blocked and not report.completed and Journal(catalog).get("q").completed is None
    catalog.rename_table("db.t2", "db.t")
    report = ip.run_pending(catalog)  # the ciphertext was kept: the values are still there to erase with
    assert report.completed == ["q"] and _users(catalog, "db.t") == ["bob"]


def test_dropped_table_still_completes(catalog: Catalog) -> None:
    gone = make_table(catalog, "db.t", [["ann", "bob"]])
    make_table(catalog, "db.u", [["ann", "cat"]])
    ip.submit_request(catalog, "erase", ["ann"], ["db.t", "db.u"], request_id="r")
    # dropped with all its files (pyiceberg's purge_table leaves the sidecars; a drop that leaves files behind:
    # test_purge_dropped_table.py)
    catalog.drop_table("db.t")
    shutil.rmtree(local_path(gone.location()))
    ip.run_request(catalog, "r", purge=True)
    assert Journal(catalog).get("r").status == "completed" and _users(catalog, "db.u") == ["cat"]


def test_renamed_table_blocks_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _renamed_between_submit_and_run(catalog, ns)
