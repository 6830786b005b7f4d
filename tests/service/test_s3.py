"""The service on SeaweedFS: REST catalog (and a SqlCatalog) with an s3:// warehouse."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.service import ServiceClient
from iceberg_privacy.service.server import BackgroundServer
from iceberg_privacy.service.tokens import TokenStore
from tests.helpers import pageviews

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def test_service_on_object_storage(s3_catalog: tuple[Catalog, str], spark: Any) -> None:
    cat, ns = s3_catalog
    data = pageviews(300)
    table = cat.create_table(f"{ns}.pv", schema=data.schema)
    table.append(data)
    assert table.location().startswith("s3://")
    ip.set_namespace_budget(cat, ns, ip.PureDP(1.0))
    ip.set_access_policy(cat, ns, "dp-only", max_epsilon_per_query=0.2, principal_budgets={"alice": 0.5},
                         privacy_unit="user_id", max_rows_per_unit=3,
                         public_keys={"country": ["c0", "c1", "c2", "c3"]})
    store = TokenStore(cat)
    alice = store.issue("alice")
    with BackgroundServer(cat) as srv, ServiceClient(srv.url, alice.token) as client:
        mine = [d for d in client.datasets() if d.name.startswith(ns + ".")]
        assert [d.name for d in mine] == [f"{ns}.pv"] and mine[0].remaining == pytest.approx(0.5)
        answer = client.sql(f"SELECT country, COUNT(*) AS n FROM {ns}.pv GROUP BY country", epsilon=0.1)
        assert sorted(answer.rows.column("country").to_pylist()) == ["c0", "c1", "c2", "c3"]
        assert [d for d in client.datasets() if d.name == f"{ns}.pv"][0].remaining == pytest.approx(0.4)
        released = [r for r in client.releases() if r["source_table"] == f"{ns}.pv"]
        assert released[0]["provenance"]["source.snapshot-id"] == table.current_snapshot().snapshot_id
        store.revoke(alice.record.token_id)
        assert httpx.get(srv.url + "/v1/datasets",
                         headers={"Authorization": f"Bearer {alice.token}"}).status_code == 401


def test_synthetic_names_the_rest_catalog_refuses_are_404(rest_catalog: Catalog, lake_ns: str) -> None:
    """SeaweedFS's REST catalog answers 400 for names outside a-z, 0-9, _ and -; the service answered 500 for
    GET /v1/synthetic/<such a name> (found by advsvc2). Nothing there to read: 404, as for any other name."""
    token = TokenStore(rest_catalog).issue("alice").token
    with BackgroundServer(rest_catalog) as srv:
        for name in (f"{lake_ns}.Bad Name", f"{lake_ns}.\u202eevil", "NoSuch.x", f"{lake_ns}.ok_but_missing"):
            r = httpx.get(f"{srv.url}/v1/synthetic/{name}", headers={"Authorization": f"Bearer {token}"}, timeout=60)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (name, r.text)
