"""History upkeep of the forget list: after many adds its own snapshots and small files stay bounded, every
entry stays (every forgotten subject is still dropped), and a reader holding the version an upkeep removed
re-reads from the new head instead of failing on a vanished file."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy.config import configure_identity
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.keyed import digest_literals, key_id, load_secret
from iceberg_privacy.storage import list_files

SCHEMA = pa.schema([("user_id", pa.string()), ("n", pa.int64())])


def _events(catalog: Catalog, name: str = "db.events") -> Table:
    return configure_identity(catalog.create_table(name, SCHEMA), ["user_id"])


def _forget(catalog: Catalog, target: Any, users: list[str], request_id: str = "r") -> int:
    secret = load_secret(catalog=catalog)
    return forget.add(catalog, target, digest_literals(secret, users, StringType(), "user_id"), request_id,
                      secret_key_id=key_id(secret))


def _forget_table(catalog: Catalog, ns: str = "db") -> Table:
    return catalog.load_table(forget.forget_table_identifier((ns,), catalog))


def _rows(users: list[str]) -> pa.Table:
    return pa.table({"user_id": users, "n": list(range(len(users)))}, schema=SCHEMA)


def test_many_adds_keep_the_forget_table_bounded_and_every_subject(catalog: Catalog) -> None:
    events = _events(catalog)
    users = [f"gone{i}" for i in range(34)]
    for i, user in enumerate(users):  # one erasure each: one add, one commit
        assert _forget(catalog, events if i % 2 else "db", [user], f"r{i}") == 1
    ft = _forget_table(catalog)
    # the default upkeep runs every 16 snapshots: never more than that, and the small files merged
    assert len(ft.metadata.snapshots) < 16
    assert len(ft.scan().plan_files()) < 16
    assert len(ft.metadata.metadata_log) <= 16
    stored = [f for f in list_files(ft.io, ft.location()) if f.location.endswith(".parquet")]
    assert len(stored) < 16  # the merged files are deleted, not just unreferenced
    assert sorted(forget.entries(catalog, "db").column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(34))
    forget.clear_cache()  # a new process: the list read cold
    report = ip.append(catalog.load_table("db.events"), _rows([*users, "kept"]))
    assert report.dropped_rows == 34 and report.rows == 1


def test_upkeep_off_by_property_and_explicit_maintain(catalog: Catalog) -> None:
    events = _events(catalog)
    _forget(catalog, events, ["first"])
    ft = _forget_table(catalog)
    ft.transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: "0"}).commit_transaction()
    for i in range(17):
        _forget(catalog, events, [f"u{i}"])
    assert len(_forget_table(catalog).metadata.snapshots) == 18  # 0 = never automatically
    rep = forget.maintain(catalog, "db", orphan_age=timedelta(0))
    assert rep is not None and rep.rows == 18 and rep.expired_snapshots >= 17
    ft = _forget_table(catalog)
    assert len(ft.metadata.snapshots) == 1 and forget.entries(catalog, "db").num_rows == 18
    assert forget.maintain(catalog, "nowhere") is None  # a namespace without a list


def test_a_reader_holding_the_version_an_upkeep_removed_reads_the_new_head(catalog: Catalog,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    events = _events(catalog)
    for i in range(6):
        _forget(catalog, events, [f"u{i}"])
    stale = _forget_table(catalog)  # a write loaded the list here ...
    _forget_table(catalog).transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: "0"}).commit_transaction()
    rep = forget.maintain(catalog, "db", orphan_age=timedelta(0))  # ... then another process's upkeep ran
    assert rep is not None and rep.deleted_files > 0
    forget.clear_cache()
    real = forget._load_table
    handed: list[Table] = []

    def first_stale(*args: Any, **kwargs: Any) -> Table | None:
        if not handed:
            handed.append(stale)
            return stale
        return real(*args, **kwargs)

    monkeypatch.setattr(forget, "_load_table", first_stale)
    flt = forget.load(catalog.load_table("db.events"))
    assert handed and flt is not None and flt.entries == 6
    assert flt.version == _forget_table(catalog).metadata.current_snapshot_id  # the merged head, not the stale one
    monkeypatch.setattr(forget, "_load_table", real)
    report = ip.append(catalog.load_table("db.events"), _rows(["u3", "kept"]))
    assert report.dropped_rows == 1


@settings(max_examples=5, deadline=None)
@given(adds=st.lists(st.lists(st.sampled_from([f"p{i}" for i in range(12)]), min_size=1, max_size=3),
                     min_size=1, max_size=10),
       every=st.sampled_from([2, 3, 5]))
def test_upkeep_keeps_every_forgotten_subject(shared_catalog: Catalog, adds: list[list[str]], every: int) -> None:
    """Whatever the adds and wherever the upkeep falls, the list holds exactly the subjects added."""
    ns = f"f{abs(hash((tuple(map(tuple, adds)), every))) % 10**9}"
    if ns in [n[0] for n in shared_catalog.list_namespaces()]:
        return
    shared_catalog.create_namespace(ns)
    events = _events(shared_catalog, f"{ns}.events")
    _forget(shared_catalog, events, ["seed"])
    _forget_table(shared_catalog, ns).transaction().set_properties(
        {HISTORY_MAINTAIN_EVERY_PROPERTY: str(every)}).commit_transaction()
    for batch in adds:
        _forget(shared_catalog, events, batch)
    expected = {"seed", *[u for batch in adds for u in batch]}
    assert forget.entries(shared_catalog, ns).num_rows == len(expected)
    assert len(_forget_table(shared_catalog, ns).metadata.snapshots) <= every + 1
    forget.clear_cache()
    everyone = sorted({f"p{i}" for i in range(12)} | {"seed", "kept"})
    report = ip.append(shared_catalog.load_table(f"{ns}.events"), _rows(everyone))
    assert report.dropped_rows == len(expected) and report.rows == len(everyone) - len(expected)


def test_upkeep_on_object_storage_behind_a_rest_catalog(rest_catalog: Catalog, lake_ns: str) -> None:
    events = configure_identity(rest_catalog.create_table(f"{lake_ns}.events", SCHEMA), ["user_id"])
    assert events.location().startswith("s3://")
    _forget(rest_catalog, events, ["first"])
    ft = _forget_table(rest_catalog, lake_ns)
    ft.transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: "4"}).commit_transaction()
    stale = _forget_table(rest_catalog, lake_ns)
    for i in range(9):
        _forget(rest_catalog, events, [f"u{i}"])
    ft = _forget_table(rest_catalog, lake_ns)
    assert len(ft.metadata.snapshots) <= 4
    stored = [f for f in list_files(ft.io, ft.location()) if f.location.endswith(".parquet")]
    assert len(stored) <= 4  # merged files deleted from the bucket, through the FileIO
    with pytest.raises(OSError):  # the version loaded before the upkeeps: its files are gone ...
        stale.scan().to_arrow()
    forget.clear_cache()
    flt = forget.load(rest_catalog.load_table(f"{lake_ns}.events"))  # ... and the write path reads the new head
    assert flt is not None and flt.entries == 10
    report = ip.append(rest_catalog.load_table(f"{lake_ns}.events"), _rows(["u4", "first", "kept"]))
    assert report.dropped_rows == 2 and report.rows == 1
