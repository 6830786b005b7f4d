"""DP releases in the lineage graph: recorded with their source, exempt from erasure fan-out."""

from __future__ import annotations

from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy import lineage
from iceberg_privacy.dp import RhoZCDP, dp_histogram, set_namespace_budget
from iceberg_privacy.lineage.export import to_openlineage
from iceberg_privacy.rights.keyed import SECRET_ENV

pytestmark = pytest.mark.spark
KEYS = {"country": ["c0", "c1", "c2", "c3"]}


def test_release_is_in_the_graph_and_exempt_from_fanout(catalog: SqlCatalog, pv_table: Any, spark: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    ip.configure_identity(pv_table, ["user_id"])
    ip.derive(catalog, "SELECT user_id, country FROM db.pv WHERE bytes > 50", "mart.pv_big")
    set_namespace_budget(catalog, "db", RhoZCDP(1))
    rel = dp_histogram(pv_table, ["country"], budget=RhoZCDP(0.5), privacy_unit="user_id", max_rows_per_unit=3,
                       keys=KEYS, principal="alice", output="rel.by_country", spark=spark)  # the Table's own catalog
    g = lineage.graph(catalog)
    assert g.node("rel.by_country").dp_release
    assert set(g.downstream("db.pv")) == {"mart.pv_big", "rel.by_country"}
    # The privacy unit flows into the release only aggregated (masked): no person's id is in it.
    assert set(g.downstream("db.pv.user_id", indirect=False)) == {"mart.pv_big.user_id", "rel.by_country.count"}
    into_release = [e for e in g.columns if g.tables[e.sink].name == "rel.by_country" and e.type == "DIRECT"]
    assert into_release and all(e.masking and e.subtype == "AGGREGATION" for e in into_release)
    report = ip.erase(catalog, [4], ["db.pv"], follow_lineage=True)
    assert set(report.tables) == {"db.pv", "mart.pv_big"}
    assert [(e.table, e.source, e.release_id) for e in report.lineage.exempt] == [
        ("rel.by_country", "db.pv", rel.release_id)]
    assert "exempt: rel.by_country is a DP release of db.pv" in str(report)
    prov = report.lineage.exempt[0].provenance
    assert prov.source_snapshot_id == rel.source_snapshot_id
    assert prov.budget == RhoZCDP(0.5).to_json() and prov.query_hash == rel.query_hash
    events = to_openlineage(g)
    assert any(e["outputs"][0]["name"] == "rel.by_country" for e in events)
