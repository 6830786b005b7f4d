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
