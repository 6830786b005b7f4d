"""The local Spark session DP releases run on, unless the caller brings one.

Imported lazily: ``import iceberg_privacy`` must not start a JVM or even import pyspark.
"""

from __future__ import annotations

import logging
import os
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
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_reads_scheme(spark: Any, location: str) -> bool:
    """Can this Spark session's Hadoop layer open ``location`` itself? ``file`` always; ``s3a://``,
    ``gs://``, ``abfss://``... only when the matching connector jar is on the classpath (pyspark ships
    none), which the JVM answers without touching storage."""
    from iceberg_privacy.storage import scheme_of

    scheme = scheme_of(location)
    if scheme == "file":
        return True
    try:
        conf = spark._jsc.hadoopConfiguration()
        spark._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, conf)
        return True
    except Exception:  # noqa: BLE001 - "No FileSystem for scheme": read through Arrow instead
        return False


def table_dataframe(spark: Any, table: Any, snapshot_id: int, columns: list[str]) -> Any:
    """A Spark DataFrame of ``columns`` of an Iceberg table at one snapshot.

    Fast path: when the snapshot has no delete files, the table never changed schema and Spark has a
    filesystem for the files' scheme, Spark reads the snapshot's Parquet data files directly (no copy
    through the driver). Otherwise (object storage without a Hadoop connector, deletes, renames, or a
    Spark read that fails, e.g. without the catalog's credentials) the snapshot is read with pyiceberg
    through the table's FileIO, which carries the catalog's storage properties, and handed over as Arrow.
    """
    scan = table.scan(snapshot_id=snapshot_id, selected_fields=tuple(columns))
    tasks = list(scan.plan_files())
    simple = len(table.metadata.schemas) == 1 and all(not t.delete_files for t in tasks)
    if simple and tasks and spark_reads_scheme(spark, tasks[0].file.file_path):
        paths = [t.file.file_path for t in tasks]
        try:
            df = spark.read.parquet(*paths)
        except Exception as exc:  # noqa: BLE001 - e.g. a connector without the catalog's credentials
            logger.info("Spark could not read %s directly (%s); reading through pyiceberg", paths[0], exc)
        else:
            if all(c in df.columns for c in columns):
                return df.select(*columns)
    arrow = scan.to_arrow()
    if arrow.num_rows == 0:
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame([], schema=from_arrow_schema(arrow.schema))
    return spark.createDataFrame(arrow)
