"""Read pyiceberg's configuration file up front, so that a malformed one is one clear error.

Why: pyiceberg reads ``.pyiceberg.yaml`` while it is being imported (``pyiceberg.manifest`` sizes its cache
from it). A file that is not a YAML mapping, or uses flow style (``{...}``, ``[...]``, which strictyaml
refuses), made ``import iceberg_privacy`` - and so every CLI command - end in an ``AttributeError`` or a
strictyaml traceback deep inside pyiceberg that does not name the file. Loading it once here, before
pyiceberg's own import, turns that into a :class:`~iceberg_privacy.errors.ConfigurationError` naming the
file and what to do.
"""

from __future__ import annotations

import os
from typing import Any

from iceberg_privacy.errors import ConfigurationError

_FILE = ".pyiceberg.yaml"


def config_file() -> str | None:
    """The file pyiceberg reads: the first ``.pyiceberg.yaml`` in $PYICEBERG_HOME, ``~``, the working directory."""
    for directory in (os.environ.get("PYICEBERG_HOME"), os.path.expanduser("~"), os.getcwd()):
        if directory and os.path.isfile(path := os.path.join(directory, _FILE)):
            return path
    return None


def check() -> Any:
    """pyiceberg's configuration, read afresh (a ``pyiceberg.utils.config.Config``); raise
    :class:`ConfigurationError` when it cannot be read."""
    try:
        from pyiceberg.utils.config import Config

        return Config()
    except Exception as exc:  # noqa: BLE001 - strictyaml's and pyiceberg's errors alike
        path = config_file() or _FILE
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigurationError(
            f"pyiceberg's configuration file {path} cannot be read ({type(exc).__name__}: {first}). It must be a "
            "YAML mapping in block style, e.g. 'catalog:' then '  lake:' then '    uri: ...' (no {...} or [...]); "
            "fix it, or set PYICEBERG_HOME to a directory with a valid one"
        ) from exc
