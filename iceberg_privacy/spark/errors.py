"""Errors of the Spark data source (defined in :mod:`iceberg_privacy.errors`, re-exported here)."""

from iceberg_privacy.errors import TableNotFoundError, UnsupportedSparkTypeError

__all__ = ["TableNotFoundError", "UnsupportedSparkTypeError"]
