"""Lineage under concurrency: a derive and an erasure of its source, interleaved at the worst point."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage import derive as derive_module
from iceberg_privacy.rights.keyed import SECRET_ENV

SUBJECT = 7


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")


@pytest.fixture
def events(catalog: Catalog) -> Catalog:
    data = pa.table({"user_id": pa.array([SUBJECT, 8, 9], pa.int64()), "amount": pa.array([1.0, 2.0, 3.0])})
    catalog.create_table("db.events", schema=data.schema)
    ip.configure_identity(catalog.load_table("db.events"), ["user_id"])
    ip.append(catalog.load_table("db.events"), data)
    return catalog


def subject_rows(catalog: Catalog, name: str, column: str) -> int:
    data = catalog.load_table(name).scan().to_arrow()
    return int(pc.sum(pc.equal(data[column], SUBJECT)).as_py() or 0)


@pytest.mark.parametrize("target", ["mart.copy", "db.copy"])
def test_a_source_erased_while_a_derive_runs_does_not_bring_the_subject_back(
        events: Catalog, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """The derive read db.events, then the subject was erased from it (following lineage, which could not
    see the derive's table yet), then the derive wrote what it had read: the erased person was in the new
    table, out of reach of the finished request. The derive now starts again from the erased data."""
    run = derive_module._run_duckdb
    erasures: list[Any] = []

    def erased_meanwhile(*args: Any) -> pa.Table:
        result = run(*args)
        if not erasures:  # once: the second run reads the erased table
            erasures.append(ip.erase(events, [SUBJECT], ["db.events"], follow_lineage=True))
        return result

    monkeypatch.setattr(derive_module, "_run_duckdb", erased_meanwhile)
    report = ip.derive(events, "SELECT user_id AS uid, amount FROM db.events", target)
    assert erasures and erasures[0].tables["db.events"].rows_removed == 1
    assert report.rows == 2
    assert subject_rows(events, target, "uid") == 0
    assert subject_rows(events, "db.events", "user_id") == 0


def test_a_derive_whose_sources_keep_being_erased_writes_nothing(events: Catalog,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = derive_module._run_duckdb

    def always_erased(*args: Any) -> pa.Table:
        result = run(*args)
        someone = 100 + len(events.load_table("db.events").metadata.snapshots)
        ip.append(events.load_table("db.events"), pa.table({"user_id": pa.array([someone], pa.int64()),
                                                            "amount": pa.array([0.0])}))
        ip.erase(events, [someone], ["db.events"])
        return result

    monkeypatch.setattr(derive_module, "_run_duckdb", always_erased)
    monkeypatch.setattr(derive_module, "ERASED_RERUNS", derive_module.retry.RetryPolicy(attempts=2))
    with pytest.raises(LineageError, match="kept being erased.*nothing was written"):
        ip.derive(events, "SELECT user_id AS uid, amount FROM db.events", "mart.copy")
    assert ("mart",) not in events.list_namespaces()  # the table and namespace it created are dropped again


def test_a_table_derived_while_an_erasure_runs_is_reported_not_taken_for_complete(
        events: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasure planned its lineage fan-out, then a derive read the not yet erased db.events and committed
    mart.late, then the erasure rewrote db.events: mart.late held the subject, and the report said nothing."""
    from iceberg_privacy.rights import requests

    plan = requests.plan_fanout
    derived: list[Any] = []

    def derive_meanwhile(*args: Any, **kwargs: Any) -> Any:
        fan = plan(*args, **kwargs)
        if not derived:
            derived.append(ip.derive(events, "SELECT user_id AS uid FROM db.events", "mart.late"))
        return fan

    monkeypatch.setattr(requests, "plan_fanout", derive_meanwhile)
    report = ip.erase(events, [SUBJECT], ["db.events"], follow_lineage=True)
    assert derived and "mart.late" not in report.tables
    assert report.lineage is not None
    late = [w for w in report.lineage.warnings if w.startswith("mart.late was derived from db.events while")]
    assert late and "follow_lineage=True" in late[0]
    assert "mart.late" in str(report)
    # the advice works: the same erasure again reaches it
    monkeypatch.setattr(requests, "plan_fanout", plan)
    again = ip.erase(events, [SUBJECT], ["db.events"], follow_lineage=True)
    assert again.tables["mart.late"].rows_removed == 1
    assert subject_rows(events, "mart.late", "uid") == 0
    assert again.lineage is not None and not again.lineage.warnings


@pytest.mark.slow
def test_a_source_erased_and_purged_while_a_derive_runs_on_s3_rest(rest_catalog: Catalog, lake_ns: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race on SeaweedFS + REST, the erasure purged meanwhile (the snapshot the derive read expired)."""
    cat, ns = rest_catalog, lake_ns
    data = pa.table({"user_id": pa.array([SUBJECT, 8, 9], pa.int64()), "amount": pa.array([1.0, 2.0, 3.0])})
    cat.create_table(f"{ns}.events", schema=data.schema)
    ip.configure_identity(cat.load_table(f"{ns}.events"), ["user_id"])
    ip.append(cat.load_table(f"{ns}.events"), data)
    run = derive_module._run_duckdb
    erasures: list[Any] = []

    def erased_meanwhile(*args: Any) -> pa.Table:
        result = run(*args)
        if not erasures:
            erasures.append(ip.erase(cat, [SUBJECT], [f"{ns}.events"], follow_lineage=True, purge=True))
        return result

    monkeypatch.setattr(derive_module, "_run_duckdb", erased_meanwhile)
    report = ip.derive(cat, f"SELECT user_id AS uid, amount FROM {ns}.events", f"{ns}.copy")
    assert erasures and erasures[0].purge is not None
    assert report.rows == 2 and subject_rows(cat, f"{ns}.copy", "uid") == 0
