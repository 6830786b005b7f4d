"""Synthetic tables through the service: listed and readable without budget; nothing else is a row source."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.service import ServiceClient
from iceberg_privacy.service.server import BackgroundServer


@pytest.fixture
def synthetic(svc_catalog: Catalog) -> str:
    svc_catalog.create_namespace("secret")
    data = __import__("tests.helpers", fromlist=["pageviews"]).pageviews(900)
    svc_catalog.create_table("secret.pv", schema=data.schema).append(data)
    ip.set_namespace_budget(svc_catalog, "secret", ip.RhoZCDP(10))
    report = ip.dp_synthesize(svc_catalog, "secret.pv", ["country", "project", "bytes"], ip.RhoZCDP(2),
                              output="secret.pv_synth", rows=300, bounds={"bytes": (0.0, 100.0)},
                              domains={"country": ["c0", "c1", "c2", "c3"], "project": ["p0", "p1", "p2"]},
                              privacy_unit=ip.ROWS)
    return report.output


def test_synthetic_tables_are_listed_and_read_without_budget(service: BackgroundServer, svc_catalog: Catalog,
                                                             tokens: dict[str, Any], synthetic: str) -> None:
    before = len(Ledger(svc_catalog, ("secret",)).events())
    with ServiceClient(service.url, tokens["bob"]) as bob:
        listed = bob.synthetic_tables()
        assert [t["name"] for t in listed] == [synthetic]
        assert listed[0]["provenance"]["privacy.dp.source.table"] == "secret.pv"
        got = bob.synthetic(synthetic)
        assert got.rows.num_rows == 300 and got.rows.column_names == ["country", "project", "bytes"]
        assert set(got.rows.column("country").to_pylist()) <= {"c0", "c1", "c2", "c3", None}  # None: the null cell
        page = bob.synthetic(synthetic, limit=10, offset=295)
        assert page.rows.num_rows == 5
        # the synthetic table is no dataset to query, and the private source has no row endpoint
        assert synthetic not in [d.name for d in bob.datasets()]
        with pytest.raises(ip.ServiceRequestError) as info:
            bob.synthetic("secret.pv")
        assert info.value.status == 404
    assert len(Ledger(svc_catalog, ("secret",)).events()) == before  # reads charged nothing
    r = httpx.get(f"{service.url}/v1/synthetic/{synthetic}")
    assert r.status_code == 401  # but a token is still needed


def test_rows_another_job_writes_into_a_synthetic_table_are_never_served(
        service: BackgroundServer, svc_catalog: Catalog, tokens: dict[str, Any], synthetic: str) -> None:
    """The service trusted the ``privacy.synthetic`` table property: rows a plain pyiceberg job appended to the
    synthetic table (or an overwrite of its contents, which keeps the property) were served to every token holder
    without budget. It serves the synthesis snapshot's rows, and refuses once that snapshot is gone."""
    import pyarrow as pa

    out = svc_catalog.load_table(synthetic)
    synthesis = out.current_snapshot()
    assert synthesis is not None
    raw = pa.table({"country": ["RAW"] * 7, "project": ["RAW"] * 7, "bytes": [1.0] * 7},
                   schema=out.schema().as_arrow())
    with ServiceClient(service.url, tokens["bob"]) as bob:
        for write in (out.append, out.overwrite):  # a foreign job: the table property stays
            write(raw)
            out = svc_catalog.load_table(synthetic)
            assert "RAW" in out.scan().to_arrow().column("country").to_pylist()
            got = bob.synthetic(synthetic, limit=10_000)
            assert got.rows.num_rows == 300 and "RAW" not in got.rows.column("country").to_pylist()
            listed = bob.synthetic_tables()
            assert listed[0]["snapshot_id"] == synthesis.snapshot_id
            assert listed[0]["provenance"]["privacy.dp.source.table"] == "secret.pv"
        # the synthesis snapshot expired: nothing vouches for the rows any more
        current = out.current_snapshot()
        assert current is not None
        out.maintenance.expire_snapshots().by_ids(
            [s.snapshot_id for s in out.snapshots() if s.snapshot_id != current.snapshot_id]).commit()
        with pytest.raises(ip.ServiceRequestError) as info:
            bob.synthetic(synthetic)
        assert info.value.status == 404 and "dp_synthesize" in str(info.value)
        assert bob.synthetic_tables() == []


def test_the_synthetic_listing_names_who_ran_a_synthesis_only_to_them(service: BackgroundServer, svc_catalog: Catalog,
                                                                      tokens: dict[str, Any], synthetic: str) -> None:
    """GET /v1/synthetic showed every token holder the provenance key privacy.dp.principal: the name of whoever
    ran the synthesis (as query answers, fixed earlier, it is shown to that principal only)."""
    from iceberg_privacy.config import current_principal
    from iceberg_privacy.service.tokens import TokenStore

    owner = current_principal()  # the fixture's dp_synthesize ran as the default principal
    with ServiceClient(service.url, tokens["bob"]) as bob:
        (listed,) = bob.synthetic_tables()
        assert listed["provenance"]["privacy.dp.principal"] is None
        assert listed["provenance"]["privacy.dp.source.table"] == "secret.pv"  # the rest of the provenance stays
    r = httpx.get(f"{service.url}/v1/synthetic", headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert f'"{owner}"' not in r.text
    with ServiceClient(service.url, TokenStore(svc_catalog).issue(owner).token) as them:
        assert them.synthetic_tables()[0]["provenance"]["privacy.dp.principal"] == owner
