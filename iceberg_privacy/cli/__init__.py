"""The ``iceberg-privacy`` command line: one parser, one set of catalog options, one error handler.

``main`` is the console-script entry point; ``python -m iceberg_privacy.cli`` runs it too.
"""

from iceberg_privacy.cli.main import main

__all__ = ["main"]
