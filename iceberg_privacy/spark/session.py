"""One call to a Spark session that can use the data source.

The first thing a new user hits is executors starting a different Python than the driver's (a
different pyarrow, no iceberg_privacy, or a minor-version mismatch). The helper pins both to the
running interpreter, enables Python filter pushdown (without it Spark refuses a reader that
pushes filters) and registers the data source.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("iceberg_privacy.spark")

PUSHDOWN_CONF = "spark.sql.python.filterPushdown.enabled"


def register(spark: Any) -> Any:
    """Register the ``iceberg-privacy`` format on an existing session and enable filter pushdown."""
    from iceberg_privacy.spark.source import IcebergPrivacyDataSource

    spark.conf.set(PUSHDOWN_CONF, "true")
    spark.dataSource.register(IcebergPrivacyDataSource)
    worker = spark.sparkContext.pythonExec
    if worker and os.path.realpath(worker) != os.path.realpath(sys.executable):
        logger.warning(
            "Spark executors run %s but this driver runs %s; if tasks fail to import iceberg_privacy or "
            "pyarrow, create the session with iceberg_privacy.spark.privacy_session() (or set spark.pyspark.python)",
            worker, sys.executable,
        )
    return spark


def privacy_session(
    master: str | None = None, *, app_name: str = "iceberg-privacy", conf: Mapping[str, str] | None = None,
) -> Any:
    """A SparkSession whose executors run this Python, with the data source registered.

    ``master`` defaults to Spark's own default (``local[*]`` when nothing is configured); ``conf``
    adds any Spark configuration. An already running session is reused (static settings such as
    the worker Python then keep their values; a warning says so when they differ).
    """
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config(PUSHDOWN_CONF, "true")
        .config("spark.sql.session.timeZone", "UTC")
    )
    if master:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    from iceberg_privacy._internal.spark import start_session

    return register(start_session(builder))
