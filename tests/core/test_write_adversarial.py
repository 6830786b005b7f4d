"""Hostile uses of the write path: stale table objects, odd data shapes, input the writer cannot store.

Each test here was a failure found by trying the write verbs as an adversarial user would: the
forget list skipped, a bare pyarrow/pyiceberg exception instead of a library error that says what to
do, or a crash on data pyiceberg itself accepts.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

import iceberg_privacy as ip
from tests.helpers import SECRET

SCHEMA = Schema(
    NestedField(1, "user_id", StringType(), required=False),
    NestedField(2, "n", LongType(), required=False),
    NestedField(3, "score", DoubleType(), required=False),
)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)


def _rows(users: list[str | None], start: int = 0) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.string()),
                     "n": pa.array(range(start, start + len(users)), pa.int64()),
                     "score": pa.array([float(i) for i in range(len(users))], pa.float64())})


def _users(table: Any) -> list[str | None]:
    return sorted(table.refresh().scan().to_arrow()["user_id"].to_pylist(), key=str)


def _stale_table_keeps_the_forget_list(catalog: Catalog, name: str) -> None:
    table = catalog.create_table(name, SCHEMA)
    ip.append(table, _rows(["bob"]))
    stale = catalog.load_table(name)  # a pipeline's handle, loaded before the privacy team's changes
    ip.configure_identity(catalog.load_table(name), ["user_id"])
    ip.erase(catalog, ["ann"], [name])  # ann has no rows yet: nothing is committed to the table
    report = ip.append(stale, _rows(["ann", "cy"], 1))
    assert report.dropped_rows == 1 and report.rows == 1
    assert _users(stale) == ["bob", "cy"]


def test_a_table_loaded_before_configure_identity_still_drops_forgotten_subjects(catalog: Catalog) -> None:
    """Before: the write read the identity columns from the caller's stale object (none), so the forget
    list never applied and an erased subject was written again."""
    _stale_table_keeps_the_forget_list(catalog, "db.stale")


def test_a_stale_table_still_drops_forgotten_subjects_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    _stale_table_keeps_the_forget_list(catalog, f"{ns}.stale")


def test_data_without_an_optional_indexed_column_is_written_and_found_by_scans(catalog: Catalog) -> None:
    """pyiceberg accepts data that leaves out an optional column; the writer crashed with a bare
    ``KeyError`` building the left-out column's filter. Its files now hold an empty filter: lookups of
    that column skip them (they hold no ids of it), the other rows are still found."""
    table = catalog.create_table("db.partial", SCHEMA)
    table = ip.configure_index(ip.configure_bloom(table, ["user_id"]), "user_id", "bloom,exact")
    ip.configure_identity(table, ["user_id"])
    ip.append(table, _rows(["ann", "bob"]))
    report = ip.append(table, pa.table({"n": pa.array([7, 8], pa.int64())}))  # no user_id at all
    assert report.rows == 2 and report.sidecar_path is not None
    ip.append(table, pa.table({"user_id": pa.array(["cy"]), "n": pa.array([9], pa.int64())}))  # no score
    table = table.refresh()
    assert table.scan().to_arrow().num_rows == 5
    for user in ["ann", "bob", "cy", "dee"]:
        plan = ip.plan_lookup(table, "user_id", user)
        assert plan.files_without_sidecar == 0
        assert ip.lookup(table, "user_id", user).num_rows == (0 if user == "dee" else 1)
