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


@pytest.fixture
def svc_catalog(tmp_path: Path) -> Catalog:
    cat = make_catalog(tmp_path)
    cat.create_namespace("conf")
    data = pageviews(600)
    cat.create_table("conf.pv", schema=data.schema).append(data)
    ip.set_namespace_budget(cat, "conf", ip.PureDP(1.0), principal_caps={"alice": ip.PureDP(0.5),
                                                                         "bob": ip.PureDP(0.3)})
    return cat


@pytest.fixture
def service(svc_catalog: Catalog) -> Iterator[BackgroundServer]:
    with BackgroundServer(svc_catalog) as srv:
        yield srv


@pytest.fixture
def tokens(svc_catalog: Catalog) -> dict[str, Any]:
    store = TokenStore(svc_catalog)
    return {"alice": store.issue("alice").token, "bob": store.issue("bob").token}
