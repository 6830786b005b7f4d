"""Deprecated alias of :mod:`iceberg_privacy.spark` (kept for one release).

``import spark_ext`` and ``from spark_ext.<module> import ...`` keep working and warn; import
``iceberg_privacy.spark`` instead. The Spark format name ``iceberg-privacy`` is unchanged.
"""

import warnings

from iceberg_privacy.spark import *  # noqa: F403
from iceberg_privacy.spark import __all__ as __all__  # noqa: F401

warnings.warn("the spark_ext package is now iceberg_privacy.spark; import that instead (spark_ext is removed "
              "in the next release)", DeprecationWarning, stacklevel=2)
