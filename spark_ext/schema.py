"""Deprecated alias of :mod:`iceberg_privacy.spark.schema` (the same module object)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("iceberg_privacy.spark.schema")
