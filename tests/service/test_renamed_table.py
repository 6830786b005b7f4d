"""The service after a rename: a table-level dp-only policy and its budget follow the table (its uuid), so the
renamed table is still listed with its policy, and a query over its per-query cap or by a principal without a
budget there is refused over HTTP with nothing charged (before: the rename dropped the policy and the budget)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.service import ServiceClient
from iceberg_privacy.service.server import BackgroundServer
from tests.helpers import pageviews
from tests.service.conftest import COUNTRIES


def test_dp_only_table_policy_survives_a_rename(svc_catalog: Catalog, tokens: dict[str, Any]) -> None:
    cat = svc_catalog
    cat.create_namespace("sens")
    data = pageviews(200)
    table = cat.create_table("sens.pv", schema=data.schema)
    table.append(data)
    ip.set_budget(table, ip.PureDP(1.0), catalog=cat)
    ip.set_access_policy(cat, table, "dp-only", max_epsilon_per_query=0.2, principal_budgets={"alice": 0.5},
                         privacy_unit="user_id", public_keys={"country": COUNTRIES})
    cat.rename_table("sens.pv", "sens.pv_renamed")
    spent_before = ip.get_budget("sens.pv_renamed", catalog=cat).spent
    with BackgroundServer(cat) as service:
        with ServiceClient(service.url, tokens["alice"]) as alice:
            listed = {d.name: d for d in alice.datasets()}
            assert "sens.pv_renamed" in listed and "sens.pv" not in listed
            ds = listed["sens.pv_renamed"]
            assert ds.policy["access"] == "dp-only" and ds.remaining == 0.5
        sql = "SELECT country, COUNT(*) AS n FROM sens.pv_renamed GROUP BY country"
        over = httpx.post(service.url + "/v1/query", json={"sql": sql, "epsilon": 0.3},
                          headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=120)
        assert over.status_code == 409 and over.json()["error"] == "over_query_cap", over.text
        no_budget = httpx.post(service.url + "/v1/query", json={"sql": sql, "epsilon": 0.1},
                               headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=120)
        assert no_budget.status_code == 404 and no_budget.json()["error"] == "not_a_dataset", no_budget.text
    assert ip.get_budget("sens.pv_renamed", catalog=cat).spent == spent_before  # nothing charged


def test_a_table_moved_to_a_namespace_without_a_ledger_is_listed_with_what_it_carries(
        svc_catalog: Catalog, tokens: dict[str, Any]) -> None:
    """A dp-only table moved to a namespace that has no ledger yet (no commit there since the move): the service
    lists it with its carried dp-only policy and budget (before: skipped, since its namespace had no ledger, so
    analysts could not see it until an admin changed something there)."""
    cat = svc_catalog
    cat.create_namespace("moved")
    ip.set_budget("conf.pv", ip.PureDP(0.8), catalog=cat)  # a commit that binds the table in its ledger
    cat.rename_table("conf.pv", "moved.pv")
    with BackgroundServer(cat) as service:
        with ServiceClient(service.url, tokens["alice"]) as alice:
            listed = {d.name: d for d in alice.datasets()}
    assert "moved.pv" in listed and "conf.pv" not in listed
    assert listed["moved.pv"].policy["access"] == "dp-only" and listed["moved.pv"].remaining == 0.5
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(cat, "moved.pv")


def test_the_listing_binds_new_tables_of_a_dp_only_namespace(svc_catalog: Catalog) -> None:
    """A table created in a dp-only namespace after its policy was set, first seen by the service's dataset listing,
    stays dp-only when it is moved to an open namespace (the listing recorded it in the namespace's ledger). Before,
    it moved without the policy and raw reads were allowed (checked on the old code)."""
    from iceberg_privacy.service.views import datasets

    data = pageviews(60)
    svc_catalog.create_table("conf.fresh", schema=data.schema).append(data)
    assert "conf.fresh" in {d["name"] for d in datasets(svc_catalog, "alice")}
    svc_catalog.create_namespace("open_ns")
    svc_catalog.rename_table("conf.fresh", "open_ns.fresh")
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(svc_catalog, "open_ns.fresh")
