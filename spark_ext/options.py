"""Deprecated alias of :mod:`iceberg_privacy.spark.options` (the same module object)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("iceberg_privacy.spark.options")
