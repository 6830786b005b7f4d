"""Shared fixtures: real SqlCatalogs on SQLite in temporary warehouses."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip

# CI (CI=true) replays the same examples every run, so a submission lands or fails reproducibly;
# local runs explore new examples. Deep hunts: IP_PROPERTY_EXAMPLES=600 on the property tests.
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True, derandomize=bool(os.environ.get("CI")),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_names = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_sidecar_cache() -> Iterator[None]:
    ip.clear_sidecar_cache()
    yield
    ip.clear_sidecar_cache()


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = ip.connect(home=tmp_path / "home")
    cat.create_namespace("db")
    return cat


@pytest.fixture(scope="module")
def shared_catalog() -> Iterator[Catalog]:
    """One catalog for many hypothesis examples; each example uses a fresh table name."""
    with tempfile.TemporaryDirectory() as d:
        cat = ip.connect(home=d)
        cat.create_namespace("db")
        yield cat


def unique_name(prefix: str = "t") -> str:
    return f"db.{prefix}{next(_names)}"
