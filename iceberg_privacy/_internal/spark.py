"""The local Spark session DP releases run on, unless the caller brings one.

Imported lazily: ``import iceberg_privacy`` must not start a JVM or even import pyspark.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "2g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # tmlt materializes intermediate tables; keep them out of the caller's working directory.
    "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "iceberg-privacy-spark-warehouse"),
}


def get_spark(
    spark: Any | None = None, *, master: str = "local[2]", conf: dict[str, str] | None = None
) -> Any:
    """Return ``spark`` if given, else the active session, else a new small local session.

    Python workers must run this interpreter (tmlt uses pandas UDFs), hence PYSPARK_PYTHON.
    """
    if spark is not None:
        return spark
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.master(master).appName("iceberg-privacy-dp")
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = start_session(builder)
    session.sparkContext.setLogLevel("ERROR")
    return session


def start_session(builder: Any) -> Any:
    """``builder.getOrCreate()``, with a JVM that does not start as a :class:`ConfigurationError` saying what to install
    or check: pyspark's own error is only "Java gateway process exited before sending its port number"
    (``JAVA_GATEWAY_EXITED``), whatever the cause (no Java, a ``JAVA_HOME`` naming none, a master URL Spark cannot
    parse, ...)."""
    try:
        return builder.getOrCreate()
    except Exception as exc:
        if "JAVA_GATEWAY_EXITED" not in str(exc) and "Java gateway process exited" not in str(exc):
            raise
        from iceberg_privacy.errors import ConfigurationError

        java_home = os.environ.get("JAVA_HOME")
        java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
        if java is None or not os.access(java, os.X_OK):
            where = f"JAVA_HOME is {java_home!r}, which holds no bin/java" if java_home else \
                "no java on PATH and JAVA_HOME is not set"
            raise ConfigurationError(
                f"Spark could not start its JVM ({where}). The Spark parts (DP releases, the Spark data source, "
                "'requests run --spark') need Java 17 or later: install it (e.g. apt-get install "
                "openjdk-17-jre-headless) and put its java on PATH, or set JAVA_HOME to its directory") from exc
        raise ConfigurationError(
            f"Spark's JVM ({java}) exited while starting, before the session existed ({exc}): its reason is printed "
            "on standard error above; check the master URL (local[2], spark://host:7077, yarn), the Spark "
            "configuration and that this Java is version 17 or later") from exc


_workers_ok: set[int] = set()


def check_python_workers(spark: Any) -> None:
    """Run one trivial Python task (once per SparkContext), so that Python workers that cannot start
    (a different Python version, a missing interpreter) fail before a release reserves any budget."""
    context = spark.sparkContext
    key = id(context._jsc) if getattr(context, "_jsc", None) is not None else id(context)
    if key in _workers_ok:
        return
    try:
        context.parallelize([1], 1).map(lambda x: x + 1).collect()
    except Exception as exc:
        raise RuntimeError(
            f"Spark's Python workers did not run a task ({type(exc).__name__}: {str(exc)[:500]}); they must run "
            f"the driver's Python ({sys.version.split()[0]}, {sys.executable}): set PYSPARK_PYTHON"
        ) from exc
    _workers_ok.add(key)


def table_dataframe(spark: Any, table: Any, snapshot_id: int, columns: list[str]) -> Any:
    """A Spark DataFrame of ``columns`` of an Iceberg table at one snapshot.

    Fast path: when the snapshot has no delete files and the table never changed schema, Spark reads
    the snapshot's Parquet data files directly (no copy through the driver). Spark resolves the paths
    when the read is defined, so a scheme its Hadoop layer has no filesystem for (pyspark ships no S3,
    GCS or ADLS connector) or a connector without the catalog's credentials fails right there. Then,
    and for deletes or renamed columns, the snapshot is read with pyiceberg through the table's FileIO
    (the catalog's storage properties) and handed over as Arrow: no extra jars are needed.

    ``columns`` are names of the table's *current* schema, read by field id (:func:`read_snapshot`).
    """
    tasks = snapshot_tasks(table, snapshot_id)
    simple = len(table.metadata.schemas) == 1 and all(not t.delete_files for t in tasks)
    if simple and tasks:
        paths = [t.file.file_path for t in tasks]
        try:
            df = spark.read.parquet(*paths)
        except Exception as exc:  # noqa: BLE001 - e.g. a connector without the catalog's credentials
            logger.info("Spark could not read %s directly (%s); reading through pyiceberg", paths[0], exc)
        else:
            if all(c in df.columns for c in columns):
                return df.select(*columns)
    arrow = read_snapshot(table, snapshot_id, columns, tasks)
    if arrow.num_rows == 0:
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame([], schema=from_arrow_schema(arrow.schema))
    return spark.createDataFrame(arrow)


def snapshot_tasks(table: Any, snapshot_id: int) -> list[Any]:
    """The scan tasks (data files and their delete files) of one snapshot of ``table``."""
    return list(table.scan(snapshot_id=snapshot_id).plan_files())


def read_snapshot(table: Any, snapshot_id: int, columns: list[str], tasks: list[Any] | None = None) -> Any:
    """The rows of one snapshot of ``table`` as Arrow, with ``columns`` named as in the table's *current* schema.

    Why not ``table.scan(snapshot_id=...)``: pyiceberg projects a snapshot through the schema it was written
    with, so after a rename (a metadata-only change: no new snapshot) a current column name was unknown there
    (the release failed) or, after swapping two names, named the *other* column (a release of the wrong data).
    The DP verbs validate names against the current schema; here the snapshot's files are read by the field
    ids of those names, as Iceberg resolves columns (a column added after the snapshot reads as nulls).
    """
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    projected = table.schema().select(*columns, case_sensitive=True)
    if tasks is None:
        tasks = snapshot_tasks(table, snapshot_id)
    return ArrowScan(table.metadata, table.io, projected, AlwaysTrue(), case_sensitive=True).to_table(tasks)
