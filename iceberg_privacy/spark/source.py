"""The ``iceberg-privacy`` Python data source: reads with pruned lookups, writes with sidecars.

Spark creates a :class:`IcebergPrivacyDataSource` from the options of each read or write (in
Python workers, on the driver's machine for planning and commits, on executors for tasks).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamWriter, DataSourceWriter

from iceberg_privacy.spark.options import (
    READ_OPTIONS,
    SHORT_NAME,
    WRITE_OPTIONS,
    SourceOptions,
    parse_options,
)
from iceberg_privacy.storage import storage_errors


class IcebergPrivacyDataSource(DataSource):
    """``spark.read/write[Stream].format("iceberg-privacy")``; see docs/spark.md for the options."""

    @classmethod
    def name(cls) -> str:
        return SHORT_NAME

    def _opts(self, allowed: dict[str, str]) -> SourceOptions:
        return parse_options(self.options, allowed=allowed)

    @storage_errors  # a catalog or its storage failing on the driver: the library's error, not a raw one
    def schema(self) -> Any:
        """The table's Spark schema at the pinned snapshot (reads only; writes use the DataFrame's)."""
        from iceberg_privacy.spark.reader import resolve_snapshot, schema_at, time_travel
        from iceberg_privacy.spark.schema import spark_schema

        opts = self._opts(READ_OPTIONS)
        table = opts.load_table()
        return spark_schema(schema_at(table, resolve_snapshot(table, opts), time_travel(opts)))

    @storage_errors
    def reader(self, schema: Any) -> DataSourceReader:
        from iceberg_privacy.spark.reader import IcebergPrivacyReader

        return IcebergPrivacyReader(self._opts(READ_OPTIONS), schema)

    @storage_errors
    def writer(self, schema: Any, overwrite: bool) -> DataSourceWriter:
        from iceberg_privacy.spark.writer import IcebergPrivacyWriter

        return IcebergPrivacyWriter(self._opts(WRITE_OPTIONS), schema, overwrite)

    @storage_errors
    def streamWriter(self, schema: Any, overwrite: bool) -> DataSourceStreamWriter:
        from iceberg_privacy.spark.writer import IcebergPrivacyStreamWriter

        return IcebergPrivacyStreamWriter(self._opts(WRITE_OPTIONS), schema, overwrite)
