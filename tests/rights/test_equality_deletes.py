"""A table with another engine's equality delete files (which pyiceberg 0.12 cannot apply) is refused by every
subject-rights verb before anything is recorded, with the call that compacts them, not a bare ValueError."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import ConfigurationError
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.journal import Journal
from tests.helpers import commit_delete_file, make_table


def test_equality_deletes_are_refused_before_anything_is_recorded(catalog: Catalog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    table = make_table(catalog, "db.t", [["ann", "bob"], ["cy"]])
    first = next(iter(table.scan().plan_files())).file
    ids = pa.table({"user_id": pa.array(["ann"])},
                   schema=pa.schema([pa.field("user_id", pa.string(), metadata={b"PARQUET:field_id": b"2"})]))
    table = commit_delete_file(table, first, [], equality_ids=[2], rows=ids)
    calls = {
        "erase": lambda: ip.erase(catalog, ["ann"], request_id="r1", purge=True),
        "access": lambda: ip.access(catalog, ["ann"], request_id="r2", out=tmp_path / "out"),
        "submit": lambda: ip.submit_request(catalog, "erase", ["ann"], ["db.t"], request_id="r3"),
        "enqueue": lambda: ip.enqueue(catalog, "erase", ["ann"], request_id="r4"),
    }
    for verb, call in calls.items():  # noqa: B007 - named for the failure message
        with pytest.raises(ConfigurationError, match=r"db.t has equality delete files.*rewrite_data_files"):  # verb
            call()
    for rid in ("r1", "r2", "r3", "r4"):
        assert Journal(catalog).find(rid) is None
    assert forget.entries(catalog, "db").num_rows == 0
    assert not (tmp_path / "out").exists()
    assert catalog.load_table("db.t").metadata.current_snapshot_id == table.metadata.current_snapshot_id


def test_equality_deletes_arriving_after_submit_block_the_request(catalog: Catalog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Submit refuses them; a table that gains them while its request waits (queued, or submitted and not yet run)
    blocks the request, journaled with the compaction to run, before anything is committed (was pyiceberg's bare
    ValueError half-way through the queue pass or run_request)."""
    from iceberg_privacy.errors import RequestBlockedError

    table = make_table(catalog, "db.t", [["ann", "bob"], ["cy"]])
    ip.enqueue(catalog, "erase", ["ann"], request_id="q1")
    ip.submit_request(catalog, "erase", ["bob"], ["db.t"], request_id="s1")
    first = next(iter(table.scan().plan_files())).file
    ids = pa.table({"user_id": pa.array(["zed"])},
                   schema=pa.schema([pa.field("user_id", pa.string(), metadata={b"PARQUET:field_id": b"2"})]))
    table = commit_delete_file(table, first, [], equality_ids=[2], rows=ids)
    head = table.metadata.current_snapshot_id

    report = ip.run_pending(catalog)
    assert report.blocked and all("equality delete files" in why for why in report.blocked.values()), report.blocked
    with pytest.raises(RequestBlockedError, match=r"db.t has equality delete files.*rewrite_data_files"):
        ip.run_request(catalog, "s1", ["bob"], purge=True)
    state = Journal(catalog).get("s1")
    assert state.blocked is not None and "equality delete files" in state.blocked["reason"]
    assert catalog.load_table("db.t").metadata.current_snapshot_id == head  # nothing committed
