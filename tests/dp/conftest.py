"""Fixtures for the DP tests: fresh SQLite catalogs (the PostgreSQL server, ``postgres_uri``, is in tests/conftest.py).

The shared Spark session (``spark``) lives in tests/conftest.py: the DP and the Spark data-source
tests use the same one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

ROOT = Path(__file__).resolve().parents[2]

from tests.helpers import make_catalog, pageviews  # noqa: E402


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    cat = make_catalog(tmp_path)
    cat.create_namespace("db")
    return cat


@pytest.fixture
def pv_table(catalog: SqlCatalog) -> Any:
    data = pageviews(6000)
    table = catalog.create_table("db.pv", schema=data.schema)
    table.append(data)
    return table
