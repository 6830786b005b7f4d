"""Fixtures of the service tests: a catalog with a dp-governed table, the real service on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.service.server import BackgroundServer
from iceberg_privacy.service.tokens import TokenStore
from tests.helpers import make_catalog, pageviews

COUNTRIES = ["c0", "c1", "c2", "c3"]


def governed_catalog(path: Path) -> Catalog:
    """A catalog with the dp-only ``conf.pv`` (600 rows): budget 1.0, alice 0.5, bob 0.3, cap 0.2 per query."""
    cat = make_catalog(path)
    cat.create_namespace("conf")
    data = pageviews(600)
    cat.create_table("conf.pv", schema=data.schema).append(data)
    ip.set_namespace_budget(cat, "conf", ip.PureDP(1.0))
    ip.set_access_policy(cat, "conf", "dp-only", max_epsilon_per_query=0.2,
                         principal_budgets={"alice": 0.5, "bob": 0.3}, privacy_unit="user_id", max_rows_per_unit=3,
                         column_bounds={"bytes": (0.0, 100.0)},
                         public_keys={"country": COUNTRIES, "project": ["p0", "p1", "p2"]})
    return cat


@pytest.fixture
def svc_catalog(tmp_path: Path) -> Catalog:
    return governed_catalog(tmp_path)


@pytest.fixture
def service(svc_catalog: Catalog) -> Iterator[BackgroundServer]:
    with BackgroundServer(svc_catalog) as srv:
        yield srv


@pytest.fixture
def tokens(svc_catalog: Catalog) -> dict[str, Any]:
    store = TokenStore(svc_catalog)
    return {"alice": store.issue("alice").token, "bob": store.issue("bob").token}
