"""Errors of the Spark data source, in the core's :class:`IcebergPrivacyError` hierarchy."""

from __future__ import annotations

from iceberg_privacy.errors import IcebergPrivacyError


class TableNotFoundError(IcebergPrivacyError, LookupError):
    """A read named a table that does not exist in the configured catalog."""


class UnsupportedSparkTypeError(IcebergPrivacyError, TypeError):
    """A column type that has no faithful Spark (or Iceberg) counterpart."""
