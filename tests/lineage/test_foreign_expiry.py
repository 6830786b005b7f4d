"""Lineage survives another tool's snapshot expiry.

Records live in snapshot summaries; the library's own expiry folds them into ``privacy.lineage.history`` first, but
pyiceberg's ``table.maintenance.expire_snapshots()`` (and Spark's ``expire_snapshots``) drop summaries and fold
nothing. A derived table maintained that way lost where its rows came from: ``downstream`` of the source column was
empty and ``erase(..., follow_lineage=True)`` reported success while the person's mapped id (``'BOB'`` from
``upper(user_id)``) stayed in the derived table. A record that names sources is now kept in the history property
from the commit that writes it.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.lineage.record import HISTORY_PROPERTY, snapshot_records
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import SECRET

SQL = "SELECT upper(user_id) AS who, sum(clicks) AS clicks FROM db.events GROUP BY 1"


@pytest.fixture
def lake(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    catalog.create_namespace("mart")
    table = catalog.create_table("db.events", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                     NestedField(2, "clicks", LongType(), required=False)))
    table = ip.configure_identity(table, ["user_id"])
    ip.append(table, pa.table({"user_id": ["ann", "bob"], "clicks": pa.array([3, 5], pa.int64())}))
    return catalog


def _expire_all_but_head(catalog: Catalog, name: str) -> Any:
    table = catalog.load_table(name)
    old = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id != table.metadata.current_snapshot_id]
    table.maintenance.expire_snapshots().by_ids(old).commit()  # pyiceberg's own: no lineage folded
    return catalog.load_table(name)


def test_erasure_follows_lineage_after_pyiceberg_expired_the_derive_snapshot(lake: Catalog) -> None:
    ip.derive(lake, SQL, "mart.clicks")
    mart = lake.load_table("mart.clicks")
    mart.append(pa.Table.from_pylist([{"who": "ZED", "clicks": 1}], schema=mart.schema().as_arrow()))  # another job
    mart = _expire_all_but_head(lake, "mart.clicks")
    assert len(mart.metadata.snapshots) == 1
    g = ip.lineage.graph(lake)
    assert g.downstream("db.events.user_id", indirect=False) == ["mart.clicks.who"]
    report = ip.erase(lake, ["bob"], ["db.events"], follow_lineage=True, link_identifiers=False)
    assert report.tables["mart.clicks"].rows_removed == 1
    assert sorted(lake.load_table("mart.clicks").scan().to_arrow().column("who").to_pylist()) == ["ANN", "ZED"]


def test_a_retained_record_is_read_once_and_repeated_runs_are_kept_once(lake: Catalog) -> None:
    for _ in range(3):
        ip.derive(lake, SQL, "mart.clicks", mode="overwrite")
    mart = lake.load_table("mart.clicks")
    assert len(json.loads(mart.properties[HISTORY_PROPERTY])) == 1  # one flow, whatever the number of runs
    derives = [r for r in snapshot_records(mart.metadata) if r.op == "derive"]
    assert len(derives) == len([s for s in mart.metadata.snapshots if s.summary and "privacy.lineage" in
                                s.summary.additional_properties])  # no record twice
    ip.expire_snapshots(mart, retain_last=1)  # the library's own expiry folds the same flow: still one
    mart = lake.load_table("mart.clicks")
    assert len(json.loads(mart.properties[HISTORY_PROPERTY])) == 1
    assert ip.lineage.graph(lake).upstream("mart.clicks") == ["db.events"]
