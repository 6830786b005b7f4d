"""A table dropped between the erasure and the purge: the request completes only when its files are gone.

SqlCatalog's ``drop_table`` (like most catalogs' default drop) leaves the table's files in storage: the
subject's old rows are still there. The purge counted such a table as "no longer exists" and completed the
request. Requests now record each table's location, and the purge lists it.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import list_files, local_path
from tests.helpers import make_table


def test_files_a_dropped_table_left_behind_block_completion(catalog: Catalog) -> None:
    table = make_table(catalog, "db.gone", [["ann", "bob"], ["cy"]])
    folder = Path(local_path(table.location()))
    ip.erase(catalog, ["ann"], ["db.gone"], request_id="drop-1", purge=False)
    catalog.drop_table("db.gone")  # the files stay
    assert list(folder.rglob("*.parquet"))
    with pytest.raises(VerificationFailedError, match="was dropped, but .* file"):
        ip.purge(catalog, "drop-1", orphan_age=timedelta(0))
    assert Journal(catalog).get("drop-1").status != "completed"
    shutil.rmtree(folder)  # what the error says to do
    report = ip.purge(catalog, "drop-1", orphan_age=timedelta(0))
    assert report.completed and Journal(catalog).get("drop-1").status == "completed"


def test_a_table_dropped_with_its_files_completes(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    table = make_table(catalog, f"{ns}.gone", [["ann", "bob"]])
    ip.erase(catalog, ["ann"], [f"{ns}.gone"], request_id=f"{ns}-d", purge=False)
    location = table.location()
    catalog.drop_table(f"{ns}.gone")
    if list_files(table.io, location):  # a catalog that leaves the files (SqlCatalog; REST may purge them)
        with pytest.raises(VerificationFailedError, match="was dropped"):
            ip.purge(catalog, f"{ns}-d", orphan_age=timedelta(0))
        for f in list_files(table.io, location):
            table.io.delete(f.location)
    assert ip.purge(catalog, f"{ns}-d", orphan_age=timedelta(0)).completed


@pytest.mark.parametrize("point", ["erasure.after_submit", "erasure.after_forget"])
def test_a_table_dropped_while_its_erasure_runs_is_a_dropped_table(catalog: Catalog, point: str) -> None:
    """Dropped after the request was journaled (between submit and its rewrite): erase raised pyiceberg's raw
    NoSuchTableError and left the request 'received' (found by advstore2 as a catalog's 404). It is now what a
    table dropped before the request is: nothing to rewrite there, and the purge blocks completion while the
    files the drop left remain."""
    from iceberg_privacy._internal.faults import injected

    table = make_table(catalog, "db.gone", [["ann", "bob"], ["cy"]])
    folder = Path(local_path(table.location()))
    with injected(point, lambda *a: catalog.drop_table("db.gone")):
        with pytest.raises(VerificationFailedError, match="was dropped, but .* file"):
            ip.erase(catalog, ["ann"], ["db.gone"], request_id="drop-2", purge=True, orphan_age=timedelta(0))
    state = Journal(catalog).get("drop-2")
    assert state.tables["db.gone"].status != "verified" and state.status != "completed"
    shutil.rmtree(folder)
    assert ip.purge(catalog, "drop-2", orphan_age=timedelta(0)).completed


def test_a_table_created_again_at_a_dropped_ones_location_gets_advice_that_can_be_followed(catalog: Catalog) -> None:
    """A pipeline's drop + create between the erasure and the purge puts a new table at the old one's location. The
    old table's leftover sidecar (Bloom filters of the erased file) failed the verification with the advice to run
    `iceberg-privacy cleanup`, which deletes nothing at a location two tables share (it only logs a warning): the
    request stayed open with no step that helps. The error now says so and what to delete."""
    make_table(catalog, "db.t", [["ann", "bob"], ["cy"]])
    ip.erase(catalog, ["ann"], ["db.t"], request_id="again-1", purge=False)
    catalog.drop_table("db.t")  # the files stay
    make_table(catalog, "db.t", [["dee"]])  # the same name, so the same default location
    report = ip.purge(catalog, "again-1", orphan_age=timedelta(0), raise_on_failure=False)
    purged = report.tables["db.t"]
    assert not report.completed and purged.shared_location and purged.verify is not None
    with pytest.raises(VerificationFailedError, match="also holds another table's metadata"):
        ip.purge(catalog, "again-1", orphan_age=timedelta(0))
    table = catalog.load_table("db.t")
    for trace in purged.verify.traces:  # the advice: delete the files named, then run the request again
        Path(local_path(table.location()), trace.location).unlink()
    assert ip.run_request(catalog, "again-1", purge=True).purge.completed  # type: ignore[union-attr]
    assert [r["user_id"] for r in catalog.load_table("db.t").scan().to_arrow().to_pylist()] == ["dee"]
