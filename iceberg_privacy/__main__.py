"""``python -m iceberg_privacy`` is the ``iceberg-privacy`` command (for environments without the console script
on PATH, e.g. a virtualenv that is not activated)."""

import sys

from iceberg_privacy.cli.main import main

sys.exit(main())
