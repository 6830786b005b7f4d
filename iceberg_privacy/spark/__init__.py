"""Spark integration of iceberg-privacy: the ``iceberg-privacy`` Python data source (PySpark 4.1+).

    from iceberg_privacy.spark import privacy_session
    spark = privacy_session("local[4]")
    df.write.format("iceberg-privacy").option("bloom.columns", "user_id").mode("append").save("db.events")
    spark.read.format("iceberg-privacy").load("db.events").where("user_id = 'u1'")   # pruned lookup

Importing this package does not import pyspark; the core never imports this package. See docs/spark.md.
"""

from iceberg_privacy.spark.errors import TableNotFoundError, UnsupportedSparkTypeError
from iceberg_privacy.spark.options import SHORT_NAME
from iceberg_privacy.spark.session import privacy_session, register

__all__ = ["SHORT_NAME", "TableNotFoundError", "UnsupportedSparkTypeError", "privacy_session", "register",
           "data_source"]


def data_source() -> type:
    """The DataSource class (imports pyspark), for ``spark.dataSource.register(...)`` by hand."""
    from iceberg_privacy.spark.source import IcebergPrivacyDataSource

    return IcebergPrivacyDataSource
