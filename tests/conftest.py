"""Shared fixtures: real SqlCatalogs on SQLite in temporary warehouses, and ONE Spark session.

Spark startup dominates the Spark tests' run time, so every Spark test (DP with Tumult, the
``iceberg-privacy`` data source) shares one small session, created only when a test asks for it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """local[2] Spark for the whole run: Tumult's settings plus the iceberg-privacy data source."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from spark_ext import register

    warehouse = tempfile.mkdtemp(prefix="ip-spark-wh-")  # tmlt materializes tables here
    session = (
        SparkSession.builder.master("local[2]")
        .appName("iceberg-privacy-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", warehouse)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.python.filterPushdown.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    yield session
    session.stop()
    shutil.rmtree(warehouse, ignore_errors=True)
